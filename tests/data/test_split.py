"""The protocols: leave-last-out, cold items, and the histories evaluation cases carry."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from scenerec.config import DataConfig
from scenerec.data import schema as c
from scenerec.data.dataset import Dataset
from scenerec.data.split import cold_item_split, leave_last_out


def test_leave_last_out_by_time_with_ties_broken_by_item(tiny_dataset: Callable[..., Dataset]) -> None:
    ds = tiny_dataset(
        [
            ("u1", "c", 30, "home"),
            ("u1", "a", 10, "home"),
            ("u1", "b", 10, "search"),
            ("u1", "d", 40, "home"),
            ("u2", "a", 5, "home"),
            ("u2", "b", 6, "home"),
            ("u2", "c", 7, "detail"),
        ]
    )
    split = leave_last_out(ds)
    by_user = lambda frame: frame.groupby(c.USER_ID, observed=True)[c.ITEM_ID].apply(list).to_dict()  # noqa: E731
    assert by_user(split.test) == {"u1": ["d"], "u2": ["c"]}
    assert by_user(split.valid) == {"u1": ["c"], "u2": ["b"]}
    assert by_user(split.train) == {"u1": ["a", "b"], "u2": ["a"]}  # a and b tie at t=10: item order


def test_input_order_does_not_change_the_split(tiny_dataset: Callable[..., Dataset]) -> None:
    rows = [("u1", f"i{k}", k % 3, "home") for k in range(9)] + [
        ("u2", f"i{k}", 100 - k, "home") for k in range(6)
    ]
    a, b = leave_last_out(tiny_dataset(rows)), leave_last_out(tiny_dataset(rows[::-1]))
    for frame_a, frame_b in ((a.train, b.train), (a.valid, b.valid), (a.test, b.test)):
        assert frame_a[c.ITEM_ID].tolist() == frame_b[c.ITEM_ID].tolist()


def test_repeats_collapse_and_short_users_drop(tiny_dataset: Callable[..., Dataset]) -> None:
    rows = [
        ("u1", "a", 1, "home"),
        ("u1", "b", 2, "home"),
        ("u1", "a", 3, "home"),
        ("u1", "c", 4, "home"),
        ("u2", "a", 1, "home"),
        ("u2", "b", 2, "home"),
    ]
    ds = tiny_dataset(rows, min_interactions=3)
    assert ds.interactions[c.USER_ID].unique().tolist() == ["u1"]
    assert ds.interactions[c.ITEM_ID].tolist() == ["a", "b", "c"]  # the repeat of a at t=3 collapsed
    assert ds.vocab.n_items == 3  # the catalogue keeps every item


def test_cases_carry_only_earlier_history(tiny_dataset: Callable[..., Dataset]) -> None:
    ds = tiny_dataset(
        [("u1", f"i{k}", k, "home") for k in range(6)]
        + [("u2", "i0", 0, "home"), ("u2", "i5", 1, "home"), ("u2", "i3", 2, "search")]
    )
    split = leave_last_out(ds)
    test = split.test_cases()
    items = ds.vocab.items
    hist = [
        items[test.hist_items[test.hist_offsets[b] : test.hist_offsets[b + 1]]].tolist()
        for b in range(len(test))
    ]
    assert items[test.target].tolist() == ["i5", "i3"]
    assert hist == [["i0", "i1", "i2", "i3", "i4"], ["i0", "i5"]]
    assert ds.vocab.scenes[test.scene].tolist() == ["home", "search"]
    valid = split.valid_cases()
    assert np.diff(valid.hist_offsets).tolist() == [4, 1]
    recent = test.recent_history(3)
    assert recent.tolist() == [
        [items.get_loc(f"i{k}") for k in (2, 3, 4)],
        [-1, items.get_loc("i0"), items.get_loc("i5")],
    ]
    history = test.history_matrix(ds.vocab.n_items).toarray()
    assert history.sum(axis=1).tolist() == [5, 2]


def test_cold_split_keeps_cold_items_out_of_training(small_synthetic_dataset: Dataset) -> None:
    config = DataConfig(cold_item_fraction=0.2, seed=3)
    cold = cold_item_split(small_synthetic_dataset, config)
    train_items = set(pd.concat([cold.warm.train, cold.warm.valid, cold.warm.test])["i"])
    assert not train_items & set(cold.cold_items.tolist())
    assert set(cold.cold_test["i"]) <= set(cold.cold_items.tolist())
    cases = cold.test_cases()
    assert len(cases) > 0 and (np.diff(cases.hist_offsets) > 0).all()
    assert (cases.hist_timestamps <= np.repeat(cases.timestamp, np.diff(cases.hist_offsets))).all()
    assert not np.isin(cases.hist_items, cold.cold_items).any()
    again = cold_item_split(small_synthetic_dataset, config)
    assert np.array_equal(again.cold_items, cold.cold_items)
    other = cold_item_split(small_synthetic_dataset, DataConfig(cold_item_fraction=0.2, seed=4))
    assert not np.array_equal(other.cold_items, cold.cold_items)


def test_eval_max_users_samples_the_cases_and_keeps_every_row(small_synthetic_dataset: Dataset) -> None:
    whole = leave_last_out(small_synthetic_dataset)
    sampled = leave_last_out(small_synthetic_dataset, max_users=30, seed=5)
    valid, test = sampled.valid_cases(), sampled.test_cases()
    assert len(valid) == len(test) == 30
    assert np.array_equal(np.sort(valid.user), np.sort(test.user))  # the same users in both
    assert set(valid.user) < set(whole.valid_cases().user)
    # the rows stay whole (refits on train + valid read every user's), the sampled users' cases
    # carry the same history as without sampling
    assert len(sampled.train) == len(whole.train) and len(sampled.valid) == len(whole.valid)
    full = whole.test_cases()
    user = int(test.user[0])
    a, b = np.flatnonzero(full.user == user)[0], np.flatnonzero(test.user == user)[0]
    assert np.array_equal(full.select(a, a + 1).hist_items, test.select(b, b + 1).hist_items)
    assert np.array_equal(sampled.test_targets()["u"].to_numpy(), test.user)
    again = leave_last_out(small_synthetic_dataset, max_users=30, seed=5).valid_cases()
    assert np.array_equal(again.user, valid.user)
    assert not np.array_equal(
        leave_last_out(small_synthetic_dataset, 30, seed=6).valid_cases().user, valid.user
    )
    # 0 or at least the number of users: every user, as before
    assert len(leave_last_out(small_synthetic_dataset, 10**9).valid_cases()) == len(whole.valid_cases())
