"""The two evaluation protocols and the evaluation cases they produce.

Headline (leave-last-out, as SASRec and RecBole report): per user, by time, the last interaction is
test, the one before is valid, the rest is train.

Cold items: a seeded fraction of interacted items is removed from training entirely. The cold test
case of a user is their latest interaction with a cold item, ranked against the whole catalogue with
the user's warm interactions before it as history; ID-only models cannot score such items.

An evaluation case is (user, target item, the request's scene and context, history before it); the
history's items are masked from the ranking.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from scenerec.config import DataConfig
from scenerec.data.dataset import DEVICE_IDX, ITEM_IDX, POS, SCENE_IDX, USER_IDX, Dataset
from scenerec.data.io import atomic_directory, write_parquet
from scenerec.data.schema import ITEM_ID, TIMESTAMP

_FROM_END = "_from_end"


@dataclass
class Split:
    """Train / valid / test rows of one protocol (subsets of `Dataset.interactions`)."""

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    # users whose valid and test rows become cases (`eval.max_users`); None = every user. The rows
    # themselves stay whole: refits on train + valid read every user's.
    case_users: np.ndarray | None = None

    def valid_cases(self) -> EvalCases:
        return EvalCases.build(self.train, self._cases_of(self.valid))

    def test_cases(self) -> EvalCases:
        return EvalCases.build(pd.concat([self.train, self.valid]), self._cases_of(self.test))

    def test_targets(self) -> pd.DataFrame:
        """The test rows `test_cases` is built from (in its order)."""
        return self._cases_of(self.test)

    def _cases_of(self, rows: pd.DataFrame) -> pd.DataFrame:
        return rows if self.case_users is None else rows[self.case_users[rows[USER_IDX].to_numpy()]]


def leave_last_out(dataset: Dataset, max_users: int = 0, seed: int = 0) -> Split:
    """The headline protocol (deterministic: the log is already in its tie-free order).

    `max_users` > 0 (`eval.max_users`): valid and test cases are those of a seeded sample of that
    many users (the same users for every model and epoch); the rows stay whole. Each sampled user's
    case is still ranked against the whole catalogue: at 10^6 users x 10^6 items ranking every user
    would be 10^12 scores an epoch."""
    log = dataset.interactions
    from_end = log.groupby(USER_IDX, sort=False).cumcount(ascending=False).to_numpy()
    n_users, chosen = len(dataset.vocab.users), None
    if 0 < max_users < n_users:
        chosen = np.zeros(n_users, dtype=bool)
        chosen[np.random.default_rng(seed).choice(n_users, size=max_users, replace=False)] = True
    return Split(
        train=log[from_end >= 2], valid=log[from_end == 1], test=log[from_end == 0], case_users=chosen
    )


@dataclass
class ColdSplit:
    """The cold-item protocol: a split of the warm rows for training, and cold test cases."""

    cold_items: np.ndarray
    warm: Split
    cold_test: pd.DataFrame

    def test_cases(self) -> EvalCases:
        history = pd.concat([self.warm.train, self.warm.valid, self.warm.test])
        return EvalCases.build(history, self.cold_test, require_history=True)


def cold_item_split(dataset: Dataset, config: DataConfig) -> ColdSplit:
    """Hold out `config.cold_item_fraction` of interacted items (seeded)."""
    log = dataset.interactions
    interacted = np.unique(log[ITEM_IDX].to_numpy())
    rng = np.random.default_rng(config.seed)
    n_cold = max(1, round(config.cold_item_fraction * len(interacted)))
    cold = np.sort(rng.choice(interacted, size=n_cold, replace=False))
    is_cold = np.isin(log[ITEM_IDX].to_numpy(), cold)
    warm_log = log[~is_cold]
    enough = warm_log.groupby(USER_IDX, sort=False)[ITEM_IDX].transform("size") >= 3
    warm = leave_last_out(replace(dataset, interactions=warm_log[enough]))
    cold_rows = log[is_cold]
    cold_test = cold_rows[cold_rows.groupby(USER_IDX, sort=False).cumcount(ascending=False).to_numpy() == 0]
    return ColdSplit(cold_items=cold, warm=warm, cold_test=cold_test)


@dataclass
class EvalCases:
    """Targets with their request context and the history (rows of `history`) that precedes each.

    History is stored CSR-style: case b's history rows are `hist_rows[hist_offsets[b]:hist_offsets[b+1]]`,
    in time order, indexing into the arrays of the history frame.
    """

    user: np.ndarray
    target: np.ndarray
    scene: np.ndarray
    device: np.ndarray
    timestamp: np.ndarray  # seconds since the epoch, UTC
    hist_offsets: np.ndarray
    hist_items: np.ndarray
    hist_scenes: np.ndarray
    hist_timestamps: np.ndarray

    def __len__(self) -> int:
        return len(self.target)

    @classmethod
    def build(cls, history: pd.DataFrame, targets: pd.DataFrame, require_history: bool = False) -> EvalCases:
        """Cases for `targets`, each with the rows of `history` of the same user that precede it."""
        history = history.sort_values(POS)
        hist_u = history[USER_IDX].to_numpy()
        hist_pos = history[POS].to_numpy()
        order = np.lexsort((hist_pos, hist_u))
        stride = int(max(hist_pos.max(initial=0), targets[POS].max()) + 1)
        keys = hist_u[order] * stride + hist_pos[order]
        t_u, t_pos = targets[USER_IDX].to_numpy(), targets[POS].to_numpy()
        start = np.searchsorted(keys, t_u * stride, side="left")
        end = np.searchsorted(keys, t_u * stride + t_pos, side="left")
        if require_history:
            keep = end > start
            targets, start, end = targets[keep], start[keep], end[keep]
        lengths = end - start
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        rows = order[np.repeat(start - offsets[:-1], lengths) + np.arange(offsets[-1])]
        return cls(
            user=targets[USER_IDX].to_numpy(),
            target=targets[ITEM_IDX].to_numpy(),
            scene=targets[SCENE_IDX].to_numpy(),
            device=targets[DEVICE_IDX].to_numpy(),
            timestamp=_seconds(targets[TIMESTAMP]),
            hist_offsets=offsets,
            hist_items=history[ITEM_IDX].to_numpy()[rows],
            hist_scenes=history[SCENE_IDX].to_numpy()[rows],
            hist_timestamps=_seconds(history[TIMESTAMP])[rows],
        )

    def select(self, lo: int, hi: int) -> EvalCases:
        """Cases lo..hi (a chunk), with their histories."""
        a, b = self.hist_offsets[lo], self.hist_offsets[hi]
        return EvalCases(
            user=self.user[lo:hi],
            target=self.target[lo:hi],
            scene=self.scene[lo:hi],
            device=self.device[lo:hi],
            timestamp=self.timestamp[lo:hi],
            hist_offsets=self.hist_offsets[lo : hi + 1] - a,
            hist_items=self.hist_items[a:b],
            hist_scenes=self.hist_scenes[a:b],
            hist_timestamps=self.hist_timestamps[a:b],
        )

    def history_matrix(self, n_items: int) -> sp.csr_matrix:
        """Binary cases x items matrix of each case's history (what item-item baselines read)."""
        data = np.ones(len(self.hist_items), dtype=np.float32)
        matrix = sp.csr_matrix((data, self.hist_items, self.hist_offsets), shape=(len(self), n_items))
        matrix.sum_duplicates()
        matrix.data[:] = 1.0
        return matrix

    def recent_history(self, max_len: int, pad: int = -1) -> np.ndarray:
        """[B, max_len] most recent history items, oldest first, left-padded with `pad`."""
        out = np.full((len(self), max_len), pad, dtype=np.int64)
        lengths = np.diff(self.hist_offsets)
        take = np.minimum(lengths, max_len)
        rows = np.repeat(np.arange(len(self)), take)
        col = np.arange(take.sum()) - np.repeat(np.cumsum(take) - take, take)
        src = np.repeat(self.hist_offsets[1:] - take, take) + col
        out[rows, max_len - np.repeat(take, take) + col] = self.hist_items[src]
        return out


def _seconds(column: pd.Series) -> np.ndarray:
    return column.to_numpy(dtype="datetime64[ns]").astype(np.int64) // 1_000_000_000


def write_splits(dataset: Dataset, config: DataConfig, out: Path) -> dict[str, int]:
    """Write both protocols' rows (contract columns only) under `out`, atomically; row counts back."""
    headline, cold = leave_last_out(dataset), cold_item_split(dataset, config)
    columns = [
        col
        for col in dataset.interactions.columns
        if col not in (USER_IDX, ITEM_IDX, SCENE_IDX, DEVICE_IDX, POS)
    ]
    frames = {
        "train": headline.train,
        "valid": headline.valid,
        "test": headline.test,
        "cold/train": cold.warm.train,
        "cold/valid": cold.warm.valid,
        "cold/test": cold.cold_test,
    }
    with atomic_directory(out) as staging:
        for name, frame in frames.items():
            write_parquet(frame[columns], staging / f"{name}.parquet")
        write_parquet(
            pd.DataFrame({ITEM_ID: dataset.vocab.items[cold.cold_items]}), staging / "cold/items.parquet"
        )
    return {name: len(frame) for name, frame in frames.items()}
