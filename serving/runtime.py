"""The scoring core of the predictor: ONNX Runtime sessions and item tables, no HTTP, no Feast.

Built once at load from a model directory alone (`from_model_dir`), verified against its manifest.
`recommend` takes a batch of already-resolved requests (history as item indices) and runs
user tower -> retrieval (whole catalogue, history excluded) -> ranker (top candidates) -> top-k.

Nothing here imports torch (1.5 s): a `--workers` process imports this module to unpickle the
predictor and must answer KServe's 5 s liveness ping in time.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scenerec.artifact import check_signature, read_manifest
from scenerec.item_encoder import ItemTables
from scenerec.model.inputs import hour_bucket, weekday
from scenerec.onnx_runtime import ProviderReport, create_session

log = logging.getLogger(__name__)

SERVING_GRAPHS = ("user_tower", "retrieval", "ranker")
OPTIONAL_GRAPHS = ("fresh_ranker",)  # items added after export (models trained with text)
PART_NAMES = ("collaborative", "text", "scene", "item_item")


@dataclass(frozen=True)
class Overlay:
    """Items added after export and hidden items, over a runtime's exported catalogue.

    Added items get indices N, N+1, … after the N exported ones, in the order added; a snapshot
    is replaced whole (`Runtime.overlay = …`), never changed, so a batch reads one state.
    """

    ids: np.ndarray  # [M] object
    tables: ItemTables
    hidden: np.ndarray  # exported item indices that are hidden (int64)
    index: dict[str, int] = field(default_factory=dict)  # id -> N + position
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))  # [M, Q]

    @classmethod
    def build(cls, ids: list[str], tables: ItemTables, hidden: np.ndarray, n_items: int) -> Overlay:
        index = {item: n_items + k for k, item in enumerate(ids)}
        return cls(np.asarray(ids, dtype=object), tables, hidden.astype(np.int64), index, tables.vectors())

    @classmethod
    def empty(cls, dims: dict[str, int]) -> Overlay:
        return cls.build([], ItemTables.empty(dims), np.zeros(0, np.int64), dims["items"])

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class Query:
    """One resolved request: indices, not ids (the predictor maps ids with the runtime's maps)."""

    history: np.ndarray  # item indices, oldest first
    history_scenes: np.ndarray  # scene index of each history item
    scene: int
    device: int
    timestamp: float  # seconds since the epoch, UTC
    k: int
    candidates: np.ndarray | None = None  # rank only these item indices
    exclude: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


@dataclass
class Ranked:
    items: np.ndarray  # [k] item indices, best first
    scores: np.ndarray  # [k]
    parts: np.ndarray  # [k, 4] collaborative, text, scene, item-item
    p_conversion: np.ndarray  # [k]


class Runtime:
    """Sessions, id maps and sizes of one model directory."""

    def __init__(
        self,
        model_dir: Path,
        sessions: dict[str, Any],
        providers: dict[str, ProviderReport],
        manifest: dict[str, Any],
        item_ids: list[str],
        scenes: list[str],
        devices: list[str],
    ) -> None:
        self.model_dir, self.sessions, self.providers, self.manifest = (
            model_dir,
            sessions,
            providers,
            manifest,
        )
        dims = manifest["dims"]
        self.n_items, self.n_scenes, self.n_devices = dims["items"], dims["scenes"], dims["devices"]
        self.max_history, self.hour_buckets = dims["max_history"], dims["hour_buckets"]
        self.item_ids = np.asarray(item_ids, dtype=object)
        # a dict: a request's ~30 history ids resolve ~50x faster than through pd.Index.get_indexer
        self.item_index = {item: k for k, item in enumerate(item_ids)}
        self.scenes, self.devices = list(scenes), list(devices)
        self.scene_index = {name: k for k, name in enumerate(scenes)}
        self.device_index = {name: k for k, name in enumerate(devices)}
        self.default_scene = self.scene_index[manifest["vocab"]["default_scene"]]
        self.retrieval_depth = 200  # candidates the ranker re-scores; the predictor sets it from a flag
        self.overlay = Overlay.empty(dims)
        self._local = threading.local()
        self._hour_bucket, self._weekday = hour_bucket, weekday

    def item_indices(self, item_ids: list[str], overlay: Overlay | None = None) -> np.ndarray:
        """Catalogue indices of item ids (added items: N and up), -1 for an id the model does not know."""
        lookup, added = self.item_index.get, (overlay if overlay is not None else self.overlay).index.get
        return np.fromiter(
            (lookup(item, added(item, -1)) for item in item_ids), dtype=np.int64, count=len(item_ids)
        )

    def item_id(self, index: int, overlay: Overlay | None = None) -> str:
        if index < self.n_items:
            return str(self.item_ids[index])
        return str((overlay if overlay is not None else self.overlay).ids[index - self.n_items])

    @property
    def accepts_new_items(self) -> bool:
        return "fresh_ranker" in self.sessions

    @classmethod
    def from_model_dir(cls, model_dir: str | Path, device: str = "cpu", threads: int | None = 1) -> Runtime:
        """Load and verify (file hashes, graph signatures) a model directory; refuses any mismatch."""
        model_dir = Path(model_dir)
        manifest = read_manifest(model_dir)
        sessions, providers = {}, {}
        for name in (*SERVING_GRAPHS, *(g for g in OPTIONAL_GRAPHS if g in manifest["graphs"])):
            session, report = create_session(
                model_dir / manifest["graphs"][name]["file"], device=device, threads=threads
            )
            check_signature(name, session, manifest["graphs"][name])
            sessions[name], providers[name] = session, report
        maps = {
            name: json.loads((model_dir / "id_maps" / f"{name}.json").read_text())
            for name in ("items", "scenes", "devices")
        }
        runtime = cls(
            model_dir, sessions, providers, manifest, maps["items"], maps["scenes"], maps["devices"]
        )
        log.info(
            "loaded %s (%d items) on %s",
            manifest["model_version"],
            runtime.n_items,
            providers["user_tower"].actual,
        )
        return runtime

    @property
    def timings(self) -> dict[str, float]:
        """Seconds per graph stage of this thread's last `recommend` (the lanes score concurrently)."""
        found: dict[str, float] | None = getattr(self._local, "timings", None)
        if found is None:
            found = self._local.timings = {}
        return found

    @property
    def provider(self) -> str:
        return self.providers["user_tower"].actual

    def recommend(
        self, queries: list[Query], explain: bool = False, overlay: Overlay | None = None
    ) -> list[Ranked]:
        """Top-k for a batch of queries in one run of each graph (and of the fresh ranker when an
        added item is among the candidates). Indices N and up are `overlay`'s added items."""
        overlay = overlay if overlay is not None else self.overlay
        n = self.n_items
        # the user tower knows the exported items only: an added item in a history is excluded
        # from the answer but not read (it has no ID row in the tower's tables yet)
        histories = [q.history[q.history < n] for q in queries]
        history_scenes = [q.history_scenes[q.history < n] for q in queries]
        # pad to the batch's longest history, not to max_history: the tower's history axis is
        # dynamic and left padding does not change its output (positions count from the end)
        b = len(queries)
        length = max(1, min(self.max_history, max(len(h) for h in histories)))
        hist = np.full((b, length), n, dtype=np.int64)
        hist_scenes = np.full((b, length), self.n_scenes, dtype=np.int64)
        for row, (items, scenes) in enumerate(zip(histories, history_scenes, strict=True)):
            recent, recent_scenes = items[-length:], scenes[-length:]
            if len(recent):
                hist[row, -len(recent) :] = recent
                hist_scenes[row, -len(recent) :] = recent_scenes
        seconds = np.array([q.timestamp for q in queries])
        inputs = {
            "hist_items": hist,
            "hist_scenes": hist_scenes,
            "scene": np.array([q.scene for q in queries], dtype=np.int64),
            "device": np.array([q.device for q in queries], dtype=np.int64),
            "hour": self._hour_bucket(seconds.astype(np.int64), self.hour_buckets),
            "weekday": self._weekday(seconds.astype(np.int64)),
        }
        clock = time.perf_counter()
        query, cf, text, scene, context, weight = self.sessions["user_tower"].run(
            ["query", "query_cf", "query_text", "query_scene", "context", "item_item_weight"], inputs
        )
        self.timings["user_tower"] = time.perf_counter() - clock
        clock = time.perf_counter()
        candidates, valid = self._candidates(queries, query, weight, hist, overlay)
        self.timings["retrieval"] = time.perf_counter() - clock
        clock = time.perf_counter()
        fresh = candidates >= n
        score, parts, p_conv = self.sessions["ranker"].run(
            ["score", "parts", "p_conversion"],
            {
                "query_cf": cf,
                "query_text": text,
                "query_scene": scene,
                "context": context,
                "item_item_weight": weight,
                "history": hist,
                "candidates": np.where(fresh, 0, candidates),
            },
        )
        if fresh.any():
            tables = overlay.tables
            fresh_score, fresh_parts, fresh_conv = self.sessions["fresh_ranker"].run(
                ["score", "parts", "p_conversion"],
                {
                    "query_cf": cf,
                    "query_text": text,
                    "query_scene": scene,
                    "context": context,
                    "item_collaborative": tables.collaborative,
                    "item_raw_text": tables.raw_text,
                    "item_text": tables.text,
                    "item_scene": tables.scene,
                    "item_bias": tables.bias,
                    "candidates": np.where(fresh, candidates - n, 0),
                },
            )
            score = np.where(fresh, fresh_score, score)
            parts = np.where(fresh[..., None], fresh_parts, parts)
            p_conv = np.where(fresh, fresh_conv, p_conv)
        score = np.where(valid, score, -np.inf)
        self.timings["ranking"] = time.perf_counter() - clock
        out = []
        for row, q in enumerate(queries):
            keep = min(q.k, int(valid[row].sum()))
            order = np.argsort(-score[row], kind="stable")[:keep]
            out.append(
                Ranked(candidates[row, order], score[row, order], parts[row, order], p_conv[row, order])
            )
        return out

    def _candidates(
        self,
        queries: list[Query],
        query: np.ndarray,
        weight: np.ndarray,
        history: np.ndarray,
        overlay: Overlay,
    ) -> tuple[np.ndarray, np.ndarray]:
        """[B, C] candidate indices and which are real: given candidates, or retrieval's top items.

        Padding uses index 0 with valid=False (the ranker's tables have no pad row); excluded and
        hidden items and retrieval's -inf tail are never valid. Added items (N and up) are scored
        against the query beside the graph (one product with their retrieval vectors; they have
        no item-item part) and merged with its top items.
        """
        n, hidden = self.n_items, overlay.hidden
        if all(q.candidates is not None for q in queries):
            lists = []
            for q in queries:
                assert q.candidates is not None
                drop = np.concatenate([q.exclude, hidden]) if len(hidden) else q.exclude
                lists.append(np.setdiff1d(q.candidates, drop) if len(drop) else np.unique(q.candidates))
            width = max(1, max(len(c) for c in lists))
            candidates = np.zeros((len(queries), width), dtype=np.int64)
            valid = np.zeros((len(queries), width), dtype=bool)
            for row, allowed in enumerate(lists):
                candidates[row, : len(allowed)] = allowed
                valid[row, : len(allowed)] = True
            return candidates, valid
        depth = min(n, max(self.retrieval_depth, max(q.k for q in queries)))
        excluded = [np.concatenate([q.exclude[q.exclude < n], hidden]) for q in queries]
        width = max(1, max(len(e) for e in excluded))
        exclude = np.full((len(queries), width), n, dtype=np.int64)
        for row, items in enumerate(excluded):
            exclude[row, : len(items)] = items
        top, top_scores = self.sessions["retrieval"].run(
            ["top_items", "top_scores"],
            {
                "query": query,
                "item_item_weight": weight,
                "history": history,
                "exclude": exclude,
                "k": np.array([depth], dtype=np.int64),
            },
        )
        if len(overlay) == 0:
            return top, np.isfinite(top_scores)
        added = query @ overlay.vectors.T  # [B, M]
        for row, q in enumerate(queries):
            seen = q.exclude[q.exclude >= n] - n
            added[row, seen[seen < len(overlay)]] = -np.inf
        indices = np.concatenate([top, np.broadcast_to(n + np.arange(len(overlay)), added.shape)], axis=1)
        scores = np.concatenate([top_scores, added], axis=1)
        keep = min(scores.shape[1], depth)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :keep]
        return np.take_along_axis(indices, order, 1), np.isfinite(np.take_along_axis(scores, order, 1))
