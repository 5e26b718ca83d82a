"""Training sequences: each user's training log cut into windows of L inputs and L next-item targets.

Position t of a window reads inputs 0..t and predicts the item at t+1 under that event's own
context (scene, device, hour, weekday): exactly what a request at that moment would tell the server.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from scenerec.data.dataset import DEVICE_IDX, ITEM_IDX, POS, SCENE_IDX, USER_IDX
from scenerec.data.schema import TIMESTAMP
from scenerec.model.inputs import hour_bucket, weekday


@dataclass
class Windows:
    """[W, L] arrays; targets are -1 where there is nothing to predict."""

    hist_items: np.ndarray
    hist_scenes: np.ndarray
    targets: np.ndarray
    scene: np.ndarray
    device: np.ndarray
    hour: np.ndarray
    weekday: np.ndarray
    conversion: np.ndarray  # 1.0 / 0.0 at targets
    user: np.ndarray  # [W] whose log the window is cut from

    def __len__(self) -> int:
        return len(self.targets)

    def select(self, rows: np.ndarray) -> Windows:
        return Windows(**{k: v[rows] for k, v in self.__dict__.items()})


def build_windows(
    rows: pd.DataFrame,
    conversions: np.ndarray,
    max_history: int,
    n_items: int,
    n_scenes: int,
    hour_buckets: int,
) -> Windows:
    """Windows from interaction rows (any subset of `Dataset.interactions`, in any order).

    `conversions` is aligned with `rows`. Long logs give several windows, cut from the end, so every
    event is a target exactly once.
    """
    order = np.argsort(rows[POS].to_numpy(), kind="stable")
    user = rows[USER_IDX].to_numpy()[order]
    cols = {
        "item": rows[ITEM_IDX].to_numpy()[order],
        "scene": rows[SCENE_IDX].to_numpy()[order],
        "device": rows[DEVICE_IDX].to_numpy()[order],
        "conv": conversions[order].astype(np.float32),
        "sec": rows[TIMESTAMP].astype("int64").to_numpy()[order] // 1_000_000_000,
    }
    starts = np.flatnonzero(np.r_[True, user[1:] != user[:-1]])
    ends = np.r_[starts[1:], len(user)]
    spans = []  # (start, end) of each window's events: end - start <= L + 1, overlapping by one event
    for s, e in zip(starts, ends, strict=True):
        stop = e
        while stop - s >= 2:
            begin = max(s, stop - max_history - 1)
            spans.append((begin, stop))
            stop = begin + 1
    span_users = np.array([user[begin] for begin, _ in spans], dtype=np.int64)
    w, length = len(spans), max_history
    out = Windows(
        hist_items=np.full((w, length), n_items, dtype=np.int64),
        hist_scenes=np.full((w, length), n_scenes, dtype=np.int64),
        targets=np.full((w, length), -1, dtype=np.int64),
        scene=np.full((w, length), n_scenes, dtype=np.int64),
        device=np.zeros((w, length), dtype=np.int64),
        hour=np.zeros((w, length), dtype=np.int64),
        weekday=np.zeros((w, length), dtype=np.int64),
        conversion=np.zeros((w, length), dtype=np.float32),
        user=span_users,
    )
    for row, (begin, stop) in enumerate(spans):
        n = stop - begin - 1  # inputs begin..stop-2, targets begin+1..stop-1
        inp, tgt = slice(begin, stop - 1), slice(begin + 1, stop)
        out.hist_items[row, -n:] = cols["item"][inp]
        out.hist_scenes[row, -n:] = cols["scene"][inp]
        out.targets[row, -n:] = cols["item"][tgt]
        out.scene[row, -n:] = cols["scene"][tgt]
        out.device[row, -n:] = cols["device"][tgt]
        out.hour[row, -n:] = hour_bucket(cols["sec"][tgt], hour_buckets)
        out.weekday[row, -n:] = weekday(cols["sec"][tgt])
        out.conversion[row, -n:] = cols["conv"][tgt]
    return out
