"""The release gate on hand-worked numbers: margin arithmetic, the best baseline, refusals."""

from __future__ import annotations

from typing import Any

import pytest

from scenerec.gate import GateError, check_gate, judge

MODEL: dict[str, Any] = {"test": {"ndcg@10": 0.30, "hr@10": 0.5}}
BASELINES: dict[str, dict[str, Any]] = {
    "popularity": {"test": {"ndcg@10": 0.10}},
    "ease": {"test": {"ndcg@10": 0.25}},
    "itemknn": {"skipped": "too many items"},
}


def test_the_model_is_compared_with_the_best_evaluated_baseline() -> None:
    result = judge(MODEL, BASELINES, "ndcg@10", 0.1)
    assert result.best_baseline == "ease" and result.baseline == 0.25
    assert result.required == pytest.approx(0.275)  # 0.25 x 1.1
    assert result.passed
    assert result.as_dict()["passed"] is True


@pytest.mark.parametrize(("margin", "passed"), [(0.0, True), (0.2, True), (0.21, False), (-0.5, True)])
def test_the_margin_is_relative_to_the_best_baseline(margin: float, passed: bool) -> None:
    assert judge(MODEL, BASELINES, "ndcg@10", margin).passed is passed  # 0.30 >= 0.25 x (1 + margin)


def test_a_tie_passes_a_zero_margin() -> None:
    assert judge({"test": {"ndcg@10": 0.25}}, BASELINES, "ndcg@10", 0.0).passed


def test_a_losing_model_fails_with_the_numbers_in_one_line() -> None:
    with pytest.raises(GateError) as error:
        check_gate(MODEL, BASELINES, "ndcg@10", 0.5)
    message = str(error.value)
    assert "\n" not in message
    assert "gate FAILED: model test ndcg@10 0.3000 vs required 0.3750" in message
    assert "best baseline ease 0.2500 x (1 + pipeline.gate_margin 0.5)" in message
    assert "not published or deployed" in message


def test_without_an_evaluated_baseline_the_gate_refuses() -> None:
    with pytest.raises(GateError, match="no baseline was evaluated"):
        judge(MODEL, {"ease": {"skipped": "too big"}}, "ndcg@10", 0.0)


def test_a_missing_metric_is_named() -> None:
    with pytest.raises(GateError, match="model's metrics have no test 'mrr@10'"):
        judge(MODEL, BASELINES, "mrr@10", 0.0)
    with pytest.raises(GateError, match="baseline 'ease' has no test 'hr@10'"):
        judge(MODEL, BASELINES, "hr@10", 0.0)
