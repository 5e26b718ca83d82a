"""The item-item view of the history: EASE's closed-form B, kept sparse, as a score part of the model.

score_ii(u, i) = sum over the user's recent history items j of B[j, i]

The sequence encoder reads the history in order; where the log has little order (coarse
timestamps, many ties) or little data, an item-item regression over the history *set* is the
strongest simple recommender there is (EASE^R, Steck 2019), and a learned model rarely reaches it on
its own. So the model carries it as a fourth score part with a learned weight per scene: where order
pays, the weight shrinks; where it does not, the item-item view carries the ranking.

B is fitted once, in closed form, on the training rows (its L2 weight chosen on the valid split like
the EASE baseline's), and kept as the K largest-magnitude weights of each row: a history item j
contributes to at most K items, so retrieval stays one pass over the catalogue (a gather of the
history's rows and a scatter-add) and the tables grow with N x K, not N^2. At K >= N - 1 it is
the exact dense B. Rows of items never seen in training are zero. Row N (the history pad) is zero.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from torch import nn

from scenerec.baselines.ease import Ease
from scenerec.config import EvalConfig
from scenerec.data.dataset import ITEM_IDX, USER_IDX
from scenerec.data.split import EvalCases
from scenerec.evaluate import evaluate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Neighbours:
    """Sparse B: row j keeps K (column, weight) pairs; row N is the pad (weight 0, column N)."""

    columns: np.ndarray  # [N + 1, K] int64
    weights: np.ndarray  # [N + 1, K] float32
    l2: float

    @property
    def n_items(self) -> int:
        return len(self.columns) - 1

    def matrix(self) -> sp.csr_matrix:
        """[N, N] the sparse B (without the pad row and column)."""
        n, k = self.n_items, self.columns.shape[1]
        rows = np.repeat(np.arange(n), k)
        keep = self.columns[:n].ravel() < n
        return sp.csr_matrix(
            (self.weights[:n].ravel()[keep], (rows[keep], self.columns[:n].ravel()[keep])), shape=(n, n)
        )


def ease_neighbours(rows: pd.DataFrame, n_items: int, l2: float, k: int) -> Neighbours:
    """EASE^R's B fitted on `rows`, sparsified to the `k` largest |B[j, i]| of each row j."""
    dense = Ease(n_items, 1).fit(rows, l2=l2).weights  # [N, N], zero diagonal
    return _sparsify(dense, k, l2)


def no_neighbours(n_items: int) -> Neighbours:
    """The item-item part switched off: one zero-weight pad neighbour per row."""
    return Neighbours(
        columns=np.full((n_items + 1, 1), n_items, np.int64),
        weights=np.zeros((n_items + 1, 1), np.float32),
        l2=0.0,
    )


def _sparsify(dense: np.ndarray, k: int, l2: float) -> Neighbours:
    n = len(dense)
    k = max(1, min(k, n - 1)) if n > 1 else 1
    if k >= n - 1:
        top = np.argsort(-np.abs(dense), axis=1, kind="stable")[:, :k]
    else:
        top = np.argpartition(-np.abs(dense), k, axis=1)[:, :k]
    weights = np.take_along_axis(dense, top, axis=1).astype(np.float32)
    columns = np.concatenate([top.astype(np.int64), np.full((1, k), n, np.int64)])
    return Neighbours(columns=columns, weights=np.concatenate([weights, np.zeros((1, k), np.float32)]), l2=l2)


@dataclass(frozen=True)
class CrossFitted:
    """B fitted once per fold of users, each without that fold's rows: what a user's training
    windows read, so the item-item offsets of training are out-of-sample like those of valid."""

    folds: list[Neighbours]
    user_fold: np.ndarray  # [n_users] the fold of each user index

    def stacked(self) -> Neighbours:
        """The folds' tables one under the other: fold f's row j is row f * (N + 1) + j (its pad last)."""
        return Neighbours(
            columns=np.concatenate([f.columns for f in self.folds]),
            weights=np.concatenate([f.weights for f in self.folds]),
            l2=self.folds[0].l2,
        )


def cross_fitted_neighbours(
    rows: pd.DataFrame, n_items: int, n_users: int, l2: float, k: int, folds: int, seed: int
) -> CrossFitted:
    """`folds` sparse Bs, fold f's fitted on the rows of every user outside fold f."""
    user_fold = np.random.default_rng(seed).permutation(n_users) % folds
    row_fold = user_fold[rows[USER_IDX].to_numpy()]
    fitted = []
    for fold in range(folds):
        fitted.append(ease_neighbours(rows[row_fold != fold], n_items, l2, k))
    k_max = max(f.columns.shape[1] for f in fitted)
    return CrossFitted(folds=[_widen(f, k_max) for f in fitted], user_fold=user_fold)


def _widen(neighbours: Neighbours, k: int) -> Neighbours:
    """The same B with K = `k` columns (the extra ones point at the pad with weight 0)."""
    extra = k - neighbours.columns.shape[1]
    if extra <= 0:
        return neighbours
    n = neighbours.n_items
    return Neighbours(
        columns=np.concatenate([neighbours.columns, np.full((n + 1, extra), n, np.int64)], axis=1),
        weights=np.concatenate([neighbours.weights, np.zeros((n + 1, extra), np.float32)], axis=1),
        l2=neighbours.l2,
    )


def history_matrix(cases: EvalCases, n_items: int, max_history: int) -> sp.csr_matrix:
    """Binary cases x items matrix of each case's `max_history` most recent items (what the model reads)."""
    recent = cases.recent_history(max_history, pad=-1)
    rows, cols = np.nonzero(recent >= 0)
    matrix = sp.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, recent[rows, cols])), shape=(len(cases), n_items)
    )
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


class NeighbourScorer:
    """`scenerec.evaluate.Scorer` of the item-item part alone (choosing its L2 weight on valid)."""

    def __init__(self, neighbours: Neighbours, max_history: int) -> None:
        self.b, self.n, self.max_history = neighbours.matrix(), neighbours.n_items, max_history

    def score(self, cases: EvalCases) -> np.ndarray:
        return np.asarray((history_matrix(cases, self.n, self.max_history) @ self.b).todense())


def rows_with_valid(train_rows: pd.DataFrame, valid_cases: EvalCases) -> pd.DataFrame:
    """Training rows plus each valid case's target as a (user, item) row: what B is refitted on once
    everything is chosen, as the baselines are refitted on train + valid before the test."""
    extra = pd.DataFrame({USER_IDX: valid_cases.user, ITEM_IDX: valid_cases.target})
    return pd.concat([train_rows[[USER_IDX, ITEM_IDX]], extra], ignore_index=True)


class ItemItem(nn.Module):
    """The sparse B as buffers, and the history scores it gives: [B, L, N] after each position
    (training: the history up to and including that position) or [B, N] for a request."""

    columns: torch.Tensor
    weights: torch.Tensor

    def __init__(self, neighbours: Neighbours, n_items: int | None = None) -> None:
        """`n_items`: the catalogue size when `neighbours` holds several folds' tables stacked
        (CrossFitted.stacked: a history then indexes its fold's rows)."""
        super().__init__()
        self.n_items = neighbours.n_items if n_items is None else n_items
        self.l2 = neighbours.l2
        self.register_buffer("columns", torch.as_tensor(neighbours.columns), persistent=True)
        self.register_buffer("weights", torch.as_tensor(neighbours.weights), persistent=True)
        # whether B has any weight: fixed with B, so not rescanned on every forward pass
        self.active = bool(np.abs(neighbours.weights).sum() > 0)

    def load(self, neighbours: Neighbours) -> None:
        """Replace B (e.g. refitted on train + valid); K may change."""
        if neighbours.n_items != self.n_items:
            raise ValueError(f"item-item: {neighbours.n_items} items, the model has {self.n_items}")
        self.columns = torch.as_tensor(neighbours.columns, device=self.columns.device)
        self.weights = torch.as_tensor(neighbours.weights, device=self.weights.device)
        self.l2 = neighbours.l2
        self.active = bool(np.abs(neighbours.weights).sum() > 0)

    def running(self, hist_items: torch.Tensor, columns: torch.Tensor | None = None) -> torch.Tensor:
        """[B, L, W + 1] the running item-item scores after each position, built in place; the last
        column collects the pad's (and any dropped item's) weights. The training softmax reads it
        whole (its pad column is masked there); `scores` drops that column."""
        target, values, width = self._targets(hist_items, columns)
        out = values.new_zeros(*target.shape[:2], width)
        out.scatter_add_(2, target, values)
        return out.cumsum_(dim=1)

    def scores(
        self, hist_items: torch.Tensor, per_request: bool, columns: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Item-item scores from the history `hist_items` [B, L] (pad N).

        `per_request`: the whole history's sum [B, W]; otherwise the running sum after each
        position [B, L, W]. `columns` [N + 1] maps items to W output columns (a sampled candidate
        set, with the pad and every item outside it mapped to column W, dropped); default: all N items.
        """
        if not per_request:
            return self.running(hist_items, columns)[..., :-1]
        target, values, width = self._targets(hist_items, columns)
        b, length, k = target.shape
        out = values.new_zeros(b, width).scatter_add(1, target.reshape(b, length * k), values.reshape(b, -1))
        return out[:, :-1]

    def _targets(
        self, hist_items: torch.Tensor, columns: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The history's neighbour columns [B, L, K] (mapped through `columns`), weights, and width."""
        target = self.columns[hist_items]
        values = self.weights[hist_items]
        if columns is None:
            return target, values, self.n_items + 1
        return columns[target], values, int(columns[-1]) + 1  # the pad (row N) maps to dropped column W


def choose_l2(
    train_rows: pd.DataFrame,
    valid_cases: EvalCases,
    n_items: int,
    l2s: tuple[float, ...],
    k: int,
    max_history: int,
    eval_config: EvalConfig,
    item_categories: np.ndarray,
) -> Neighbours:
    """The sparse B whose L2 weight ranks the valid cases best on its own (like the EASE baseline)."""
    metric = eval_config.selection_metric
    best: tuple[float, Neighbours] | None = None
    for l2 in l2s:
        neighbours = ease_neighbours(train_rows, n_items, l2, k)
        value = evaluate(
            NeighbourScorer(neighbours, max_history),
            valid_cases,
            n_items,
            eval_config,
            item_categories,
            desc=f"item-item l2={l2:g}",
        )["metrics"][metric]
        log.info("item-item: l2=%g valid %s %.4f", l2, metric, value)
        if best is None or value > best[0]:
            best = (value, neighbours)
    assert best is not None
    return best[1]


def initial_weight(
    neighbours: Neighbours, cases: EvalCases, max_history: int, max_cases: int = 2000
) -> float:
    """The weight w at which softmax(w * score_ii) alone fits the valid targets best (cross-entropy
    over the catalogue, history masked): the part's natural temperature, where training starts."""
    sample = cases.select(0, min(len(cases), max_cases))
    history = history_matrix(sample, neighbours.n_items, max_history)
    scores = torch.as_tensor(np.asarray((history @ neighbours.matrix()).todense()), dtype=torch.float64)
    seen = torch.as_tensor(np.asarray(history.todense()) > 0)
    target = torch.as_tensor(sample.target)
    seen[torch.arange(len(target)), target] = False
    best = (float("inf"), 1.0)
    for w in np.geomspace(0.25, 2000.0, 40):
        logits = (w * scores).masked_fill(seen, float("-inf"))
        loss = float((torch.logsumexp(logits, 1) - logits[torch.arange(len(target)), target]).mean())
        best = min(best, (loss, float(w)))
    return best[1]
