"""From Feast's string ids to one model's indices: the model's id_maps, never Feast.

Feast holds ids (`i42`, `home`), which keep their meaning across retrains; a model's indices do
not. The predictor maps a user's `history_item_ids` / `history_scenes` to the model's history
inputs with `ModelIds.history`, which lays them out exactly as `scenerec.model.inputs` does for
training and evaluation: the most recent `max_history`, oldest first, left-padded with the pad
indices N (items) and S (scenes).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scenerec.artifact import ArtifactError


@dataclass(frozen=True)
class ModelIds:
    """Id -> index maps of one model directory (catalogue, scenes, devices in index order)."""

    items: dict[str, int]
    scenes: dict[str, int]
    devices: dict[str, int]
    max_history: int

    @classmethod
    def load(cls, model_dir: str | Path, manifest: dict[str, Any]) -> ModelIds:
        directory = Path(model_dir) / "id_maps"
        maps = {}
        for name in ("items", "scenes", "devices"):
            path = directory / f"{name}.json"
            try:
                values = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise ArtifactError(f"{path}: cannot read the id map ({e})") from e
            maps[name] = {str(v): k for k, v in enumerate(values)}
        return cls(maps["items"], maps["scenes"], maps["devices"], int(manifest["dims"]["max_history"]))

    def history(self, item_ids: Sequence[str], scenes: Sequence[str]) -> tuple[np.ndarray, np.ndarray, int]:
        """[L] item and scene indices of a history (ids oldest first), and how many ids were unknown.

        Unknown ids (a catalogue newer than the model) are dropped rather than mapped to padding,
        so the rest of the history keeps its order; the count lets the caller report them.
        """
        if len(item_ids) != len(scenes):
            raise ValueError(f"history has {len(item_ids)} item ids but {len(scenes)} scenes")
        n_items, n_scenes = len(self.items), len(self.scenes)
        pairs = [
            (self.items[i], self.scenes.get(s, self.scenes.get("default", n_scenes)))
            for i, s in zip(item_ids, scenes, strict=True)
            if i in self.items
        ][-self.max_history :]
        unknown = len(item_ids) - sum(1 for i in item_ids if i in self.items)
        hist_items = np.full(self.max_history, n_items, dtype=np.int64)
        hist_scenes = np.full(self.max_history, n_scenes, dtype=np.int64)
        if pairs:
            hist_items[-len(pairs) :] = [p[0] for p in pairs]
            hist_scenes[-len(pairs) :] = [p[1] for p in pairs]
        return hist_items, hist_scenes, unknown
