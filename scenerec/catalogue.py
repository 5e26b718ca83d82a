"""The live catalogue: items added, hidden, shown or removed after a model was trained.

Every change is one line of an append-only JSON-lines log in the feature repo,
`<repo>/data/items/catalogue.jsonl`, written by `scenerec items …` and by the predictor's items
route, and followed by every predictor process (each worker reads what was appended since it last
looked: one `stat` per scored batch). The log is the source of truth; the Feast item views hold
the added items' vectors for everyone else.

    add     a new item (item_id, title, text, category) with its frozen text embedding (base64
            float32) and the fingerprint of the encoder that made it; adding an added item again
            replaces its text. An id of the model's own catalogue cannot be added.
    hide    out of stock: never in an answer until `show` (any item, trained or added)
    show    back in answers
    remove  an added item is forgotten; a trained item cannot leave the exported graphs, so it is
            hidden (until `show`, or a model trained without it)

The log outlives models: a model trained after an item was added has it in its own catalogue,
and the add is then skipped for it (`CatalogueState.added_for`).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scenerec.errors import DataError

log = logging.getLogger(__name__)

CATALOGUE_LOG = "data/items/catalogue.jsonl"
ACTIONS = ("add", "hide", "show", "remove")


@dataclass(frozen=True)
class ItemChange:
    """One line of the catalogue log."""

    action: str
    item_id: str
    title: str = ""
    text: str = ""
    category: str = "unknown"
    at: str = ""  # ISO 8601 UTC, when it was accepted
    encoder: str = ""  # fingerprint of the encoder that made `embedding`
    embedding: np.ndarray | None = field(default=None, compare=False)

    def to_json(self) -> str:
        record: dict[str, Any] = {"action": self.action, "item_id": self.item_id, "at": self.at}
        if self.action == "add":
            assert self.embedding is not None
            vector = np.ascontiguousarray(self.embedding, dtype="<f4")
            record.update(
                title=self.title,
                text=self.text,
                category=self.category,
                encoder=self.encoder,
                embedding=base64.b64encode(vector.tobytes()).decode(),
            )
        return json.dumps(record, ensure_ascii=False)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ItemChange:
        raw = record.get("embedding")
        vector = np.frombuffer(base64.b64decode(raw), dtype="<f4").astype(np.float32) if raw else None
        return cls(
            action=str(record["action"]),
            item_id=str(record["item_id"]),
            title=str(record.get("title", "")),
            text=str(record.get("text", "")),
            category=str(record.get("category", "unknown")),
            at=str(record.get("at", "")),
            encoder=str(record.get("encoder", "")),
            embedding=vector,
        )


class CatalogueLog:
    """The append-only log file; one `append` is one fsynced write of whole lines.

    A crash can leave only an unacknowledged partial last line: `read_from` stops before it (its
    offset stays there), so a later complete append is read whole.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    @classmethod
    def of_repo(cls, repo: str | Path) -> CatalogueLog:
        """The log under a feature repo, or under a `--state_dir` (the same layout)."""
        return cls(Path(repo) / CATALOGUE_LOG)

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def append(self, changes: Iterable[ItemChange]) -> None:
        text = "".join(change.to_json() + "\n" for change in changes)
        if not text:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(descriptor, text.encode())
                os.fsync(descriptor)
            finally:
                os.close(descriptor)

    def read_from(self, offset: int = 0) -> tuple[list[ItemChange], int]:
        """The complete lines after byte `offset`, and the offset after the last of them."""
        try:
            with self.path.open("rb") as handle:
                handle.seek(offset)
                data = handle.read()
        except FileNotFoundError:
            return [], 0
        end = data.rfind(b"\n") + 1  # an unterminated last line is a write in progress or cut off
        changes = []
        for number, line in enumerate(data[:end].split(b"\n"), start=1):
            if not line.strip():
                continue
            try:
                changes.append(ItemChange.from_record(json.loads(line)))
            except (json.JSONDecodeError, KeyError, ValueError) as e:
                log.warning(
                    "%s: line %d after byte %d is unreadable, skipped (%s)", self.path, number, offset, e
                )
        return changes, offset + end


@dataclass
class CatalogueState:
    """What the log says, folded: the added items (latest add of each, in order) and hidden ids."""

    added: dict[str, ItemChange] = field(default_factory=dict)
    hidden: set[str] = field(default_factory=set)

    def apply(self, change: ItemChange) -> None:
        if change.action == "add":
            self.added.pop(change.item_id, None)  # re-added: moves to the end (its new position)
            self.added[change.item_id] = change
            self.hidden.discard(change.item_id)
        elif change.action == "hide":
            self.hidden.add(change.item_id)
        elif change.action == "show":
            self.hidden.discard(change.item_id)
        elif change.action == "remove":
            if self.added.pop(change.item_id, None) is None:
                self.hidden.add(change.item_id)  # a trained item: hidden
            else:
                self.hidden.discard(change.item_id)

    @classmethod
    def read(cls, catalogue: CatalogueLog) -> CatalogueState:
        state = cls()
        for change in catalogue.read_from(0)[0]:
            state.apply(change)
        return state

    def added_for(self, trained: set[str] | dict[str, int]) -> list[ItemChange]:
        """Added items a model does not already hold, visible ones only, in the order added."""
        return [c for i, c in self.added.items() if i not in trained and i not in self.hidden]

    def unchanged(self, change: ItemChange) -> bool:
        """An add of an item already added with the same fields, and visible: a repeat, not a change."""
        current = self.added.get(change.item_id)
        same = current is not None and change.item_id not in self.hidden
        return same and (current.title, current.text, current.category) == (  # type: ignore[union-attr]
            change.title,
            change.text,
            change.category,
        )

    def check(
        self,
        changes: list[ItemChange],
        trained: set[str] | dict[str, int],
        source: str,
        row_label: str = "line",
    ) -> None:
        """Refuse changes that make no sense against this state, naming the row of each."""
        problems = []
        state = CatalogueState(dict(self.added), set(self.hidden))
        for number, change in enumerate(changes, start=1):
            where, item = f"{source}: {row_label} {number}: item_id {change.item_id!r}", change.item_id
            known = item in trained or item in state.added
            if change.action == "add" and item in trained:
                problems.append(f"{where}: already in the model's catalogue (hide or show it instead)")
            elif change.action in ("hide", "remove") and not known:
                problems.append(f"{where}: not in the catalogue (neither trained nor added)")
            elif change.action == "show" and item not in state.hidden:
                problems.append(f"{where}: not hidden" if known else f"{where}: not in the catalogue")
            else:
                state.apply(change)
        if problems:
            raise DataError(problems)
