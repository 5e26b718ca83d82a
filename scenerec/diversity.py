"""Diversity at ranking time: maximal marginal relevance (MMR) over a relevance-ranked pool.

One definition for the predictor (`serving/runtime.py`) and the offline trade-off curve
(`scenerec/diversity_curve.py`), in numpy only: the serving process never imports torch.

Each of the k answers is picked greedily from the pool (Carbonell & Goldstein, 1998):

    pick = argmax_j  (1 - d) * rel_j  -  d * max_{s in picked} sim(j, s)

with rel the pool's scores scaled to [0, 1] (min-max per list, so d means the same for any score
scale) and sim(i, j) = w * [same category] + (1 - w) * max(0, cos(v_i, v_j)) over the items'
retrieval vectors: the catalogue's own coarse label, which intra-list diversity counts, plus the
model's own view of which items are alike, which separates items within a category and works when
a catalogue has no categories. d = 0 returns the relevance order exactly (no arithmetic at all);
d = 1 spreads the list as far as it can, each pick still the most relevant among equally new ones.

MMR rather than a DPP: the same greedy cost (k steps over a pool of C items: O(k * C * D)), no
kernel to keep positive definite, and one knob whose ends mean "relevance only" and "spread only".
"""

from __future__ import annotations

import numpy as np


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (a zero row stays zero), as float32: cosine = dot product."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def similarity_vectors(retrieval_vectors: np.ndarray) -> np.ndarray:
    """What MMR compares of items: their retrieval vectors without the last column (the item bias,
    a popularity level rather than a direction), at length 1."""
    return unit_rows(np.asarray(retrieval_vectors)[..., :-1])


def mmr(
    scores: np.ndarray,
    valid: np.ndarray,
    categories: np.ndarray,
    vectors: np.ndarray,
    k: int,
    diversity: np.ndarray,
    category_weight: float = 0.5,
) -> np.ndarray:
    """Positions into each row's pool of the k picks, in pick order; -1 where a row has fewer.

    Args:
        scores: [B, C] relevance of each pool item.
        valid: [B, C] which pool entries are real items (padding, filtered items: False).
        categories: [B, C] integer category of each pool item.
        vectors: [B, C, D] unit-length item vectors (`unit_rows`).
        k: answers per row.
        diversity: [B] the knob d in [0, 1] per row.
        category_weight: w, the share of the similarity that is the category match.
    """
    scores = np.asarray(scores, dtype=np.float64)
    b, c = scores.shape
    diversity = np.asarray(diversity, dtype=np.float64).reshape(b)
    if not ((diversity >= 0) & (diversity <= 1)).all():
        raise ValueError(f"diversity must be in [0, 1], got {diversity.tolist()}")
    if not 0 <= category_weight <= 1:
        raise ValueError(f"category_weight must be in [0, 1], got {category_weight}")
    valid = np.asarray(valid, dtype=bool) & np.isfinite(scores)
    k = min(k, c)
    picks = np.full((b, k), -1, dtype=np.int64)
    if b == 0 or k == 0:
        return picks
    relevance = _scaled(scores, valid)
    left = valid.copy()
    closest = np.zeros((b, c))  # max similarity to anything picked so far
    rows = np.arange(b)
    d = diversity[:, None]
    for step in range(k):
        gain = np.where(left, (1 - d) * relevance - d * closest, -np.inf)
        # ties (d = 1 before anything is alike, equal scores) go to the better-ranked item: the pool
        # is ordered by relevance, and argmax takes the first maximum
        pick = np.argmax(gain, axis=1)
        has = left[rows, pick]
        picks[has, step] = pick[has]
        left[rows, pick] = False
        if step + 1 < k:
            same = categories == categories[rows, pick][:, None]
            cosine = np.einsum("bcd,bd->bc", vectors, vectors[rows, pick])
            similarity = category_weight * same + (1 - category_weight) * np.maximum(cosine, 0.0)
            closest = np.maximum(closest, np.where(has[:, None], similarity, 0.0))
    return picks


def diversify(
    scores: np.ndarray,
    valid: np.ndarray,
    categories: np.ndarray,
    vectors: np.ndarray,
    k: int,
    diversity: np.ndarray,
    category_weight: float = 0.5,
) -> np.ndarray:
    """The k picks of each row as positions into its pool: by score where d = 0, by MMR elsewhere.

    The pool may be in any order; it is sorted by score first (stable), so d = 0 is exactly the
    relevance ranking and MMR's ties go to the more relevant item.
    """
    scores = np.asarray(scores, dtype=np.float64)
    masked = np.where(np.asarray(valid, dtype=bool), scores, -np.inf)
    order = np.argsort(-masked, axis=1, kind="stable")
    ranked = np.take_along_axis(masked, order, 1)
    diversity = np.asarray(diversity, dtype=np.float64).reshape(len(scores))
    k = min(k, scores.shape[1])
    picks = np.where(np.isfinite(ranked[:, :k]), np.broadcast_to(np.arange(k), (len(scores), k)), -1)
    spread = np.flatnonzero(diversity > 0)
    if len(spread):
        sub = order[spread]
        picked = mmr(
            ranked[spread],
            np.isfinite(ranked[spread]),
            np.take_along_axis(categories[spread], sub, 1),
            np.take_along_axis(vectors[spread], sub[..., None], 1),
            k,
            diversity[spread],
            category_weight,
        )
        picks[spread] = picked
    out = np.full_like(picks, -1)
    found = picks >= 0
    out[found] = np.take_along_axis(order, np.where(found, picks, 0), 1)[found]
    return out


def _scaled(scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Each row's valid scores mapped to [0, 1] (all equal: all 1); invalid entries 0."""
    high = np.where(valid, scores, -np.inf).max(axis=1, keepdims=True)
    low = np.where(valid, scores, np.inf).min(axis=1, keepdims=True)
    span = high - low
    with np.errstate(invalid="ignore", divide="ignore"):
        scaled = np.where(span > 0, (scores - low) / np.where(span > 0, span, 1.0), 1.0)
    return np.where(valid, scaled, 0.0)
