"""Scoring with the exported graphs through ONNX Runtime: the numbers of what ships.

`scenerec evaluate` and the end of `scenerec train` both score through this class, so reported
metrics come from the same user tower and retrieval graph the predictor loads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from scenerec.artifact import ArtifactError, check_signature, read_manifest
from scenerec.data.dataset import Dataset
from scenerec.data.split import EvalCases
from scenerec.model.inputs import inputs_from_cases
from scenerec.onnx_runtime import ProviderReport, create_session


class OnnxScorer:
    """`scenerec.evaluate.Scorer` over a model directory's user tower and retrieval graphs."""

    def __init__(self, model_dir: str | Path, device: str = "cpu", threads: int | None = None) -> None:
        self.model_dir = Path(model_dir)
        self.manifest = read_manifest(self.model_dir)
        self.sessions: dict[str, Any] = {}
        self.providers: dict[str, ProviderReport] = {}
        for name in ("user_tower", "retrieval"):
            session, report = create_session(self.model_dir / f"{name}.onnx", device=device, threads=threads)
            check_signature(name, session, self.manifest["graphs"][name])
            self.sessions[name], self.providers[name] = session, report
        dims = self.manifest["dims"]
        self.n_items, self.n_scenes = dims["items"], dims["scenes"]
        self.max_history, self.hour_buckets = dims["max_history"], dims["hour_buckets"]

    def check_dataset(self, dataset: Dataset) -> None:
        """Refuse a dataset whose catalogue or vocabularies differ from the model's id maps."""
        maps = self.id_maps()
        for name, values in (
            ("items", dataset.vocab.items),
            ("scenes", dataset.vocab.scenes),
            ("devices", dataset.vocab.devices),
        ):
            if list(values) != maps[name]:
                raise ArtifactError(
                    f"{self.model_dir}/id_maps/{name}.json: the dataset's {name} differ from the model's "
                    f"({len(values)} vs {len(maps[name])}); evaluate on the data the model was trained on"
                )

    def id_maps(self) -> dict[str, list[str]]:
        return {
            name: json.loads((self.model_dir / "id_maps" / f"{name}.json").read_text())
            for name in ("items", "scenes", "devices")
        }

    def score(self, cases: EvalCases) -> np.ndarray:
        inputs = inputs_from_cases(cases, self.max_history, self.n_items, self.n_scenes, self.hour_buckets)
        feed = inputs.as_numpy()
        query, weight = self.sessions["user_tower"].run(["query", "item_item_weight"], feed)
        nothing = np.full((len(cases), 1), self.n_items, dtype=np.int64)  # the pad column: excludes nothing
        (scores,) = self.sessions["retrieval"].run(
            ["scores"],
            {
                "query": query,
                "item_item_weight": weight,
                "history": feed["hist_items"],
                "exclude": nothing,
                "k": np.array([1], dtype=np.int64),
            },
        )
        return scores
