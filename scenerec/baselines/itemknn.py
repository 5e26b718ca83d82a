"""ItemKNN with cosine similarity, shrinkage and the top-k neighbours kept per item.

Similarities are computed one block of items at a time, so a 50,000-item catalogue never needs the
dense items x items matrix in memory.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from scenerec.baselines.base import Baseline, user_item_matrix
from scenerec.data.split import EvalCases

_BLOCK = 1024


class ItemKNN(Baseline):
    name = "itemknn"

    def fit(self, rows: pd.DataFrame, neighbors: int = 100, shrink: float = 10.0, **params: Any) -> ItemKNN:
        x = user_item_matrix(rows, self.n_items).tocsc()
        norms = np.sqrt(np.asarray(x.sum(axis=0)).ravel())
        xt = x.T.tocsr()
        k = min(neighbors, self.n_items - 1)
        blocks = []
        for lo in range(0, self.n_items, _BLOCK):
            hi = min(lo + _BLOCK, self.n_items)
            co = (xt @ x[:, lo:hi]).toarray()  # [N, block] co-occurrence counts
            sim = co / (norms[:, None] * norms[None, lo:hi] + shrink + 1e-12)
            sim[np.arange(lo, hi), np.arange(hi - lo)] = 0.0  # an item is not its own neighbour
            keep = np.argpartition(-sim, k - 1, axis=0)[:k]  # top-k neighbours of each column item
            cols = np.broadcast_to(np.arange(lo, hi), keep.shape)
            values = np.take_along_axis(sim, keep, axis=0)
            nonzero = values > 0
            blocks.append(
                sp.csr_matrix(
                    (values[nonzero], (keep[nonzero], cols[nonzero])), shape=(self.n_items, self.n_items)
                )
            )
        self.similarity = sum(blocks[1:], blocks[0]).tocsr().astype(np.float32)
        return self

    def score(self, cases: EvalCases) -> np.ndarray:
        return (cases.history_matrix(self.n_items) @ self.similarity).toarray()
