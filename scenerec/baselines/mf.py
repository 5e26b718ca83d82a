"""Implicit ALS matrix factorisation (Hu, Koren & Volinsky 2008; tuned as in Rendle et al. 2021).

Each observed (user, item) has confidence 1 + alpha, every other pair confidence 1 with target 0.
Both sides are solved exactly with batched Cholesky solves in torch. At scoring time a user's vector
is folded in from the case's history with the same solve, so users that appear only at test time
(or with a longer history than in training) are scored the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from scenerec.baselines.base import Baseline, user_item_matrix
from scenerec.data.split import EvalCases

_ROWS_PER_SOLVE = 2048


class ImplicitALS(Baseline):
    name = "mf"

    def fit(
        self,
        rows: pd.DataFrame,
        factors: int = 64,
        reg: float = 1.0,
        alpha: float = 10.0,
        iterations: int = 10,
        seed: int = 0,
        **params: Any,
    ) -> ImplicitALS:
        self.reg, self.alpha = reg, alpha
        x = user_item_matrix(rows, self.n_items)
        generator = torch.Generator().manual_seed(seed)
        items = torch.randn(self.n_items, factors, generator=generator) * 0.01
        xt = x.T.tocsr()
        for _ in range(iterations):
            users = _solve_side(items, x, reg, alpha)
            items = _solve_side(users, xt, reg, alpha)
        self.item_factors = items
        return self

    def score(self, cases: EvalCases) -> np.ndarray:
        users = _solve_side(self.item_factors, cases.history_matrix(self.n_items), self.reg, self.alpha)
        return (users @ self.item_factors.T).numpy()


def _solve_side(other: torch.Tensor, interactions: sp.csr_matrix, reg: float, alpha: float) -> torch.Tensor:
    """Least-squares factors of every row of `interactions` given the other side's factors.

    For row r with observed set O:
    (G + alpha * sum_{j in O} y_j y_j^T + reg I) x_r = (1 + alpha) sum_{j in O} y_j, with G = Y^T Y.
    Rows are processed in batches padded to the batch's longest row.
    """
    n_rows, dim = interactions.shape[0], other.shape[1]
    gram = other.T @ other + reg * torch.eye(dim, dtype=other.dtype)
    out = torch.zeros(n_rows, dim, dtype=other.dtype)
    lengths = np.diff(interactions.indptr)
    order = np.argsort(lengths, kind="stable")  # similar lengths together: little padding
    padded_other = torch.cat([other, torch.zeros(1, dim, dtype=other.dtype)])
    budget = _ROWS_PER_SOLVE * 64
    lo = 0
    while lo < n_rows:
        width = max(int(lengths[order[min(lo + _ROWS_PER_SOLVE, n_rows) - 1]]), 1)
        hi = min(n_rows, lo + max(1, min(_ROWS_PER_SOLVE, budget // width)))
        batch = order[lo:hi]
        width = max(int(lengths[batch].max()), 1)
        index = np.full((len(batch), width), other.shape[0], dtype=np.int64)  # pad -> zero row
        row_len = lengths[batch]
        slots = np.repeat(np.arange(len(batch)), row_len)
        within = np.arange(row_len.sum()) - np.repeat(np.cumsum(row_len) - row_len, row_len)
        index[slots, within] = interactions.indices[np.repeat(interactions.indptr[batch], row_len) + within]
        vectors = padded_other[torch.as_tensor(index)]  # [B, L, D]
        lhs = gram + alpha * torch.einsum("bld,ble->bde", vectors, vectors)
        rhs = (1.0 + alpha) * vectors.sum(dim=1)
        factor = torch.linalg.cholesky(lhs)
        out[torch.as_tensor(batch)] = torch.cholesky_solve(rhs[:, :, None], factor)[:, :, 0]
        lo = hi
    return out
