"""Maximal marginal relevance (scenerec/diversity.py) on cases worked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from scenerec.diversity import diversify, mmr, unit_rows
from scenerec.metrics import intra_list_diversity


def test_unit_rows_scales_to_length_one_and_keeps_zero_rows() -> None:
    rows = unit_rows(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(rows, [[0.6, 0.8], [0.0, 0.0]])


def test_diversity_zero_is_the_relevance_order_exactly() -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(4, 30))
    scores[1, 3] = scores[1, 7]  # a tie keeps the pool's order (stable)
    valid = rng.random((4, 30)) > 0.2
    vectors = unit_rows(rng.normal(size=(4, 30, 8)))
    picks = diversify(scores, valid, rng.integers(0, 3, (4, 30)), vectors, 10, np.zeros(4))
    expected = np.argsort(-np.where(valid, scores, -np.inf), axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(picks, expected)


def test_full_diversity_takes_a_new_category_before_a_repeat() -> None:
    """Scores 3, 2, 1 in categories A, A, B with no vector similarity: d = 1 answers the best item,
    then B's, then the second A; d = 0 answers by score."""
    scores = np.array([[3.0, 2.0, 1.0]])
    categories = np.array([[0, 0, 1]])
    vectors = np.zeros((1, 3, 2), np.float32)
    valid = np.ones((1, 3), bool)
    assert diversify(scores, valid, categories, vectors, 3, np.array([1.0])).tolist() == [[0, 2, 1]]
    assert diversify(scores, valid, categories, vectors, 3, np.array([0.0])).tolist() == [[0, 1, 2]]


def test_the_knob_trades_relevance_for_spread_at_the_worked_threshold() -> None:
    """After item 0 (A) is picked: item 1 (A) gains (1-d)*0.5 - d*w, item 2 (B) gains 0 (relevance
    scaled to [0, 1]: 1, 0.5, 0; w = 0.5, no vector similarity). Item 1 wins while 0.5 - 0.5d > 0.5d,
    i.e. d < 0.5."""
    scores = np.array([[3.0, 2.0, 1.0]] * 2)
    categories = np.array([[0, 0, 1]] * 2)
    vectors = np.zeros((2, 3, 2), np.float32)
    picks = mmr(scores, np.ones((2, 3), bool), categories, vectors, 2, np.array([0.4, 0.6]))
    assert picks.tolist() == [[0, 1], [0, 2]]


def test_vector_similarity_separates_items_within_one_category() -> None:
    """One category; items 0 and 1 point the same way, item 2 elsewhere: d = 1 skips item 1."""
    scores = np.array([[3.0, 2.0, 1.0]])
    vectors = unit_rows(np.array([[[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]]]))
    picks = mmr(scores, np.ones((1, 3), bool), np.zeros((1, 3), int), vectors, 3, np.array([1.0]))
    assert picks.tolist() == [[0, 2, 1]]


def test_invalid_entries_are_never_picked_and_short_rows_are_padded() -> None:
    scores = np.array([[5.0, 4.0, 3.0, 2.0]])
    valid = np.array([[True, False, True, False]])
    vectors = np.zeros((1, 4, 2), np.float32)
    for d in (0.0, 0.7):
        picks = diversify(scores, valid, np.zeros((1, 4), int), vectors, 3, np.array([d]))
        assert picks.tolist() == [[0, 2, -1]]


def test_more_diversity_never_lowers_intra_list_diversity_on_random_pools() -> None:
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(200, 50))
    categories = rng.integers(0, 6, (200, 50))
    vectors = unit_rows(rng.normal(size=(200, 50, 8)))
    valid = np.ones((200, 50), bool)
    ild = []
    for d in (0.0, 0.5, 1.0):
        picks = diversify(scores, valid, categories, vectors, 10, np.full(200, d))
        ild.append(intra_list_diversity(np.take_along_axis(categories, picks, 1)).mean())
    assert ild[0] < ild[1] <= ild[2]


@pytest.mark.parametrize("d", [-0.1, 1.5, float("nan")])
def test_a_knob_outside_zero_one_is_refused(d: float) -> None:
    with pytest.raises(ValueError, match="diversity must be in"):
        mmr(
            np.zeros((1, 2)),
            np.ones((1, 2), bool),
            np.zeros((1, 2), int),
            np.zeros((1, 2, 1)),
            1,
            np.array([d]),
        )
