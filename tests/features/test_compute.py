"""The feature tables on hand-made logs whose answers are worked out by hand, and the history's
equality with the model's own input construction (the unit half of the skew proof)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scenerec.config import DataConfig
from scenerec.data import schema as c
from scenerec.data.dataset import POS, USER_IDX, Dataset, prepare
from scenerec.data.split import EvalCases
from scenerec.errors import DataError
from scenerec.features.compute import item_table, scene_table, user_history, user_profile
from scenerec.features.model_ids import ModelIds
from scenerec.model.inputs import inputs_from_cases
from tests.conftest import frames

ROWS = [
    ("a", "i3", 30, "home"),
    ("a", "i1", 10, "search"),
    ("a", "i2", 20, "home"),
    ("a", "i5", 20, "detail"),  # same second as i2: the tie is broken by item id (i2 first)
    ("b", "i1", 5, "home"),
    ("b", "i4", 7, "home"),
]


def test_history_is_the_latest_items_oldest_first_with_their_scenes(
    tiny_dataset: Callable[..., Dataset],
) -> None:
    history = user_history(tiny_dataset(ROWS), max_history=3)
    assert history.loc["a", "history_item_ids"] == ["i2", "i5", "i3"]
    assert history.loc["a", "history_scenes"] == ["home", "detail", "home"]
    assert history.loc["b", "history_item_ids"] == ["i1", "i4"]
    assert list(history.index) == ["a", "b"]


def whole_log_cases(dataset: Dataset) -> EvalCases:
    """One case per user, right after their latest event: history = the user's whole log."""
    log = dataset.interactions
    targets = log.groupby(USER_IDX, sort=True).tail(1).copy()
    targets[POS] += 1
    return EvalCases.build(log, targets)


@pytest.mark.parametrize("max_history", [1, 2, 3, 10])
def test_history_maps_to_exactly_the_models_inputs(
    tiny_dataset: Callable[..., Dataset], max_history: int
) -> None:
    dataset = tiny_dataset(ROWS)
    vocab = dataset.vocab
    cases = whole_log_cases(dataset)
    expected = inputs_from_cases(cases, max_history, vocab.n_items, len(vocab.scenes), 24)
    ids = ModelIds(
        items={str(v): k for k, v in enumerate(vocab.items)},
        scenes={str(v): k for k, v in enumerate(vocab.scenes)},
        devices={str(v): k for k, v in enumerate(vocab.devices)},
        max_history=max_history,
    )
    history = user_history(dataset, max_history)
    for row, user in enumerate(vocab.users[cases.user]):
        items, scenes, unknown = ids.history(
            history.loc[user, "history_item_ids"], history.loc[user, "history_scenes"]
        )
        np.testing.assert_array_equal(items, expected.hist_items[row])
        np.testing.assert_array_equal(scenes, expected.hist_scenes[row])
        assert unknown == 0


def test_profile_counts_conversions_and_the_last_context() -> None:
    interactions, items = frames(ROWS)
    interactions.loc[interactions[c.ITEM_ID] == "i3", c.EVENT] = "purchase"
    interactions.loc[interactions[c.ITEM_ID] == "i3", c.DEVICE] = "desktop"
    dataset = prepare(interactions, items, None, DataConfig(min_interactions=1))
    profile = user_profile(dataset, DataConfig())
    assert profile.loc["a", "interaction_count"] == 4
    assert profile.loc["a", "conversion_rate"] == pytest.approx(0.25)
    assert profile.loc["a", "distinct_scenes"] == 3
    assert (profile.loc["a", "last_scene"], profile.loc["a", "last_device"]) == ("home", "desktop")
    assert profile.loc["a", "event_timestamp"] == pd.Timestamp(30, unit="s", tz="UTC")
    assert profile.loc["b", "conversion_rate"] == 0.0


def test_scene_statistics_cover_every_scene_with_real_zeros() -> None:
    interactions, items = frames(ROWS)
    interactions.loc[interactions[c.ITEM_ID] == "i4", c.EVENT] = "purchase"
    dataset = prepare(interactions, items, None, DataConfig(min_interactions=1))
    scenes = scene_table(dataset, DataConfig()).set_index("scene_id")
    assert list(scenes.index) == ["default", "detail", "home", "search"]
    assert scenes.loc["home", "interaction_count"] == 4
    assert scenes.loc["home", "interaction_share"] == pytest.approx(4 / 6)
    assert scenes.loc["home", "conversion_rate"] == pytest.approx(1 / 4)
    assert scenes.loc["home", "distinct_users"] == 2
    assert scenes.loc["home", "distinct_items"] == 4
    assert scenes.loc["default"].drop("event_timestamp").tolist() == [0, 0.0, 0.0, 0, 0]
    assert (scenes["event_timestamp"] == pd.Timestamp(30, unit="s", tz="UTC")).all()


def test_item_table_is_the_models_items_at_its_creation_time(tmp_path: Path) -> None:
    vectors = [np.arange(3, dtype=np.float32) + k for k in range(2)]
    pd.DataFrame(
        {
            "item_id": ["i2", "i1"],
            "index": [1, 0],
            "category": ["x", "y"],
            "vector": vectors,
            "text_embedding": [v * 2 for v in vectors],
            "train_count": [4, 0],
            "popularity_bucket": [1, 0],
            "cold": [False, True],
        }
    ).to_parquet(tmp_path / "items.parquet")
    table = item_table(tmp_path, {"created": "2026-01-02T03:04:05+00:00"})
    assert table["item_id"].tolist() == ["i1", "i2"]
    np.testing.assert_array_equal(table.loc[0, "vector"], vectors[1])
    assert table.loc[0, "vector"].dtype == np.float32
    assert table["cold"].tolist() == [True, False]
    assert (table["event_timestamp"] == pd.Timestamp("2026-01-02T03:04:05Z")).all()
    assert "index" not in table.columns  # model indices stay in the model's id maps


def test_item_table_names_a_missing_column(tmp_path: Path) -> None:
    pd.DataFrame({"item_id": ["i1"], "vector": [[1.0]]}).to_parquet(tmp_path / "items.parquet")
    with pytest.raises(DataError, match=r"items.parquet: missing column\(s\) text_embedding"):
        item_table(tmp_path, {"created": "2026-01-02T03:04:05+00:00"})


def test_model_ids_pad_truncate_and_count_unknown_ids(tmp_path: Path) -> None:
    (tmp_path / "id_maps").mkdir()
    for name, values in {
        "items": ["i0", "i1", "i2"],
        "scenes": ["default", "home"],
        "devices": ["m"],
    }.items():
        (tmp_path / "id_maps" / f"{name}.json").write_text(json.dumps(values))
    ids = ModelIds.load(tmp_path, {"dims": {"max_history": 3}})
    items, scenes, unknown = ids.history(["i2", "gone", "i0"], ["home", "home", "elsewhere"])
    assert items.tolist() == [3, 2, 0] and scenes.tolist() == [2, 1, 0] and unknown == 1
    items, _, _ = ids.history(["i0", "i1", "i2", "i1"], ["home"] * 4)
    assert items.tolist() == [1, 2, 1]
    items, scenes, _ = ids.history([], [])
    assert items.tolist() == [3, 3, 3] and scenes.tolist() == [2, 2, 2]
