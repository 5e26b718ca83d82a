"""Full-ranking evaluation: every case is ranked against the whole catalogue, never a sample.

Scores come from any `Scorer` (a baseline, the PyTorch model, the exported ONNX graphs) one chunk
of cases at a time, so 20,000 users x 50,000 items fit in a few hundred MB. Items in a case's
history are masked; ties count against the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from scenerec.config import EvalConfig
from scenerec.data.dataset import Vocab
from scenerec.data.split import EvalCases
from scenerec.metrics import intra_list_diversity, per_case_from_ranks

CHUNK_SCORES = 1 << 26  # scores held per chunk at most: 256 MB of float32 (10^6 items: 67 cases)


def chunk_rows(config: EvalConfig, n_items: int) -> int:
    """Cases scored together: `eval.chunk_size`, fewer where the catalogue is large enough that
    chunk_size x N scores would not fit (1024 x 10^6 items x 4 bytes is 4 GB)."""
    return max(1, min(config.chunk_size, CHUNK_SCORES // max(n_items, 1)))


class Scorer(Protocol):
    """Anything that scores every catalogue item for a chunk of cases: [B] cases -> [B, N] scores."""

    def score(self, cases: EvalCases) -> np.ndarray | torch.Tensor: ...


def scene_slices(cases: EvalCases, vocab: Vocab) -> dict[str, np.ndarray]:
    """Boolean case masks `scene:<id>` for every scene present among the cases."""
    return {f"scene:{vocab.scenes[s]}": cases.scene == s for s in np.unique(cases.scene)}


def evaluate(
    scorer: Scorer,
    cases: EvalCases,
    n_items: int,
    config: EvalConfig,
    item_categories: np.ndarray,
    slices: Mapping[str, np.ndarray] | None = None,
    desc: str = "evaluating",
    candidates: np.ndarray | None = None,
) -> dict[str, Any]:
    """Metrics overall and per slice: `{"metrics": {...}, "slices": {name: {...}}, "cases": n}`.

    Each metrics dict holds hr/ndcg/recall/mrr@K, `coverage@K` (share of the catalogue that appears
    in any top-K list) and `ild@K` (intra-list diversity: share of top-K pairs in different
    categories). `candidates` [N] (bool) restricts the ranking to those items (the others are masked
    like history), for protocols that rank within a shelf such as the new items.
    """
    ks = tuple(config.ks)
    k_max = min(max(ks), n_items)
    ranks = np.empty(len(cases), dtype=np.int64)
    top = np.empty((len(cases), k_max), dtype=np.int64)
    categories = torch.as_tensor(item_categories)
    excluded = None if candidates is None else ~torch.as_tensor(candidates, dtype=torch.bool)
    rows = chunk_rows(config, n_items)
    for lo in tqdm(range(0, len(cases), rows), desc=desc, unit="chunk", disable=None, leave=False):
        hi = min(lo + rows, len(cases))
        chunk = cases.select(lo, hi)
        scores = torch.as_tensor(scorer.score(chunk), dtype=torch.float32)
        if scores.shape != (hi - lo, n_items):
            raise ValueError(f"scorer returned shape {tuple(scores.shape)}, expected {(hi - lo, n_items)}")
        if torch.isnan(scores).any():
            raise ValueError("scorer returned NaN scores")
        if excluded is not None:
            scores = scores.masked_fill(excluded[None, :], float("-inf"))
        ranks[lo:hi] = _mask_and_rank(scores, chunk)
        top[lo:hi] = torch.topk(scores, k_max, dim=1).indices.numpy()
    top_categories = categories[torch.as_tensor(top)].numpy() if len(cases) else top
    masks = {"all": np.ones(len(cases), dtype=bool), **(slices or {})}
    results = {
        name: _summarise(ranks[m], top[m], top_categories[m], ks, n_items) for name, m in masks.items()
    }
    return {"metrics": results.pop("all"), "slices": results, "cases": len(cases)}


def _mask_and_rank(scores: torch.Tensor, chunk: EvalCases) -> np.ndarray:
    """Mask history items in place, then the 0-based rank of each target, ties counted against it."""
    lengths = np.diff(chunk.hist_offsets)
    rows = torch.as_tensor(np.repeat(np.arange(len(chunk)), lengths))
    scores[rows, torch.as_tensor(chunk.hist_items)] = float("-inf")
    target = torch.as_tensor(chunk.target)
    target_score = scores.gather(1, target[:, None])
    at_least = (scores >= target_score).sum(dim=1) - 1
    rank = at_least.numpy().astype(np.int64)
    rank[torch.isinf(target_score[:, 0]).numpy()] = scores.shape[1]  # a masked target is a miss
    return rank


def _summarise(
    ranks: np.ndarray, top: np.ndarray, top_categories: np.ndarray, ks: tuple[int, ...], n_items: int
) -> dict[str, float]:
    out = {name: float(v.mean()) if v.size else 0.0 for name, v in per_case_from_ranks(ranks, ks).items()}
    for k in ks:
        out[f"coverage@{k}"] = float(np.unique(top[:, :k]).size / n_items) if len(top) else 0.0
        out[f"ild@{k}"] = float(intra_list_diversity(top_categories[:, :k]).mean()) if len(top) else 0.0
    return out


COLD_SLICE, COLD_NEW_SLICE = "cold_items", "cold_items:among_new"


def cold_item_slices(
    scorer: Scorer,
    cases: EvalCases,
    cold_items: np.ndarray,
    n_items: int,
    config: EvalConfig,
    item_categories: np.ndarray,
    desc: str = "cold test",
) -> dict[str, dict[str, float]]:
    """The cold-item protocol's two rankings of the same cases.

    `cold_items`: against the whole catalogue (the data contract's protocol: a new item competes with
    every warm one, whose popularity the model knows and the new item's it cannot).
    `cold_items:among_new`: among the held-out items only (the item cold-start protocol of DropoutNet,
    Heater and CLCRec: a "new arrivals" shelf), which isolates how well text places a new item.
    """
    new = np.zeros(n_items, dtype=bool)
    new[cold_items] = True
    whole = evaluate(scorer, cases, n_items, config, item_categories, desc=desc)["metrics"]
    among_new = evaluate(
        scorer, cases, n_items, config, item_categories, desc=f"{desc} (new items)", candidates=new
    )["metrics"]
    return {COLD_SLICE: whole, COLD_NEW_SLICE: among_new}
