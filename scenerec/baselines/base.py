"""What every baseline shares: fitting from interaction rows, scoring from case histories."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from scenerec.data.dataset import ITEM_IDX, SCENE_IDX, USER_IDX
from scenerec.data.split import EvalCases


class Baseline(ABC):
    """A recommender fitted on interaction rows; `score` follows `scenerec.evaluate.Scorer`."""

    name: str = ""

    def __init__(self, n_items: int, n_scenes: int) -> None:
        self.n_items, self.n_scenes = n_items, n_scenes

    @abstractmethod
    def fit(self, rows: pd.DataFrame, **params: Any) -> Baseline:
        """Learn from interaction rows (the encoded columns of `Dataset.interactions`)."""

    @abstractmethod
    def score(self, cases: EvalCases) -> np.ndarray:
        """[B, N] scores of every item for each case."""


def user_item_matrix(rows: pd.DataFrame, n_items: int) -> sp.csr_matrix:
    """Binary users x items matrix of the rows (users re-indexed densely in order of appearance)."""
    users, user_index = np.unique(rows[USER_IDX].to_numpy(), return_inverse=True)
    data = np.ones(len(rows), dtype=np.float32)
    matrix = sp.csr_matrix((data, (user_index, rows[ITEM_IDX].to_numpy())), shape=(len(users), n_items))
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def item_counts(rows: pd.DataFrame, n_items: int, n_scenes: int | None = None) -> np.ndarray:
    """Interaction counts per item ([N]), or per scene and item ([S, N]) when `n_scenes` is given."""
    if n_scenes is None:
        return np.bincount(rows[ITEM_IDX].to_numpy(), minlength=n_items).astype(np.float64)
    flat = rows[SCENE_IDX].to_numpy() * n_items + rows[ITEM_IDX].to_numpy()
    return np.bincount(flat, minlength=n_scenes * n_items).reshape(n_scenes, n_items).astype(np.float64)
