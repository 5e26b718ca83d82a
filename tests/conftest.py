"""Shared fixtures: tiny hand-written logs and a small synthetic dataset generated once per session."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from scenerec.config import DataConfig
from scenerec.data import schema as c
from scenerec.data.dataset import Dataset, prepare
from scenerec.data.synthetic import SyntheticSpec, write_synthetic

Row = tuple[str, str, int, str]  # user, item, seconds after the epoch, scene


def frames(rows: list[Row], items: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Contract-typed interactions and items from (user, item, second, scene) tuples."""
    interactions = pd.DataFrame(rows, columns=[c.USER_ID, c.ITEM_ID, "sec", c.SCENE])
    interactions[c.TIMESTAMP] = pd.to_datetime(interactions.pop("sec"), unit="s", utc=True)
    interactions[c.EVENT] = "click"
    interactions[c.LABEL] = 1.0
    interactions[c.DEVICE] = "mobile"
    ids = items or sorted(set(interactions[c.ITEM_ID]))
    catalogue = pd.DataFrame(
        {c.ITEM_ID: ids, c.TITLE: ids, c.TEXT: ids, c.CATEGORY: [f"cat{k % 2}" for k in range(len(ids))]}
    )
    return interactions, catalogue


@pytest.fixture
def tiny_dataset() -> Callable[..., Dataset]:
    """Build a prepared `Dataset` from rows; `min_interactions` defaults to 1 for hand-made cases."""

    def build(rows: list[Row], items: list[str] | None = None, **config: object) -> Dataset:
        interactions, catalogue = frames(rows, items)
        data_config = DataConfig(**{"min_interactions": 1, **config})  # type: ignore[arg-type]
        return prepare(interactions, catalogue, None, data_config)

    return build


SMALL_SPEC = SyntheticSpec(users=600, items=300, scenes=3, seed=11, mean_events=20, max_events=60)


@pytest.fixture(scope="session")
def small_synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic dataset directory, generated once (read-only for tests)."""
    out = tmp_path_factory.mktemp("synthetic") / "data"
    write_synthetic(out, SMALL_SPEC)
    return out


@pytest.fixture(scope="session")
def small_synthetic_dataset(small_synthetic: Path) -> Dataset:
    from scenerec.data.dataset import load_dataset

    return load_dataset(small_synthetic)
