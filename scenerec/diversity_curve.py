"""The relevance / diversity trade-off of the predictor's `diversity` knob, measured offline.

For each knob value in `ranking.diversity_levels`, every test case's list is what the predictor
would answer: the catalogue scored in full (history masked), the best `ranking.diversity_pool`
items re-ranked by MMR (`scenerec.diversity.diversify`, with the same similarity: categories and
the retrieval vectors of the model directory), then NDCG/HR@K of the held-out item, intra-list
diversity and catalogue coverage of those lists. Written to metrics.json (`diversity_curve`),
plotted in the report.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tqdm.auto import tqdm

from scenerec.config import Config
from scenerec.data.split import EvalCases
from scenerec.diversity import diversify, similarity_vectors
from scenerec.evaluate import Scorer, chunk_rows
from scenerec.metrics import intra_list_diversity, per_case_from_ranks


def diversity_curve(
    scorer: Scorer,
    cases: EvalCases,
    item_categories: np.ndarray,
    item_vectors: np.ndarray,
    config: Config,
    desc: str = "diversity curve",
) -> list[dict[str, float]]:
    """One row per knob value: `diversity`, and ndcg/hr/ild/coverage at each of `eval.ks`."""
    levels = tuple(config.ranking.diversity_levels)
    ks = tuple(config.eval.ks)
    n_items = len(item_categories)
    k = min(max(ks), n_items)
    pool = min(n_items, max(config.ranking.diversity_pool, k))
    vectors = similarity_vectors(item_vectors)
    categories = np.asarray(item_categories)
    ranks = {d: np.empty(len(cases), dtype=np.int64) for d in levels}
    lists = {d: np.empty((len(cases), k), dtype=np.int64) for d in levels}
    size = chunk_rows(config.eval, n_items)
    for lo in tqdm(range(0, len(cases), size), desc=desc, unit="chunk", disable=None, leave=False):
        hi = min(lo + size, len(cases))
        chunk = cases.select(lo, hi)
        scores = np.array(scorer.score(chunk), dtype=np.float32)  # a copy: masked in place
        rows = np.repeat(np.arange(hi - lo), np.diff(chunk.hist_offsets))
        scores[rows, chunk.hist_items] = -np.inf
        top = np.argpartition(-scores, pool - 1, axis=1)[:, :pool]
        top_scores = np.take_along_axis(scores, top, 1)
        for d in levels:
            picks = diversify(
                top_scores,
                np.isfinite(top_scores),
                categories[top],
                vectors[top],
                k,
                np.full(hi - lo, d),
                config.ranking.diversity_category_weight,
            )
            answered = np.take_along_axis(top, np.maximum(picks, 0), 1)
            answered[picks < 0] = -1
            lists[d][lo:hi] = answered
            found = answered == chunk.target[:, None]
            ranks[d][lo:hi] = np.where(found.any(axis=1), found.argmax(axis=1), n_items)
    curve = []
    for d in levels:
        per_case = per_case_from_ranks(ranks[d], ks)
        row: dict[str, Any] = {"diversity": float(d)}
        for at in ks:
            top_k = lists[d][:, :at]
            real = top_k[top_k >= 0]
            row[f"ndcg@{at}"] = float(per_case[f"ndcg@{at}"].mean()) if len(cases) else 0.0
            row[f"hr@{at}"] = float(per_case[f"hr@{at}"].mean()) if len(cases) else 0.0
            row[f"coverage@{at}"] = float(np.unique(real).size / n_items)
            cats = np.where(top_k >= 0, categories[np.maximum(top_k, 0)], -1 - np.arange(at))
            row[f"ild@{at}"] = float(intra_list_diversity(cats).mean()) if len(cases) else 0.0
        curve.append(row)
    return curve
