"""The one definition of every feature table scenerec publishes to Feast.

Each table is a function of a prepared `Dataset` (cleaned with the data config the model was
trained with) or of the model directory, one row per entity, with an `event_timestamp`:

    users   the latest `max_history` interactions (item ids and their scenes, oldest first, as of
            the user's latest event: exactly the history `scenerec.model.inputs` builds for a request
            after the whole log) and lifetime counts; timestamp = the user's latest event
    scenes  interaction count and share, conversion rate, distinct users and items over the whole
            log; timestamp = the log's latest event
    items   the model's retrieval vector, text embedding, category, training popularity and cold
            flag (items.parquet); timestamp = the model's creation time

Ids stay strings here: mapping them to model indices is the model's business (`model_ids`), so
Feast never holds values that change meaning when a model is retrained.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scenerec.config import Config, DataConfig
from scenerec.data import schema as c
from scenerec.data.dataset import POS, USER_IDX, Dataset
from scenerec.errors import DataError

EVENT_TIMESTAMP = "event_timestamp"
USER_ID, ITEM_ID, SCENE_ID = "user_id", "item_id", "scene_id"
# Parquet source of each entity, relative to the feature repo (the FileSource paths).
SOURCE_FILES: dict[str, str] = {
    "user": "data/sources/users.parquet",
    "item": "data/sources/items.parquet",
    "scene": "data/sources/scenes.parquet",
}
ITEM_COLUMNS = ("vector", "text_embedding", c.CATEGORY, "train_count", "popularity_bucket", "cold")


@dataclass(frozen=True)
class FeatureTables:
    """The three offline sources, one row per entity, keyed by the entity's join key."""

    users: pd.DataFrame
    items: pd.DataFrame
    scenes: pd.DataFrame

    def by_entity(self) -> dict[str, pd.DataFrame]:
        return {"user": self.users, "item": self.items, "scene": self.scenes}

    def time_range(self) -> tuple[datetime, datetime]:
        """Earliest and latest event timestamp over all tables (the materialization window)."""
        stamps = pd.concat([t[EVENT_TIMESTAMP] for t in self.by_entity().values()])
        return stamps.min().to_pydatetime(), stamps.max().to_pydatetime()


def user_history(dataset: Dataset, max_history: int) -> pd.DataFrame:
    """Per user: the most recent `max_history` item ids and their scenes, oldest first.

    The log is already in its tie-free order (user, time, item), the order `EvalCases` and
    therefore `inputs_from_cases` read, so the tail of each user's rows is the model's history.
    """
    log = dataset.interactions.sort_values(POS)
    recent = log.groupby(c.USER_ID, sort=False, observed=True).tail(max_history)
    users, (ids, scenes) = _lists_by_user(recent, [c.ITEM_ID, c.SCENE])
    return pd.DataFrame(
        {"history_item_ids": ids, "history_scenes": scenes}, index=pd.Index(users, name=USER_ID)
    )


def _lists_by_user(log: pd.DataFrame, columns: list[str]) -> tuple[np.ndarray, list[list[list[str]]]]:
    """Sorted user ids and, per column, each user's values as a list of str in log order: what
    `groupby(user, sort=True)[column].agg(lambda s: [str(v) for v in s])` gives, without a Python
    call per user (10^6 users)."""
    ordered = log.assign(_order=np.arange(len(log))).sort_values([c.USER_ID, "_order"], kind="stable")
    users, starts = np.unique(ordered[c.USER_ID].to_numpy(), return_index=True)
    lists = []
    for column in columns:
        values = np.array([str(v) for v in ordered[column].to_numpy()], dtype=object)
        lists.append([part.tolist() for part in np.split(values, starts[1:])] if len(values) else [])
    return users, lists


def user_profile(dataset: Dataset, data_config: DataConfig) -> pd.DataFrame:
    """Per user: interaction count, conversion rate, distinct scenes (and which), last scene and device."""
    log = dataset.interactions.assign(_converted=dataset.conversions(data_config)).sort_values(POS)
    grouped = log.groupby(c.USER_ID, sort=True, observed=True)
    return pd.DataFrame(
        {
            "interaction_count": grouped.size().astype(np.int64),
            "conversion_rate": grouped["_converted"].mean().astype(np.float64),
            "distinct_scenes": grouped[c.SCENE].nunique().astype(np.int64),
            "scenes_seen": _distinct_sorted(log, c.SCENE, grouped.size().index),
            "last_scene": grouped[c.SCENE].last().astype(str),
            "last_device": grouped[c.DEVICE].last().astype(str),
            EVENT_TIMESTAMP: grouped[c.TIMESTAMP].max(),
        }
    ).rename_axis(USER_ID)


def _distinct_sorted(log: pd.DataFrame, column: str, users: pd.Index) -> pd.Series:
    """Per user (in `users` order): the sorted distinct str values of `column`."""
    pairs = pd.DataFrame({c.USER_ID: log[c.USER_ID].to_numpy(), column: log[column].astype(str).to_numpy()})
    pairs = pairs.drop_duplicates().sort_values([c.USER_ID, column], kind="stable")
    keys, (values,) = _lists_by_user(pairs, [column])
    return pd.Series(values, index=pd.Index(keys, name=c.USER_ID), dtype=object).reindex(users)


def user_table(dataset: Dataset, config: Config) -> pd.DataFrame:
    """The user source: history and profile, timestamped with the user's latest event."""
    table = user_history(dataset, config.model.max_history).join(user_profile(dataset, config.data))
    return table.reset_index()[[USER_ID, *_without(table.columns, EVENT_TIMESTAMP), EVENT_TIMESTAMP]]


def user_table_batches(dataset: Dataset, config: Config, batch_users: int) -> Iterator[pd.DataFrame]:
    """The user source, `batch_users` users at a time in user id order: concatenated, `user_table`.

    The cleaned log is sorted by (user, time, item), so a batch of users is a contiguous slice of it,
    and each user's rows are all in one batch: every row equals `user_table`'s. Memory holds one
    batch's lists (at 10^6 users the history lists of the whole table are several GB).
    """
    if batch_users < 1:
        raise DataError(f"user batches: expected at least 1 user per batch, got {batch_users}")
    log = dataset.interactions
    codes = log[USER_IDX].to_numpy()
    if len(codes) > 1 and (np.diff(codes) < 0).any():  # not in the prepared order: restore it
        log = log.sort_values(POS)
        codes = log[USER_IDX].to_numpy()
    for lo in range(0, len(dataset.vocab.users), batch_users):
        start, stop = np.searchsorted(codes, [lo, lo + batch_users])
        part = dataclasses.replace(dataset, interactions=log.iloc[start:stop])
        yield user_table(part, config)


def user_time_range(dataset: Dataset) -> tuple[datetime, datetime]:
    """Earliest and latest user-table timestamp (each user's latest event), without the table."""
    latest = dataset.interactions.groupby(USER_IDX, sort=False)[c.TIMESTAMP].max()
    return latest.min().to_pydatetime(), latest.max().to_pydatetime()


def scene_table(dataset: Dataset, data_config: DataConfig) -> pd.DataFrame:
    """The scene source: one row per scene of the vocabulary, 'default' included.

    A scene with no interactions has count 0, share 0 and conversion rate 0.0 (not a guess: there
    is nothing to convert), so a request in it reads real zeros instead of a missing row.
    """
    log = dataset.interactions.assign(_converted=dataset.conversions(data_config))
    grouped = log.groupby(c.SCENE, sort=True, observed=True)
    scenes = pd.Index([str(s) for s in dataset.vocab.scenes], name=SCENE_ID)
    counts = grouped.size().reindex(scenes, fill_value=0).astype(np.int64)
    table = pd.DataFrame(
        {
            "interaction_count": counts,
            "interaction_share": (counts / max(len(log), 1)).astype(np.float64),
            "conversion_rate": grouped["_converted"]
            .mean()
            .reindex(scenes, fill_value=0.0)
            .astype(np.float64),
            "distinct_users": grouped[c.USER_ID].nunique().reindex(scenes, fill_value=0).astype(np.int64),
            "distinct_items": grouped[c.ITEM_ID].nunique().reindex(scenes, fill_value=0).astype(np.int64),
        },
        index=scenes,
    )
    table[EVENT_TIMESTAMP] = log[c.TIMESTAMP].max()
    return table.reset_index()


def item_table(model_dir: Path, manifest: dict[str, Any]) -> pd.DataFrame:
    """The item source: the model's items.parquet, timestamped with the model's creation time."""
    path = Path(model_dir) / "items.parquet"
    try:
        items = pd.read_parquet(path)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot be read ({e})") from e
    missing = [col for col in (ITEM_ID, *ITEM_COLUMNS) if col not in items.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)} (expected a scenerec model)")
    table = pd.DataFrame(
        {
            ITEM_ID: items[ITEM_ID].astype(str),
            "vector": [np.asarray(v, dtype=np.float32) for v in items["vector"]],
            "text_embedding": [np.asarray(v, dtype=np.float32) for v in items["text_embedding"]],
            c.CATEGORY: items[c.CATEGORY].astype(str),
            "train_count": items["train_count"].astype(np.int64),
            "popularity_bucket": items["popularity_bucket"].astype(np.int64),
            "cold": items["cold"].astype(bool),
        }
    )
    table[EVENT_TIMESTAMP] = pd.Timestamp(manifest["created"]).tz_convert("UTC")
    return table.sort_values(ITEM_ID, kind="stable").reset_index(drop=True)


def feature_tables(dataset: Dataset, model_dir: Path, manifest: dict[str, Any]) -> FeatureTables:
    """Every offline source for one model and the dataset it was trained on."""
    config = Config.from_dict(manifest["config"])
    return FeatureTables(
        users=user_table(dataset, config),
        items=item_table(model_dir, manifest),
        scenes=scene_table(dataset, config.data),
    )


def _without(columns: pd.Index, name: str) -> list[str]:
    return [str(col) for col in columns if col != name]
