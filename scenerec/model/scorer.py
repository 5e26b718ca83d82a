"""Scoring evaluation cases with the PyTorch model (validation during training, ablations)."""

from __future__ import annotations

import numpy as np
import torch

from scenerec.data.split import EvalCases
from scenerec.model.inputs import inputs_from_cases
from scenerec.model.joint import ItemSide, JointModel


class TorchScorer:
    """`scenerec.evaluate.Scorer` over a `JointModel`: retrieval scores of the whole catalogue."""

    def __init__(self, model: JointModel, n_devices: int) -> None:
        self.model, self.n_devices = model, n_devices
        self.device = next(model.parameters()).device
        with torch.inference_mode():
            model.eval()
            self.items: ItemSide = model.item_side()
            self.item_vectors = self.items.vectors()

    def score(self, cases: EvalCases) -> np.ndarray:
        config = self.model.config
        inputs = inputs_from_cases(
            cases, config.max_history, self.model.n_items, self.model.n_scenes, config.hour_buckets
        )
        with torch.inference_mode():
            tensors = inputs.as_tensors(self.device)
            query = self.model.query_side(**tensors, items=self.items)
            return self.model.retrieval_scores(query, self.item_vectors, tensors["hist_items"]).cpu().numpy()
