"""EASE^R (Steck, WWW 2019): closed-form item-item ridge regression with a zero diagonal.

B = I - P diag(1 / diag(P)), P = (X^T X + lambda I)^-1. One dense items x items inverse, so it is
skipped above `BaselineConfig.ease_max_items`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from scenerec.baselines.base import Baseline, user_item_matrix
from scenerec.data.split import EvalCases


class Ease(Baseline):
    name = "ease"

    def fit(self, rows: pd.DataFrame, l2: float = 500.0, **params: Any) -> Ease:
        x = user_item_matrix(rows, self.n_items)
        gram = torch.as_tensor((x.T @ x).toarray(), dtype=torch.float64)
        gram.diagonal().add_(l2)
        p = torch.linalg.inv(gram)
        weights = -p / p.diagonal()[None, :]
        weights.diagonal().zero_()
        self.weights = weights.to(torch.float32).numpy()
        return self

    def score(self, cases: EvalCases) -> np.ndarray:
        return np.asarray(cases.history_matrix(self.n_items) @ self.weights)
