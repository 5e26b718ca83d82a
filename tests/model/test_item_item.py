"""The item-item part's B: EASE fitted on rows, kept sparse; its L2 chosen on valid; its temperature."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from scenerec.baselines.ease import Ease
from scenerec.config import EvalConfig
from scenerec.data.dataset import ITEM_IDX, USER_IDX, Dataset
from scenerec.data.split import leave_last_out
from scenerec.model.item_item import (
    NeighbourScorer,
    choose_l2,
    ease_neighbours,
    initial_weight,
    no_neighbours,
    rows_with_valid,
)

ROWS = pd.DataFrame({USER_IDX: [0, 0, 0, 1, 1, 2, 2, 2, 3, 3], ITEM_IDX: [0, 1, 2, 0, 1, 1, 2, 3, 3, 4]})


def test_dense_when_k_covers_the_row_and_largest_magnitudes_when_not() -> None:
    dense = Ease(5, 1).fit(ROWS, l2=1.0).weights
    full = ease_neighbours(ROWS, 5, l2=1.0, k=10)
    assert full.columns.shape == (6, 4)  # K = N - 1: every other item; row N is the pad
    assert np.allclose(full.matrix().toarray(), dense, atol=1e-6)
    assert (full.columns[5] == 5).all() and (full.weights[5] == 0).all()
    top = ease_neighbours(ROWS, 5, l2=1.0, k=2)
    for j in range(5):
        kept = np.sort(np.abs(top.weights[j]))
        assert np.allclose(kept, np.sort(np.abs(dense[j]))[-2:], atol=1e-6)


def test_the_part_switched_off_scores_nothing() -> None:
    off = no_neighbours(5)
    assert off.matrix().nnz == 0 and off.columns.shape == (6, 1)


def test_l2_is_chosen_on_valid_and_b_is_refitted_with_the_valid_targets(
    small_synthetic_dataset: Dataset,
) -> None:
    dataset = small_synthetic_dataset
    split = leave_last_out(dataset)
    valid, n = split.valid_cases(), dataset.vocab.n_items
    chosen = choose_l2(
        split.train, valid, n, (1.0, 100.0, 10000.0), 50, 20, EvalConfig(ks=(10,)), dataset.item_categories()
    )
    assert chosen.l2 in (1.0, 100.0, 10000.0)
    rows = rows_with_valid(split.train, valid)
    assert len(rows) == len(split.train) + len(valid)
    scores = NeighbourScorer(chosen, 20).score(valid.select(0, 5))
    assert scores.shape == (5, n) and np.isfinite(scores).all()


def test_initial_weight_fits_the_valid_targets(small_synthetic_dataset: Dataset) -> None:
    split = leave_last_out(small_synthetic_dataset)
    neighbours = ease_neighbours(split.train, small_synthetic_dataset.vocab.n_items, l2=50.0, k=50)
    weight = initial_weight(neighbours, split.valid_cases(), 20)
    assert 0.25 < weight < 2000.0  # strictly inside the searched range: a real optimum, not an edge


def test_cross_fitted_b_never_reads_the_users_own_rows() -> None:
    """Each fold's B is fitted without that fold's users: a pair only one user holds is absent
    from the B that user's training windows read, and present in the B of every other fold."""
    from scenerec.model.fit import TrainingItemItem
    from scenerec.model.item_item import ItemItem, cross_fitted_neighbours

    folds = cross_fitted_neighbours(ROWS, 5, 4, l2=1.0, k=10, folds=2, seed=0)
    assert len(folds.folds) == 2 and sorted(set(folds.user_fold)) == [0, 1]
    own = folds.user_fold[3]  # user 3 alone holds the pair (3, 4)
    assert folds.folds[own].matrix()[3, 4] == 0
    assert folds.folds[1 - own].matrix()[3, 4] != 0
    for fold in range(2):  # each fold's B is EASE on the other fold's rows
        rows = ROWS[folds.user_fold[ROWS[USER_IDX]] != fold]
        assert np.allclose(
            folds.folds[fold].matrix().toarray(), Ease(5, 1).fit(rows, l2=1.0).weights, atol=1e-6
        )
    table = TrainingItemItem(ItemItem(folds.stacked(), n_items=5), folds.user_fold)
    history = torch.tensor([[3, 5], [3, 5]])  # item 3, then the pad
    users = torch.tensor([3, next(u for u in range(4) if folds.user_fold[u] != own)])
    scores = table.scores(history, users, per_request=True)
    assert scores[0, 4] == 0 and scores[1, 4] != 0  # the same history, read through each user's fold
