"""Retrieval through the model's ANN index (scenerec/ann.py), for catalogues too large for one exact
pass: the same scores as `retrieval.onnx`, over the items the index and the history point at.

The graph's score is query . v_i + w_ii * sum_{j in history} B[j, i]. The index finds the best
items by the dot part; the item-item part is non-zero only on the history's B rows, so those
columns are added to the index's answer and the union is scored exactly, with the graph's own
weights (read from `retrieval.onnx`'s initializers: one source for both paths). An item outside
both sets is missed only if the index misses it by its dot product: the approximation is the
index's recall, nothing else. Excluded items (history, hidden) are dropped after the search,
which is asked for `ann_overfetch` x depth plus the excluded count.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from scenerec.ann import read_index
from scenerec.artifact import ArtifactError

log = logging.getLogger(__name__)


class AnnRetrieval:
    """Top items per query from the index plus the history's item-item columns, scored exactly."""

    def __init__(
        self, index: Any, vectors: np.ndarray, columns: np.ndarray, weights: np.ndarray, overfetch: float
    ) -> None:
        self.index, self.vectors, self.columns, self.weights = index, vectors, columns, weights
        self.n_items = len(vectors)
        self.overfetch = overfetch

    @classmethod
    def load(cls, model_dir: Path, manifest: dict[str, Any], overfetch: float) -> AnnRetrieval | None:
        """The model directory's index, or None when it has none (the exact graph serves)."""
        entry = manifest.get("ann")
        if not entry:
            return None
        import onnx
        from onnx import numpy_helper

        graph = onnx.load(str(model_dir / manifest["graphs"]["retrieval"]["file"])).graph
        tables = {t.name: t for t in graph.initializer if t.name in ("items_t", "ii_columns", "ii_weights")}
        if len(tables) != 3:
            raise ArtifactError(
                f"{model_dir}/retrieval.onnx: no item table to score the ANN index's items with"
            )
        n = int(manifest["dims"]["items"])
        vectors = np.ascontiguousarray(numpy_helper.to_array(tables["items_t"]).T[:n], dtype=np.float32)
        columns = numpy_helper.to_array(tables["ii_columns"]).astype(np.int64)
        weights = numpy_helper.to_array(tables["ii_weights"]).astype(np.float32)
        index = read_index(model_dir, entry, n, vectors.shape[1])
        log.info("ANN retrieval: %s over %d items (efSearch %d)", entry.get("kind"), n, index.hnsw.efSearch)
        return cls(index, vectors, columns, weights, overfetch)

    def top(
        self, query: np.ndarray, weight: np.ndarray, history: np.ndarray, exclude: np.ndarray, depth: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """[B, depth] item indices and scores, best first (-inf: nothing there), like the graph's
        `top_items` / `top_scores` for the same inputs (history and exclude padded with N)."""
        n = self.n_items
        excluded = [row[row < n] for row in exclude]
        ask = min(n, int(depth * self.overfetch) + max(len(e) for e in excluded))
        _, found = self.index.search(np.ascontiguousarray(query, dtype=np.float32), ask)
        top = np.zeros((len(query), depth), dtype=np.int64)
        scores = np.full((len(query), depth), -np.inf, dtype=np.float32)
        for row in range(len(query)):
            hist = history[row][history[row] < n]
            near, near_weight = self.columns[hist].ravel(), self.weights[hist].ravel()
            keep = near < n
            near, near_weight = near[keep], near_weight[keep] * weight[row]
            candidates = np.union1d(found[row][found[row] >= 0], near)
            score = self.vectors[candidates] @ query[row]
            np.add.at(score, np.searchsorted(candidates, near), near_weight)
            score[np.isin(candidates, excluded[row])] = -np.inf
            best = np.argsort(-score, kind="stable")[:depth]
            top[row, : len(best)], scores[row, : len(best)] = candidates[best], score[best]
        return top, scores
