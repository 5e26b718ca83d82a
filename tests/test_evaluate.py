"""Full-ranking evaluation on cases small enough to check by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scenerec.config import EvalConfig
from scenerec.data.split import EvalCases
from scenerec.evaluate import cold_item_slices, evaluate


def cases(targets: list[int], histories: list[list[int]], scenes: list[int] | None = None) -> EvalCases:
    offsets = np.concatenate([[0], np.cumsum([len(h) for h in histories])]).astype(np.int64)
    flat = np.array([i for h in histories for i in h], dtype=np.int64)
    n = len(targets)
    return EvalCases(
        user=np.arange(n),
        target=np.array(targets),
        scene=np.array(scenes or [0] * n),
        device=np.zeros(n, int),
        timestamp=np.zeros(n, int),
        hist_offsets=offsets,
        hist_items=flat,
        hist_scenes=np.zeros(len(flat), int),
        hist_timestamps=np.zeros(len(flat), int),
    )


class FixedScores:
    def __init__(self, scores: np.ndarray) -> None:
        self.scores = scores

    def score(self, batch: EvalCases) -> np.ndarray:
        return self.scores[batch.user]


def test_history_is_masked_and_ties_count_against_the_target() -> None:
    scores = np.array(
        [
            [5.0, 4.0, 3.0, 2.0, 1.0],  # target 2 behind items 0 and 1, but 0 is in history -> rank 1
            [1.0, 1.0, 1.0, 0.0, 0.0],  # target 1 tied with items 0 and 2 -> rank 2 (ties count against)
            [9.0, 0.0, 0.0, 0.0, 0.0],  # target 0 is in history -> a miss whatever its score
        ]
    )
    config = EvalConfig(ks=(1, 2, 3), chunk_size=2)  # chunking must not change anything
    result = evaluate(FixedScores(scores), cases([2, 1, 0], [[0], [], [0]]), 5, config, np.zeros(5, int))
    m = result["metrics"]
    assert result["cases"] == 3
    assert m["hr@1"] == 0.0
    assert m["hr@2"] == pytest.approx(1 / 3)
    assert m["hr@3"] == pytest.approx(2 / 3)
    assert m["ndcg@3"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(4)) / 3)
    assert m["mrr@3"] == pytest.approx((1 / 2 + 1 / 3) / 3)


def test_coverage_diversity_and_slices() -> None:
    scores = np.array([[4.0, 3.0, 2.0, 1.0], [4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0]])
    categories = np.array([0, 0, 1, 1])
    slices = {"scene:a": np.array([True, True, False]), "scene:b": np.array([False, False, True])}
    result = evaluate(
        FixedScores(scores),
        cases([0, 1, 3], [[], [0], []], [0, 0, 1]),
        4,
        EvalConfig(ks=(2,)),
        categories,
        slices,
    )
    # top-2 lists: [0, 1], [1, 2] (0 masked), [3, 2]
    assert result["metrics"]["coverage@2"] == pytest.approx(4 / 4)
    assert result["metrics"]["ild@2"] == pytest.approx((0 + 1 + 0) / 3)
    assert result["slices"]["scene:a"]["coverage@2"] == pytest.approx(3 / 4)
    assert result["slices"]["scene:a"]["hr@2"] == pytest.approx(1.0)
    assert result["slices"]["scene:b"]["ndcg@2"] == pytest.approx(1.0)


def test_bad_scorer_output_is_rejected() -> None:
    with pytest.raises(ValueError, match="shape"):
        evaluate(FixedScores(np.zeros((1, 3))), cases([0], [[]]), 4, EvalConfig(), np.zeros(4, int))
    with pytest.raises(ValueError, match="NaN"):
        evaluate(FixedScores(np.full((1, 4), np.nan)), cases([0], [[]]), 4, EvalConfig(), np.zeros(4, int))


def test_cold_items_are_ranked_against_everything_and_among_the_new_items() -> None:
    # items 3 and 4 are new; the target (4) is behind three warm items but first among the new ones
    scores = np.array([[5.0, 4.0, 3.0, 1.0, 2.0], [5.0, 4.0, 3.0, 2.0, 1.0]])
    result = cold_item_slices(
        FixedScores(scores),
        cases([4, 4], [[], [0]]),
        np.array([3, 4]),
        5,
        EvalConfig(ks=(1, 4)),
        np.zeros(5, int),
    )
    whole, new = result["cold_items"], result["cold_items:among_new"]
    assert whole["mrr@4"] == pytest.approx(1 / 4)  # rank 3 in both cases (item 0 masked in case 1)
    assert new["hr@1"] == pytest.approx(1 / 2)  # first among the new items in case 0, second in case 1
    assert new["mrr@4"] == pytest.approx((1 + 1 / 2) / 2)


def test_chunks_shrink_with_the_catalogue_and_do_not_change_the_metrics(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import scenerec.evaluate as evaluation

    config = EvalConfig(ks=(1, 2), chunk_size=1024)
    assert evaluation.chunk_rows(config, 2_000) == 1024
    assert evaluation.chunk_rows(config, 1_000_000) == 67  # 256 MB of scores per chunk
    scores = np.random.default_rng(0).normal(size=(9, 6))
    test = cases([1, 2, 3, 4, 5, 0, 1, 2, 3], [[0]] * 9)
    whole = evaluate(FixedScores(scores), test, 6, config, np.zeros(6, int))
    monkeypatch.setattr(evaluation, "CHUNK_SCORES", 12)  # two cases per chunk here
    assert evaluation.chunk_rows(config, 6) == 2
    assert evaluate(FixedScores(scores), test, 6, config, np.zeros(6, int)) == whole
