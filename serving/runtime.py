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
from scenerec.model.inputs import hour_bucket, weekday
from scenerec.onnx_runtime import ProviderReport, create_session

log = logging.getLogger(__name__)

SERVING_GRAPHS = ("user_tower", "retrieval", "ranker")
PART_NAMES = ("collaborative", "text", "scene", "item_item")


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
        self._local = threading.local()
        self._hour_bucket, self._weekday = hour_bucket, weekday

    def item_indices(self, item_ids: list[str]) -> np.ndarray:
        """Catalogue indices of item ids, -1 for an id the model does not know."""
        lookup = self.item_index.get
        return np.fromiter((lookup(item, -1) for item in item_ids), dtype=np.int64, count=len(item_ids))

    @classmethod
    def from_model_dir(cls, model_dir: str | Path, device: str = "cpu", threads: int | None = 1) -> Runtime:
        """Load and verify (file hashes, graph signatures) a model directory; refuses any mismatch."""
        model_dir = Path(model_dir)
        manifest = read_manifest(model_dir)
        sessions, providers = {}, {}
        for name in SERVING_GRAPHS:
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

    def recommend(self, queries: list[Query], explain: bool = False) -> list[Ranked]:
        """Top-k for a batch of queries in one run of each graph."""
        # pad to the batch's longest history, not to max_history: the tower's history axis is
        # dynamic and left padding does not change its output (positions count from the end)
        b = len(queries)
        length = max(1, min(self.max_history, max(len(q.history) for q in queries)))
        hist = np.full((b, length), self.n_items, dtype=np.int64)
        hist_scenes = np.full((b, length), self.n_scenes, dtype=np.int64)
        for row, q in enumerate(queries):
            recent, recent_scenes = q.history[-length:], q.history_scenes[-length:]
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
        candidates, valid = self._candidates(queries, query, weight, hist)
        self.timings["retrieval"] = time.perf_counter() - clock
        clock = time.perf_counter()
        score, parts, p_conv = self.sessions["ranker"].run(
            ["score", "parts", "p_conversion"],
            {
                "query_cf": cf,
                "query_text": text,
                "query_scene": scene,
                "context": context,
                "item_item_weight": weight,
                "history": hist,
                "candidates": candidates,
            },
        )
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
        self, queries: list[Query], query: np.ndarray, weight: np.ndarray, history: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """[B, C] candidate indices and which are real: given candidates, or retrieval's top items.

        Padding uses index 0 with valid=False (the ranker's tables have no pad row); excluded items
        and retrieval's -inf tail are never valid.
        """
        if all(q.candidates is not None for q in queries):
            lists = [
                np.setdiff1d(q.candidates, q.exclude) if len(q.exclude) else np.unique(q.candidates)
                for q in queries
                if q.candidates is not None
            ]
            width = max(1, max(len(c) for c in lists))
            candidates = np.zeros((len(queries), width), dtype=np.int64)
            valid = np.zeros((len(queries), width), dtype=bool)
            for row, allowed in enumerate(lists):
                candidates[row, : len(allowed)] = allowed
                valid[row, : len(allowed)] = True
            return candidates, valid
        depth = min(self.n_items, max(self.retrieval_depth, max(q.k for q in queries)))
        width = max(1, max(len(q.exclude) for q in queries))
        exclude = np.full((len(queries), width), self.n_items, dtype=np.int64)
        for row, q in enumerate(queries):
            exclude[row, : len(q.exclude)] = q.exclude
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
        return top, np.isfinite(top_scores)
