"""Ranking metrics: one definition used by evaluation, baselines and benchmarks.

Two forms of the same definitions:
- list form (`ndcg_at_k`, `hit_rate_at_k`, ...) for any ranked list with graded relevance, worked by
  hand in the tests;
- rank form (`metrics_from_ranks`) for the full-ranking protocol with one target per case, where the
  0-based rank of the target among all candidates is all that is needed. Ties count against the
  model: the rank counts every other item scoring at least the target's score.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

METRIC_NAMES: tuple[str, ...] = ("hr", "ndcg", "recall", "mrr")


def dcg_at_k(relevances: Sequence[float], k: int) -> float:
    """Discounted cumulative gain with the linear gain rel / log2(position + 1), positions from 1."""
    rel = np.asarray(relevances, dtype=np.float64)[:k]
    return float(np.sum(rel / np.log2(np.arange(2, rel.size + 2))))


def ndcg_at_k(
    ranked_relevances: Sequence[float], k: int, all_relevances: Sequence[float] | None = None
) -> float:
    """DCG@k of the ranking divided by the DCG@k of the ideal ordering of `all_relevances`.

    `all_relevances` are the relevances of every relevant item (ranked or not); by default those
    of the ranked list itself.
    """
    ideal_source = ranked_relevances if all_relevances is None else all_relevances
    ideal = dcg_at_k(sorted(ideal_source, reverse=True), k)
    return 0.0 if ideal == 0 else dcg_at_k(ranked_relevances, k) / ideal


def hit_rate_at_k(ranked_relevances: Sequence[float], k: int) -> float:
    """1 if any relevant item is in the top k."""
    return float(any(r > 0 for r in list(ranked_relevances)[:k]))


def recall_at_k(ranked_relevances: Sequence[float], k: int, n_relevant: int) -> float:
    """Share of the relevant items found in the top k."""
    if n_relevant == 0:
        return 0.0
    return sum(1 for r in list(ranked_relevances)[:k] if r > 0) / n_relevant


def mrr_at_k(ranked_relevances: Sequence[float], k: int) -> float:
    """Reciprocal position of the first relevant item in the top k (0 when none)."""
    for position, r in enumerate(list(ranked_relevances)[:k], start=1):
        if r > 0:
            return 1.0 / position
    return 0.0


def per_case_from_ranks(ranks: np.ndarray, ks: Sequence[int]) -> dict[str, np.ndarray]:
    """Per-case metric values for single-target cases, from each target's 0-based rank."""
    ranks = np.asarray(ranks, dtype=np.float64)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        hit = ranks < k
        out[f"hr@{k}"] = hit.astype(np.float64)
        out[f"ndcg@{k}"] = np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0)
        out[f"recall@{k}"] = hit.astype(np.float64)  # one relevant item per case
        out[f"mrr@{k}"] = np.where(hit, 1.0 / (ranks + 1.0), 0.0)
    return out


def metrics_from_ranks(ranks: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    """Mean of `per_case_from_ranks` over the cases."""
    return {
        name: float(values.mean()) if values.size else 0.0
        for name, values in per_case_from_ranks(ranks, ks).items()
    }


def intra_list_diversity(top_categories: np.ndarray) -> np.ndarray:
    """Per list: share of item pairs in different categories ([B, K] category ids -> [B])."""
    k = top_categories.shape[1]
    if k < 2:
        return np.zeros(top_categories.shape[0])
    same = (top_categories[:, :, None] == top_categories[:, None, :]).sum(axis=(1, 2)) - k
    return 1.0 - same / (k * (k - 1))
