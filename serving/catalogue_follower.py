"""Follows the catalogue log (`scenerec.catalogue`) for one runtime: its overlay of added and
hidden items, rebuilt from what was appended since the last look.

`refresh` costs one `stat` when nothing changed, so the predictor calls it once per call, before
validating it: every process (each `--workers` worker, each replica on a shared volume) serves a
change from its next call on. An added item's tables come from its logged text embedding through the
runtime's own `item_tower.onnx` (re-embedded from its text when the served model's encoder is
another one), so a swapped-in model places the same items with its own weights.
"""

from __future__ import annotations

import logging
import threading

import numpy as np

from scenerec.catalogue import CatalogueLog, CatalogueState, ItemChange
from scenerec.item_encoder import ItemEncoder, ItemTables
from serving.runtime import Overlay, Runtime

log = logging.getLogger(__name__)


class CatalogueFollower:
    def __init__(self, runtime: Runtime, catalogue: CatalogueLog, threads: int | None = 1) -> None:
        self.runtime, self.catalogue = runtime, catalogue
        self.encoder = (
            ItemEncoder(runtime.model_dir, runtime.manifest, threads) if runtime.accepts_new_items else None
        )
        self.state = CatalogueState()
        self._offset = 0
        self._rows: dict[str, tuple[ItemChange, ItemTables]] = {}  # per added item, its tables
        self._lock = threading.Lock()
        self._warned = False

    def refresh(self) -> bool:
        """Read what was appended and replace the runtime's overlay; False when nothing was."""
        if self.catalogue.size() == self._offset:
            return False
        with self._lock:
            changes, offset = self.catalogue.read_from(self._offset)
            if offset == self._offset:
                return False  # only a line still being written
            for change in changes:
                self.state.apply(change)
            self._offset = offset
            self.runtime.overlay = self._overlay()
        overlay = self.runtime.overlay
        log.info("catalogue: %d added and %d hidden items served", len(overlay), len(overlay.hidden))
        return True

    def _overlay(self) -> Overlay:
        rt = self.runtime
        added = self.state.added_for(rt.item_index)
        if added and self.encoder is None:
            if not self._warned:
                log.warning(
                    "%s cannot place added items (no item_tower/fresh_ranker graph): %d not served",
                    rt.manifest["model_version"],
                    len(added),
                )
                self._warned = True
            added = []
        if self.encoder is not None:
            self._place([a for a in added if self._rows.get(a.item_id, (None,))[0] is not a])
        hidden = np.array(sorted(rt.item_index[i] for i in self.state.hidden if i in rt.item_index), np.int64)
        tables = (
            ItemTables.concat([self._rows[a.item_id][1] for a in added])
            if added
            else ItemTables.empty(rt.manifest["dims"])
        )
        return Overlay.build(
            [a.item_id for a in added],
            tables,
            hidden,
            rt.n_items,
            titles=[a.title or a.item_id for a in added],
            categories=[a.category or "unknown" for a in added],
        )

    def _place(self, changes: list[ItemChange]) -> None:
        """Tables of newly added items in one item-tower run (texts re-embedded if need be)."""
        if not changes:
            return
        assert self.encoder is not None
        width = int(self.runtime.manifest["dims"]["text"])
        embeddings = np.zeros((len(changes), width), np.float32)
        stale = []
        for row, change in enumerate(changes):
            usable = change.embedding is not None and change.encoder == self.encoder.fingerprint
            if usable and change.embedding is not None and len(change.embedding) == width:
                embeddings[row] = change.embedding
            else:
                stale.append(row)
        if stale:
            embeddings[stale] = self.encoder.embed([changes[row].text for row in stale])
        tables = self.encoder.tables(embeddings)
        for row, change in enumerate(changes):
            self._rows[change.item_id] = (change, tables.take(np.array([row])))
