"""Popularity, globally and within the request's scene."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from scenerec.baselines.base import Baseline, item_counts
from scenerec.data.split import EvalCases


class Popularity(Baseline):
    """Rank by how often each item was interacted with in training."""

    name = "popularity"

    def fit(self, rows: pd.DataFrame, **params: Any) -> Popularity:
        self.counts = item_counts(rows, self.n_items)
        return self

    def score(self, cases: EvalCases) -> np.ndarray:
        return np.broadcast_to(self.counts.astype(np.float32), (len(cases), self.n_items)).copy()


class ScenePopularity(Baseline):
    """Popularity within the request's scene, backed off to global popularity with `prior` pseudo-counts.

    p(i | s) = (c_si + prior * p(i)) / (c_s + prior): a scene seen rarely in training falls back to
    global popularity instead of ranking on a handful of counts.
    """

    name = "scene_popularity"

    def fit(self, rows: pd.DataFrame, prior: float = 20.0, **params: Any) -> ScenePopularity:
        counts = item_counts(rows, self.n_items, self.n_scenes)
        global_share = counts.sum(axis=0) / max(counts.sum(), 1.0)
        scene_totals = counts.sum(axis=1, keepdims=True) + prior
        smoothed = (counts + prior * global_share) / np.maximum(scene_totals, 1e-12)
        # a scene never seen in training (and no prior) ranks by global popularity
        self.table = np.where(scene_totals > 0, smoothed, global_share[None, :]).astype(np.float32)
        return self

    def score(self, cases: EvalCases) -> np.ndarray:
        return self.table[cases.scene]
