"""Per-call limits and the lane a call is scored in (serving/admission.py), without a server."""

from __future__ import annotations

import json

import pytest

from serving.admission import LimitExceeded, Limits, admit, cost, lane
from serving.requests import Request
from serving.runtime import PART_NAMES


def calls(n: int, k: int, explain: bool = False, candidates: list[str] | None = None) -> list[Request]:
    return [Request(user_id=f"u{i}", k=k, explain=explain, candidates=candidates) for i in range(n)]


def test_cost_counts_what_the_answer_can_hold() -> None:
    assert cost(calls(4, 10), n_items=500, longest_id=8).items == 40
    assert cost(calls(4, 1000), n_items=500, longest_id=8).items == 2000  # no more than the catalogue
    assert cost(calls(2, 50, candidates=["a", "b", "c"]), n_items=500, longest_id=8).items == 6
    explained = cost(calls(3, 10, explain=True) + calls(1, 10), n_items=500, longest_id=8)
    assert (explained.items, explained.explained_items) == (40, 30)


def test_the_answer_bound_holds_for_the_longest_answer() -> None:
    """The byte bound is an upper bound: an answer of maximal floats and ids stays below it."""
    item_id = "i" * 12
    parts = {name: -1.2345678901234567e-300 for name in PART_NAMES}
    score, p_conversion = -1.2345678901234567e-300, 0.1234567890123456
    item = {"item_id": item_id, "score": score, "parts": parts, "p_conversion": p_conversion}
    fallback = "feature_store_unavailable,unknown_user"
    answer = {"items": [item] * 25, "model_version": "v" * 60, "fallback": fallback}
    written = len(json.dumps({"predictions": [answer] * 4}, separators=(",", ":")))
    assert written <= cost(calls(4, 25, explain=True), n_items=100, longest_id=12).answer_bytes


@pytest.mark.parametrize(
    ("requests", "flag"),
    [
        (calls(256, 1000), "--max_items"),
        (calls(30, 100, explain=True), "--max_explained_items"),
    ],
)
def test_a_call_over_a_limit_is_refused_naming_the_flag(requests: list[Request], flag: str) -> None:
    with pytest.raises(LimitExceeded, match=flag):
        admit(requests, Limits(), n_items=100_000, longest_id=10)


def test_the_answer_byte_limit_uses_the_longest_id() -> None:
    limits = Limits(max_answer_bytes=100_000)
    admit(calls(10, 100), limits, n_items=10_000, longest_id=10)
    with pytest.raises(LimitExceeded, match="--max_answer_bytes"):
        admit(calls(10, 100), limits, n_items=10_000, longest_id=200)


def test_large_calls_get_their_own_lane() -> None:
    limits = Limits(large_items=1000)
    assert lane(cost(calls(10, 100), 10_000, 8), limits) == "small"
    assert lane(cost(calls(11, 100), 10_000, 8), limits) == "large"
    assert lane(cost(calls(4, 100, explain=True), 10_000, 8), limits) == "large"  # explained: x3


def test_bad_limits_name_the_limit() -> None:
    with pytest.raises(ValueError, match="max_large_queued must be >= 1"):
        Limits(max_large_queued=0)
