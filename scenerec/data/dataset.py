"""A validated dataset, cleaned and encoded to integer indices once for every consumer.

Cleaning follows the data contract: repeated (user, item) pairs collapse to their first occurrence,
users with too few interactions are dropped, and every user's log is ordered by time with ties
broken by item id, so the order never depends on how the input file happened to be sorted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from scenerec.config import DataConfig
from scenerec.data.schema import (
    CATEGORY,
    DEFAULT_SCENE,
    DEVICE,
    EVENT,
    INTERACTIONS,
    ITEM_ID,
    ITEMS,
    LABEL,
    RATING_EVENT,
    SCENE,
    TIMESTAMP,
    USER_ID,
    USERS,
)
from scenerec.data.validate import require_valid
from scenerec.errors import DataError

# Encoded column names: integer indices added next to the contract's columns.
USER_IDX, ITEM_IDX, SCENE_IDX, DEVICE_IDX = "u", "i", "s", "d"
POS = "pos"  # global position in the sorted log (user, time, item): the tie-free order


@dataclass(frozen=True)
class Vocab:
    """Id <-> index maps. Items follow the catalogue sorted by id; scenes always include 'default'."""

    users: pd.Index
    items: pd.Index
    scenes: pd.Index
    devices: pd.Index

    @property
    def n_items(self) -> int:
        return len(self.items)


@dataclass
class Dataset:
    """Cleaned interactions (sorted, encoded), the item catalogue and optional user profiles."""

    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame | None
    vocab: Vocab

    def summary(self) -> dict[str, int]:
        return {
            "users": len(self.vocab.users),
            "items": len(self.vocab.items),
            "interactions": len(self.interactions),
            "scenes": len(self.vocab.scenes),
        }

    def item_categories(self) -> np.ndarray:
        """Category index of every item (catalogue order), for intra-list diversity."""
        return pd.factorize(self.items[CATEGORY])[0].astype(np.int64)

    def conversions(self, config: DataConfig) -> np.ndarray:
        """Whether each interaction is a conversion (purchase-like event or a high rating)."""
        events = self.interactions[EVENT].str.lower()
        converted = events.isin([e.lower() for e in config.conversion_events])
        rated = (events == RATING_EVENT) & (self.interactions[LABEL] >= config.conversion_min_rating)
        return (converted | rated).to_numpy()


def load_dataset(directory: str | Path, config: DataConfig | None = None) -> Dataset:
    """Validate, clean and encode a dataset directory; raises `DataError` listing every problem."""
    config = config or DataConfig()
    tables = require_valid(directory)
    return prepare(tables[INTERACTIONS.name], tables[ITEMS.name], tables.get(USERS.name), config)


def prepare(
    interactions: pd.DataFrame, items: pd.DataFrame, users: pd.DataFrame | None, config: DataConfig
) -> Dataset:
    """Clean and encode contract-typed tables (see the module docstring for the rules)."""
    items = items.sort_values(ITEM_ID, kind="stable").reset_index(drop=True)
    log = interactions.sort_values([USER_ID, TIMESTAMP, ITEM_ID], kind="stable").reset_index(drop=True)
    if config.dedupe_repeats:
        log = _dedupe(log)
    counts = log.groupby(USER_ID, sort=False, observed=True)[ITEM_ID].transform("size")
    log = log[counts >= config.min_interactions].reset_index(drop=True)
    log = _drop_unused_categories(log)
    if log.empty:
        raise DataError(
            f"interactions: no user has at least data.min_interactions={config.min_interactions} "
            "interactions after removing repeats (expected some users with enough history)"
        )
    scenes = pd.Index(sorted(set(log[SCENE]) | {DEFAULT_SCENE}))
    devices = pd.Index(sorted(set(log[DEVICE])))
    vocab = Vocab(
        users=pd.Index(np.asarray(log[USER_ID].unique(), dtype=object)),
        items=pd.Index(items[ITEM_ID]),
        scenes=scenes,
        devices=devices,
    )
    log[USER_IDX] = _encode(vocab.users, log[USER_ID])
    log[ITEM_IDX] = _encode(vocab.items, log[ITEM_ID])
    log[SCENE_IDX] = _encode(scenes, log[SCENE])
    log[DEVICE_IDX] = _encode(devices, log[DEVICE])
    log[POS] = np.arange(len(log), dtype=np.int64)
    return Dataset(interactions=log, items=items, users=users, vocab=vocab)


def _encode(index: pd.Index, column: pd.Series) -> np.ndarray:
    """[rows] int64 position of each row's value in `index` (a categorical: once per category)."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        per_category = index.get_indexer(pd.Index(np.asarray(column.cat.categories, dtype=object)))
        return per_category[column.cat.codes.to_numpy()].astype(np.int64)
    return index.get_indexer(pd.Index(column)).astype(np.int64)


def _drop_unused_categories(log: pd.DataFrame) -> pd.DataFrame:
    """Categorical columns (the log read from parquet) keep only the values still present."""
    for name in log.columns:
        if isinstance(log[name].dtype, pd.CategoricalDtype):
            log[name] = log[name].cat.remove_unused_categories()
    return log


def _dedupe(log: pd.DataFrame) -> pd.DataFrame:
    """First occurrence of each (user, item), carrying the pair's max label and last event."""
    keys = [USER_ID, ITEM_ID]
    if not log.duplicated(keys).any():
        return log
    grouped = log.groupby(keys, sort=False, observed=True)
    first = grouped.head(1).copy()
    first[LABEL] = grouped[LABEL].transform("max").loc[first.index]
    first[EVENT] = grouped[EVENT].transform("last").loc[first.index]
    return first.reset_index(drop=True)
