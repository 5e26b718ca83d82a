"""Model inputs built from evaluation cases or a serving request: one definition for both.

The request context is the target event's: its scene, device and time (hour bucket, weekday),
since that is what a request tells the server. History items are left-padded to L with the pad
index N (an extra, all-zero embedding row).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from scenerec.data.split import EvalCases

if TYPE_CHECKING:  # torch is imported where tensors are made: serving imports this module without it
    import torch

# Graph input names, in order (the ONNX user tower's signature and the manifest's).
INPUT_NAMES: tuple[str, ...] = ("hist_items", "hist_scenes", "scene", "device", "hour", "weekday")


def hour_bucket(seconds: np.ndarray, buckets: int) -> np.ndarray:
    """Hour of day (UTC) folded into `buckets` equal buckets."""
    return ((np.asarray(seconds) // 3600) % 24 * buckets // 24).astype(np.int64)


def weekday(seconds: np.ndarray) -> np.ndarray:
    """Day of the week, Monday = 0 (1970-01-01 was a Thursday)."""
    return ((np.asarray(seconds) // 86400 + 3) % 7).astype(np.int64)


@dataclass
class ModelInputs:
    """[B, L] history and [B] request context, as int64 arrays."""

    hist_items: np.ndarray
    hist_scenes: np.ndarray
    scene: np.ndarray
    device: np.ndarray
    hour: np.ndarray
    weekday: np.ndarray

    def as_tensors(self, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        import torch

        return {name: torch.as_tensor(getattr(self, name), device=device) for name in INPUT_NAMES}

    def as_numpy(self) -> dict[str, np.ndarray]:
        return {name: np.ascontiguousarray(getattr(self, name), dtype=np.int64) for name in INPUT_NAMES}

    def __len__(self) -> int:
        return len(self.scene)


def inputs_from_cases(
    cases: EvalCases, max_history: int, n_items: int, n_scenes: int, hour_buckets: int
) -> ModelInputs:
    """Inputs for evaluation cases (history before each target, the target's context)."""
    items = cases.recent_history(max_history, pad=-1)
    pad = items < 0
    scenes = _recent(cases, cases.hist_scenes, max_history)
    return ModelInputs(
        hist_items=np.where(pad, n_items, items),
        hist_scenes=np.where(pad, n_scenes, scenes),
        scene=cases.scene.astype(np.int64),
        device=cases.device.astype(np.int64),
        hour=hour_bucket(cases.timestamp, hour_buckets),
        weekday=weekday(cases.timestamp),
    )


def _recent(cases: EvalCases, values: np.ndarray, max_len: int) -> np.ndarray:
    """The same left-padded layout as `EvalCases.recent_history`, for another per-history column."""
    swapped = EvalCases(
        cases.user,
        cases.target,
        cases.scene,
        cases.device,
        cases.timestamp,
        cases.hist_offsets,
        values,
        cases.hist_scenes,
        cases.hist_timestamps,
    )
    return swapped.recent_history(max_len, pad=-1)
