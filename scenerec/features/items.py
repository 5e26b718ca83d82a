"""New, hidden and removed items: `scenerec items …` and the predictor's items route.

    changes = parse_item_file(path, "add")      # or parse_item_lines(body) for the HTTP route
    result = ItemWriter(store, catalogue, encoder, trained).apply(changes, source)

What `apply` does, in this order, and why:
1. Check every change against the catalogue as it stands (under the repo's items lock, so two
   writers never both add the same id): a clear error naming the line and field, nothing written.
2. Embed the added items' texts with the model's own text encoder (`text_encoder.onnx`) and run
   `item_tower.onnx` for their vectors: what a cold item of the trained catalogue gets.
3. Write the added items' rows to the Feast item views through `item_push` (their retrieval
   vector, text embedding, category; cold, popularity bucket 0). A store that fails here fails
   the call: nothing was accepted (503 / exit 3, retry).
4. Append the changes to the catalogue log (`scenerec.catalogue`), fsynced: from then on every
   predictor process following the log serves them, on its next scored batch.
With `offline` (the CLI) the item rows also go to the item views' batch source, so a later
`feast materialize` reproduces them.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from scenerec.catalogue import ACTIONS, CatalogueLog, CatalogueState, ItemChange
from scenerec.data import schema as c
from scenerec.data.io import file_lock, write_parquet
from scenerec.errors import DataError, ScenerecError
from scenerec.features.compute import EVENT_TIMESTAMP, ITEM_ID
from scenerec.features.events import write_online
from scenerec.features.records import read_json_lines, read_table_file

if TYPE_CHECKING:
    from feast import FeatureStore

    from scenerec.item_encoder import ItemEncoder

ITEM_PUSH = "item_push"  # the PushSource of feature_repo/feature_definitions.py
ITEM_VIEWS = ("item_model_vectors", "item_model_profile")
ACTION = "action"
ITEM_FIELDS = (c.ITEM_ID, c.TITLE, c.TEXT, c.CATEGORY)
MAX_ID_LENGTH = 256


# ---- reading and checking changes -------------------------------------------------------------
def parse_item_file(path: str | Path, action: str) -> list[ItemChange]:
    """Changes from a parquet or CSV file: the items table's columns (only item_id for hide/show/remove)."""
    frame = read_table_file(path, "items")
    if ACTION in frame.columns:
        raise DataError(f"{path}: column {ACTION!r}: the command says what to do (`scenerec items {action}`)")
    records = [
        {str(k): v for k, v in r.items()}
        for r in frame.astype(object).where(frame.notna(), None).to_dict("records")
    ]
    return check_item_records(records, str(path), "row", action, columns=list(map(str, frame.columns)))


def parse_item_lines(body: bytes, source: str = "body") -> list[ItemChange]:
    """Changes from JSON lines (or a JSON array): item fields and an optional `action` (default add)."""
    return check_item_records(read_json_lines(body, source, "item"), source, "line", None)


def check_item_records(
    records: list[dict[str, Any]],
    source: str,
    row_label: str,
    action: str | None,
    columns: list[str] | None = None,
) -> list[ItemChange]:
    """Records -> changes; a DataError naming the row and field of the first bad one."""
    if not records:
        raise DataError(f"{source}: no items (expected {', '.join(ITEM_FIELDS)})")
    allowed = set(ITEM_FIELDS) | ({ACTION} if action is None else set())
    for name in columns or ():
        if name not in allowed:
            raise DataError(f"{source}: unknown column {name!r} (expected {', '.join(sorted(allowed))})")
    if columns is not None and c.ITEM_ID not in columns:
        raise DataError(f"{source}: missing column {c.ITEM_ID}")
    changes = []
    for number, record in enumerate(records, start=1):
        where = f"{source}: {row_label} {number}"
        unknown = sorted(set(record) - allowed)
        if unknown:
            raise DataError(f"{where}: unknown field {unknown[0]!r} (expected {', '.join(sorted(allowed))})")
        kind = record.get(ACTION, "add") if action is None else action
        if kind not in ACTIONS:
            raise DataError(f"{where}, field {ACTION}: {kind!r} (expected one of {', '.join(ACTIONS)})")
        item = record.get(c.ITEM_ID)
        if not isinstance(item, str | int) or isinstance(item, bool) or not str(item).strip():
            raise DataError(f"{where}, field {c.ITEM_ID}: {item!r} (expected a non-empty id)")
        item = str(item).strip()
        if len(item) > MAX_ID_LENGTH:
            raise DataError(f"{where}, field {c.ITEM_ID}: {len(item)} characters (at most {MAX_ID_LENGTH})")
        fields = {}
        for name in (c.TITLE, c.TEXT, c.CATEGORY):
            value = record.get(name)
            if value is not None and not isinstance(value, str):
                raise DataError(f"{where}, field {name}: {value!r} (expected a string)")
            fields[name] = (value or "").strip()
        if kind == "add" and not (fields[c.TEXT] or fields[c.TITLE]):
            raise DataError(
                f"{where}, field {c.TEXT}: empty, and no {c.TITLE} either (a new item is placed by its text)"
            )
        changes.append(
            ItemChange(
                action=kind,
                item_id=item,
                title=fields[c.TITLE],
                text=fields[c.TEXT] or fields[c.TITLE],  # the data contract's fallback
                category=fields[c.CATEGORY] or "unknown",
            )
        )
    return changes


# ---- applying changes -------------------------------------------------------------------------
@dataclass
class ItemResult:
    """What one call did."""

    received: int  # changes received; repeats of an add are counted here only
    added: list[str]
    hidden: list[str]
    shown: list[str]
    removed: list[str]
    seconds: float

    def summary(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "added": len(self.added),
            "hidden": len(self.hidden),
            "shown": len(self.shown),
            "removed": len(self.removed),
            "seconds": round(self.seconds, 4),
        }


class ItemWriter:
    """Applies checked changes to one feature repo: the Feast item rows and the catalogue log."""

    def __init__(
        self,
        store: FeatureStore | None,
        catalogue: CatalogueLog,
        encoder: ItemEncoder,
        trained: set[str] | dict[str, int],
        lock_dir: Path,
        offline: bool = False,
    ) -> None:
        self.store, self.catalogue, self.encoder, self.trained = store, catalogue, encoder, trained
        self.lock_path, self.offline = Path(lock_dir) / ".items.lock", offline
        self._lock = threading.Lock()
        self._state, self._offset = CatalogueState(), 0
        self._views: list[Any] = []
        if store is not None:
            self._views = [
                v for v in store.list_feature_views() if getattr(v.stream_source, "name", None) == ITEM_PUSH
            ]
            if {v.name for v in self._views} != set(ITEM_VIEWS):
                raise ScenerecError(
                    f"feature repo {store.repo_path}: push source {ITEM_PUSH!r} must feed "
                    f"{', '.join(ITEM_VIEWS)} (found {sorted(v.name for v in self._views)}); "
                    "run `scenerec features publish`"
                )

    def state(self) -> CatalogueState:
        """The catalogue log folded, up to what other writers appended (call under the locks)."""
        changes, self._offset = self.catalogue.read_from(self._offset)
        for change in changes:
            self._state.apply(change)
        return self._state

    def apply(self, changes: list[ItemChange], source: str, row_label: str = "line") -> ItemResult:
        """Check, embed, write and log `changes` (see the module's steps). Adding an item again with
        the same fields changes nothing (a retried call is harmless)."""
        started = time.perf_counter()
        received = len(changes)
        with self._lock, file_lock(self.lock_path):
            state = self.state()
            state.check(changes, self.trained, source, row_label)
            changes = [ch for ch in changes if not (ch.action == "add" and state.unchanged(ch))]
            adds = [i for i, change in enumerate(changes) if change.action == "add"]
            embeddings = self.encoder.embed([changes[i].text for i in adds])
            at = datetime.now(UTC)
            stamped = list(changes)
            for row, i in enumerate(adds):
                stamped[i] = replace(changes[i], encoder=self.encoder.fingerprint, embedding=embeddings[row])
            stamped = [replace(change, at=at.isoformat()) for change in stamped]
            if adds and self.store is not None:
                self._write([stamped[i] for i in adds], embeddings, at)
            self.catalogue.append(stamped)
            self.state()
        done = {kind: [ch.item_id for ch in changes if ch.action == kind] for kind in ACTIONS}
        return ItemResult(
            received,
            done["add"],
            done["hide"],
            done["show"],
            done["remove"],
            time.perf_counter() - started,
        )

    def _rows(self, adds: list[ItemChange], embeddings: np.ndarray, at: datetime) -> pd.DataFrame:
        vectors = self.encoder.tables(embeddings).vectors()
        return pd.DataFrame(
            {
                ITEM_ID: [a.item_id for a in adds],
                "vector": list(vectors.astype(np.float32)),
                "text_embedding": list(embeddings.astype(np.float32)),
                c.CATEGORY: [a.category for a in adds],
                "train_count": np.zeros(len(adds), np.int64),
                "popularity_bucket": np.zeros(len(adds), np.int64),
                "cold": np.ones(len(adds), bool),
                EVENT_TIMESTAMP: pd.Timestamp(at),
            }
        )

    def _write(self, adds: list[ItemChange], embeddings: np.ndarray, at: datetime) -> None:
        assert self.store is not None
        rows = self._rows(adds, embeddings, at)
        write_online(self.store, self._views, rows, ITEM_ID, "while adding items")
        if self.offline:
            view = self._views[0]
            path = Path(self.store.repo_path) / view.batch_source.path
            existing = pd.read_parquet(path)
            write_parquet(pd.concat([existing, rows[existing.columns]], ignore_index=True), path)
