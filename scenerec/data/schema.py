"""The data contract: the files of a dataset directory, their columns and what each must hold.

This module is the one place that names the contract's columns; loaders, validation, the split,
training and serving all import these names instead of spelling them again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

USER_ID = "user_id"
ITEM_ID = "item_id"
TIMESTAMP = "event_timestamp"
SCENE = "scene"
EVENT = "event"
LABEL = "label"
DEVICE = "device"
LOCATION = "location"
TITLE = "title"
TEXT = "text"
CATEGORY = "category"

DEFAULT_SCENE = "default"
DEFAULT_EVENT = "interaction"
DEFAULT_DEVICE = "unknown"
RATING_EVENT = "rate"

ColumnKind = Literal["id", "string", "timestamp", "number"]


@dataclass(frozen=True)
class Column:
    """One column of the contract: its kind, whether it must be present, and its fill value."""

    name: str
    kind: ColumnKind
    required: bool
    default: str | float | None = None
    meaning: str = ""


@dataclass(frozen=True)
class TableSpec:
    """One file of the contract (stored as `<name>.parquet` or `<name>.csv`)."""

    name: str
    required: bool
    columns: tuple[Column, ...]
    key: str | None = None  # a column whose values must be unique

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(f"{self.name} has no column '{name}'")


INTERACTIONS = TableSpec(
    name="interactions",
    required=True,
    columns=(
        Column(USER_ID, "id", True, meaning="who acted"),
        Column(ITEM_ID, "id", True, meaning="on what (must be in items)"),
        Column(TIMESTAMP, "timestamp", True, meaning="when, timezone-aware (UTC)"),
        Column(SCENE, "string", False, DEFAULT_SCENE, "scenario id: home, search, detail, a domain"),
        Column(EVENT, "string", False, DEFAULT_EVENT, "behaviour: click, purchase, rate"),
        Column(LABEL, "number", False, 1.0, "1.0 for implicit events, or the rating"),
        Column(DEVICE, "string", False, DEFAULT_DEVICE, "request context"),
        Column(LOCATION, "string", False, None, "request context"),
    ),
)

ITEMS = TableSpec(
    name="items",
    required=True,
    key=ITEM_ID,
    columns=(
        Column(ITEM_ID, "id", True, meaning="the catalogue's key"),
        Column(TITLE, "string", False, "", "short name"),
        Column(TEXT, "string", False, "", "free text the encoder reads (falls back to the title)"),
        Column(CATEGORY, "string", False, "unknown", "one category per item"),
    ),
)

USERS = TableSpec(
    name="users",
    required=False,
    key=USER_ID,
    columns=(Column(USER_ID, "id", True, meaning="profile key"),),
)

TABLES: tuple[TableSpec, ...] = (INTERACTIONS, ITEMS, USERS)
FORMATS: tuple[str, ...] = (".parquet", ".csv")

# Files a dataset directory may hold besides the tables, so validation does not call them typos.
KNOWN_EXTRA_FILES: frozenset[str] = frozenset({"truth.json", "README.md", "LICENSE", "split", "features"})

# Context columns the model reads besides scene (in the contract's order).
CONTEXT_COLUMNS: tuple[str, ...] = (DEVICE,)
