"""Publishing in batches: the same sources and online values whatever the batch size, and the
values Feast's own `materialize` of those sources writes (what publish did before it batched)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from scenerec.artifact import read_manifest
from scenerec.config import Config
from scenerec.data.dataset import load_dataset
from scenerec.features.compute import user_history, user_profile, user_table, user_table_batches
from scenerec.features.publish import publish, summary
from tests.features.conftest import copy_repo
from tests.features.test_publish import online_rows

pytestmark = pytest.mark.integration


def test_user_batches_concatenate_to_the_user_table(trained_model: tuple[Path, Path]) -> None:
    data, model = trained_model
    config = Config.from_dict(read_manifest(model)["config"])
    dataset = load_dataset(data, config.data)
    whole = user_table(dataset, config)
    batches = list(user_table_batches(dataset, config, 7))
    assert len(batches) == -(-len(whole) // 7)
    pd.testing.assert_frame_equal(pd.concat(batches, ignore_index=True), whole)


def _old_user_lists(dataset, max_history: int) -> pd.DataFrame:
    """The user lists as `compute` built them with a Python call per user (before 10^6 users)."""
    log = dataset.interactions.sort_values("pos")
    recent = (
        log.groupby("user_id", sort=False, observed=True)
        .tail(max_history)
        .groupby("user_id", sort=True, observed=True)
    )
    whole = log.groupby("user_id", sort=True, observed=True)
    return pd.DataFrame(
        {
            "history_item_ids": recent["item_id"].agg(lambda s: [str(v) for v in s]),
            "history_scenes": recent["scene"].agg(lambda s: [str(v) for v in s]),
            "scenes_seen": whole["scene"].agg(lambda s: sorted({str(v) for v in s})),
        }
    )


@pytest.mark.parametrize("max_history", [1, 5, 20, 1000])
def test_user_lists_are_what_the_per_user_aggregation_gave(
    trained_model: tuple[Path, Path], max_history: int
) -> None:
    """1: every list has one element (no 2-D arrays); 1000: whole logs."""
    data, model = trained_model
    config = Config.from_dict(read_manifest(model)["config"])
    dataset = load_dataset(data, config.data)
    expected = _old_user_lists(dataset, max_history)
    history = user_history(dataset, max_history)
    profile = user_profile(dataset, config.data)
    for column in ("history_item_ids", "history_scenes"):
        assert history[column].tolist() == expected[column].tolist()
    assert profile["scenes_seen"].tolist() == expected["scenes_seen"].tolist()
    assert history.index.tolist() == profile.index.tolist() == expected.index.tolist()
    assert all(type(v) is str for row in history["history_item_ids"] for v in row)


def test_small_batches_publish_what_one_batch_publishes(
    sqlite_repo: Path, trained_model: tuple[Path, Path], tmp_path: Path
) -> None:
    repo = copy_repo(tmp_path / "feature_repo")
    result = publish(*trained_model, repo, batch_rows=13)
    assert online_rows(repo) == online_rows(sqlite_repo)
    for name in ("users", "items", "scenes"):
        path = Path("data") / "sources" / f"{name}.parquet"
        pd.testing.assert_frame_equal(pd.read_parquet(repo / path), pd.read_parquet(sqlite_repo / path))
    assert "redis_memory" not in summary(result)
    assert not list((repo / "data").glob(".publish-*")) and not list((repo / "data" / "sources").glob(".*"))


def test_redis_publish_reports_memory_per_user(redis_repo: Path, trained_model: tuple[Path, Path]) -> None:
    result = publish(*trained_model, redis_repo, online_store="redis", batch_rows=50)
    memory = summary(result)["redis_memory"]
    assert memory["used_memory_bytes"] > 0
    assert set(memory["growth_bytes"]) == {"user", "item", "scene"}
    # a republish overwrites rows of the same size: the growth is (near) zero, not a new copy
    assert abs(memory["growth_bytes"]["user"]) < 200 * result.rows["user"]


def test_batched_writes_are_what_feast_materialize_writes(
    sqlite_repo: Path, trained_model: tuple[Path, Path], tmp_path: Path
) -> None:
    from datetime import timedelta

    from scenerec.features.repo import open_store

    repo = copy_repo(tmp_path / "feature_repo")
    result = publish(*trained_model, repo, batch_rows=64)
    written = online_rows(repo)
    with sqlite3.connect(repo / "data" / "online.db") as db:
        for table in written:
            db.execute(f'DELETE FROM "{table}"')
    assert all(not rows for rows in online_rows(repo).values())
    store = open_store(repo)
    store.materialize(  # into emptied tables: every row is materialize's own
        result.window[0],
        result.window[1] + timedelta(seconds=1),
        feature_views=[v.name for v in store.list_feature_views() if v.online],
    )
    assert online_rows(repo) == written
