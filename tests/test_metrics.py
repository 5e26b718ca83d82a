"""Metrics against answers worked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scenerec.metrics import (
    dcg_at_k,
    hit_rate_at_k,
    intra_list_diversity,
    metrics_from_ranks,
    mrr_at_k,
    ndcg_at_k,
    recall_at_k,
)


def test_ndcg_standard_worked_example() -> None:
    # The standard example (Wikipedia, "Discounted cumulative gain"): six ranked documents with
    # relevances 3,2,3,0,1,2 and two more relevant documents (3 and 2) that were not retrieved.
    ranked = [3, 2, 3, 0, 1, 2]
    assert dcg_at_k(ranked, 6) == pytest.approx(6.861, abs=1e-3)
    assert dcg_at_k([3, 3, 3, 2, 2, 2], 6) == pytest.approx(8.740, abs=1e-3)
    assert ndcg_at_k(ranked, 6, all_relevances=[*ranked, 3, 2]) == pytest.approx(0.785, abs=1e-3)


def test_list_metrics_by_hand() -> None:
    ranked = [0, 0, 1, 0, 1]  # relevant items at positions 3 and 5, three relevant in all
    assert hit_rate_at_k(ranked, 2) == 0.0
    assert hit_rate_at_k(ranked, 3) == 1.0
    assert recall_at_k(ranked, 5, n_relevant=3) == pytest.approx(2 / 3)
    assert mrr_at_k(ranked, 5) == pytest.approx(1 / 3)
    assert mrr_at_k(ranked, 2) == 0.0
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(ranked, 5, all_relevances=[1, 1, 1]) == pytest.approx((1 / 2 + 1 / math.log2(6)) / ideal)


def test_rank_form_by_hand() -> None:
    # Targets at 0-based ranks 0, 3 and 12: two hits in the top 10.
    m = metrics_from_ranks(np.array([0, 3, 12]), ks=(10, 20))
    assert m["hr@10"] == pytest.approx(2 / 3)
    assert m["recall@10"] == pytest.approx(2 / 3)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(5)) / 3)
    assert m["mrr@10"] == pytest.approx((1 + 1 / 4) / 3)
    assert m["hr@20"] == pytest.approx(1.0)
    assert m["mrr@20"] == pytest.approx((1 + 1 / 4 + 1 / 13) / 3)


@pytest.mark.parametrize("rank", [0, 1, 5, 9, 10, 40])
def test_rank_form_equals_list_form_for_one_target(rank: int) -> None:
    ranked = [0] * 50
    ranked[rank] = 1
    m = metrics_from_ranks(np.array([rank]), ks=(10,))
    assert m["ndcg@10"] == pytest.approx(ndcg_at_k(ranked, 10, all_relevances=[1]))
    assert m["hr@10"] == hit_rate_at_k(ranked, 10)
    assert m["mrr@10"] == pytest.approx(mrr_at_k(ranked, 10))
    assert m["recall@10"] == pytest.approx(recall_at_k(ranked, 10, 1))


def test_intra_list_diversity_by_hand() -> None:
    lists = np.array([[0, 0, 0], [0, 1, 2], [0, 0, 1]])
    # pairs in different categories: none; all three; two of three
    assert intra_list_diversity(lists) == pytest.approx([0.0, 1.0, 2 / 3])
