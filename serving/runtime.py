"""The scoring core of the predictor: ONNX Runtime sessions and item tables, no HTTP, no Feast.

Built once at load from a model directory alone (`from_model_dir`), verified against its manifest.
`recommend` takes a batch of already-resolved requests (history as item indices) and runs
user tower -> retrieval (whole catalogue, history excluded) -> ranker (top candidates) -> top-k.

Nothing here imports torch (1.5 s): a `--workers` process imports this module to unpickle the
predictor and must answer KServe's 5 s liveness ping in time.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scenerec.artifact import check_signature, read_manifest
from scenerec.config import Config
from scenerec.diversity import diversify, similarity_vectors, unit_rows
from scenerec.item_encoder import ItemTables
from scenerec.model.inputs import hour_bucket, weekday
from scenerec.onnx_runtime import ProviderReport, create_session
from serving.ann_retrieval import AnnRetrieval

log = logging.getLogger(__name__)

SERVING_GRAPHS = ("user_tower", "retrieval", "ranker")
OPTIONAL_GRAPHS = ("fresh_ranker",)  # items added after export (models trained with text)
PART_NAMES = ("collaborative", "text", "scene", "item_item")
RETRIEVAL = ("auto", "exact")  # auto: the model's ANN index when it has one


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
    titles: np.ndarray = field(default_factory=lambda: np.zeros(0, object))  # [M]
    categories: np.ndarray = field(default_factory=lambda: np.zeros(0, object))  # [M] names

    @classmethod
    def build(
        cls,
        ids: list[str],
        tables: ItemTables,
        hidden: np.ndarray,
        n_items: int,
        titles: list[str] | None = None,
        categories: list[str] | None = None,
    ) -> Overlay:
        index = {item: n_items + k for k, item in enumerate(ids)}
        return cls(
            np.asarray(ids, dtype=object),
            tables,
            hidden.astype(np.int64),
            index,
            tables.vectors(),
            np.asarray(titles if titles is not None else list(ids), dtype=object),
            np.asarray(categories if categories is not None else ["unknown"] * len(ids), dtype=object),
        )

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
    categories: frozenset[str] | None = None  # answer only items of these categories
    diversity: float = 0.0  # 0: by relevance; up to 1: spread by MMR (scenerec/diversity.py)


@dataclass
class Ranked:
    items: np.ndarray  # [k] item indices, best first
    scores: np.ndarray  # [k]
    parts: np.ndarray  # [k, 4] collaborative, text, scene, item-item
    p_conversion: np.ndarray  # [k]


@dataclass(frozen=True)
class ItemInfo:
    """What answers show of the exported items and what diversity compares (items.parquet)."""

    titles: np.ndarray  # [N] object
    categories: np.ndarray  # [N] object: category names
    unit_vectors: np.ndarray  # [N, Q-1] retrieval vectors without the bias column, length 1

    @functools.cached_property
    def category_set(self) -> frozenset[str]:
        return frozenset(str(c) for c in self.categories)

    @classmethod
    def read(cls, model_dir: Path, item_ids: list[str]) -> ItemInfo:
        """From the model's items.parquet (hashed in its manifest), in the id map's order."""
        import pyarrow.parquet as pq

        path = model_dir / "items.parquet"
        table = pq.read_table(path)
        names = set(table.column_names)
        ids = [str(v) for v in table.column("item_id").to_pylist()]
        if ids != [str(v) for v in item_ids]:
            raise ValueError(f"{path}: its item_id column is not in id_maps/items.json's order")
        vectors = np.asarray(table.column("vector").to_pylist(), dtype=np.float32).reshape(len(ids), -1)
        titles = table.column("title").to_pylist() if "title" in names else ids  # older models: no title
        return cls(
            np.asarray([str(t) for t in titles], dtype=object),
            np.asarray([str(c) for c in table.column("category").to_pylist()], dtype=object),
            similarity_vectors(vectors),
        )


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
        info: ItemInfo | None = None,
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
        config = Config.from_dict(manifest["config"])
        self.ranking, self.retrieval_config = config.ranking, config.retrieval
        self.ann: AnnRetrieval | None = None  # from_model_dir loads the model's index, if it has one
        self.info = info or ItemInfo(
            self.item_ids.copy(), np.full(self.n_items, "unknown", dtype=object), np.zeros((self.n_items, 1))
        )
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

    def title(self, index: int, overlay: Overlay | None = None) -> str:
        if index < self.n_items:
            return str(self.info.titles[index])
        return str((overlay if overlay is not None else self.overlay).titles[index - self.n_items])

    def category(self, index: int, overlay: Overlay | None = None) -> str:
        if index < self.n_items:
            return str(self.info.categories[index])
        return str((overlay if overlay is not None else self.overlay).categories[index - self.n_items])

    def categories_of(self, indices: np.ndarray, overlay: Overlay) -> np.ndarray:
        """Category names of catalogue indices (added items: N and up), same shape."""
        indices = np.asarray(indices, dtype=np.int64)
        if not len(overlay):
            return self.info.categories[indices]
        fresh = indices >= self.n_items
        names = self.info.categories[np.where(fresh, 0, indices)]
        names[fresh] = overlay.categories[indices[fresh] - self.n_items]
        return names

    def known_categories(self, overlay: Overlay | None = None) -> frozenset[str]:
        overlay = overlay if overlay is not None else self.overlay
        return self.info.category_set | {str(c) for c in overlay.categories}

    @property
    def accepts_new_items(self) -> bool:
        return "fresh_ranker" in self.sessions

    @classmethod
    def from_model_dir(
        cls, model_dir: str | Path, device: str = "cpu", threads: int | None = 1, retrieval: str = "auto"
    ) -> Runtime:
        """Load and verify (file hashes, graph signatures) a model directory; refuses any mismatch.

        `retrieval`: "auto" searches the model's ANN index when it has one (scenerec/ann.py) and
        scores the whole catalogue in `retrieval.onnx` otherwise; "exact" always uses the graph."""
        if retrieval not in RETRIEVAL:
            raise ValueError(f"retrieval must be one of {RETRIEVAL}, got {retrieval!r}")
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
        info = ItemInfo.read(model_dir, maps["items"])
        runtime = cls(
            model_dir, sessions, providers, manifest, maps["items"], maps["scenes"], maps["devices"], info
        )
        if retrieval == "auto":
            runtime.ann = AnnRetrieval.load(model_dir, manifest, runtime.retrieval_config.ann_overfetch)
        log.info(
            "loaded %s (%d items) on %s, %s retrieval",
            manifest["model_version"],
            runtime.n_items,
            providers["user_tower"].actual,
            "ANN" if runtime.ann is not None else "exact",
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
        orders = self._order(queries, candidates, score, valid, overlay)
        self.timings["ranking"] = time.perf_counter() - clock
        out = []
        for row, q in enumerate(queries):
            keep = min(q.k, int(valid[row].sum()))
            order = orders[row][:keep]
            out.append(
                Ranked(candidates[row, order], score[row, order], parts[row, order], p_conv[row, order])
            )
        return out

    def _order(
        self,
        queries: list[Query],
        candidates: np.ndarray,
        score: np.ndarray,
        valid: np.ndarray,
        overlay: Overlay,
    ) -> list[np.ndarray]:
        """Each row's candidate positions, answer order first: by score, or picked by MMR from
        the best `ranking.diversity_pool` where the request asked for diversity."""
        by_score = np.argsort(-score, axis=1, kind="stable")
        spread = [row for row, q in enumerate(queries) if q.diversity > 0]
        orders = list(by_score)
        if not spread:
            return orders
        pool = by_score[spread, : max(self.ranking.diversity_pool, max(queries[r].k for r in spread))]
        items = np.take_along_axis(candidates[spread], pool, 1)
        names = self.categories_of(items, overlay)
        _, codes = np.unique(names.astype(str), return_inverse=True)
        picks = diversify(
            np.take_along_axis(score[spread], pool, 1),
            np.take_along_axis(valid[spread], pool, 1),
            codes.reshape(items.shape),
            self._unit_vectors(items, overlay),
            max(queries[r].k for r in spread),
            np.array([queries[r].diversity for r in spread]),
            self.ranking.diversity_category_weight,
        )
        for n, row in enumerate(spread):
            chosen = picks[n][picks[n] >= 0]
            orders[row] = pool[n, chosen]
        return orders

    def _unit_vectors(self, items: np.ndarray, overlay: Overlay) -> np.ndarray:
        """[..., Q-1] unit-length similarity vectors of catalogue indices (added items: N and up)."""
        exported = self.info.unit_vectors
        if not len(overlay):
            return exported[items]
        fresh = items >= self.n_items
        out = exported[np.where(fresh, 0, items)]
        out[fresh] = unit_rows(overlay.vectors[items[fresh] - self.n_items, : exported.shape[1]])
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
        hidden items, items outside a request's `categories` and retrieval's -inf tail are never
        valid. A category filter over-fetches: retrieval goes 4x deeper until each filtered row
        has k allowed items or the whole catalogue was searched, then keeps the best `depth`.
        """
        n, hidden = self.n_items, overlay.hidden
        if all(q.candidates is not None for q in queries):
            lists = []
            for q in queries:
                assert q.candidates is not None
                drop = np.concatenate([q.exclude, hidden]) if len(hidden) else q.exclude
                allowed = np.setdiff1d(q.candidates, drop) if len(drop) else np.unique(q.candidates)
                if q.categories is not None:
                    allowed = allowed[np.isin(self.categories_of(allowed, overlay), list(q.categories))]
                lists.append(allowed)
            width = max(1, max(len(c) for c in lists))
            candidates = np.zeros((len(queries), width), dtype=np.int64)
            valid = np.zeros((len(queries), width), dtype=bool)
            for row, allowed in enumerate(lists):
                candidates[row, : len(allowed)] = allowed
                valid[row, : len(allowed)] = True
            return candidates, valid
        depth = min(n, max(self.retrieval_depth, max(q.k for q in queries)))
        top, scores = self._retrieve(queries, query, weight, history, overlay, depth)
        if all(q.categories is None for q in queries):
            keep = min(scores.shape[1], depth)
            return top[:, :keep], np.isfinite(scores[:, :keep])
        wide = depth
        while True:
            valid = np.isfinite(scores) & self._allowed(queries, top, overlay)
            short = any(q.categories is not None and valid[r].sum() < q.k for r, q in enumerate(queries))
            if not short or wide >= n:
                break
            wide = min(n, wide * 4)
            top, scores = self._retrieve(queries, query, weight, history, overlay, wide)
        # the best `depth` valid entries of each row, in retrieval order
        order = np.argsort(~valid, axis=1, kind="stable")[:, :depth]
        return np.take_along_axis(top, order, 1), np.take_along_axis(valid, order, 1)

    def _allowed(self, queries: list[Query], top: np.ndarray, overlay: Overlay) -> np.ndarray:
        """[B, C] whether each retrieved item is in its request's allowed categories."""
        allowed = np.ones(top.shape, dtype=bool)
        names = self.categories_of(top, overlay)
        for row, q in enumerate(queries):
            if q.categories is not None:
                allowed[row] = np.isin(names[row], list(q.categories))
        return allowed

    def _retrieve(
        self,
        queries: list[Query],
        query: np.ndarray,
        weight: np.ndarray,
        history: np.ndarray,
        overlay: Overlay,
        depth: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Retrieval's top `depth` exported items and every added one, by score: [B, C] indices
        and scores (-inf: excluded, hidden or past the catalogue). Added items (N and up) are
        scored against the query beside the graph (one product with their retrieval vectors; they
        have no item-item part) and merged with the graph's top items."""
        n, hidden = self.n_items, overlay.hidden
        excluded = [np.concatenate([q.exclude[q.exclude < n], hidden]) for q in queries]
        width = max(1, max(len(e) for e in excluded))
        exclude = np.full((len(queries), width), n, dtype=np.int64)
        for row, items in enumerate(excluded):
            exclude[row, : len(items)] = items
        if self.ann is not None:
            top, top_scores = self.ann.top(query, weight, history, exclude, depth)
        else:
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
            return top, top_scores
        added = query @ overlay.vectors.T  # [B, M]
        for row, q in enumerate(queries):
            seen = q.exclude[q.exclude >= n] - n
            added[row, seen[seen < len(overlay)]] = -np.inf
        indices = np.concatenate([top, np.broadcast_to(n + np.arange(len(overlay)), added.shape)], axis=1)
        scores = np.concatenate([top_scores, added], axis=1)
        order = np.argsort(-scores, axis=1, kind="stable")
        return np.take_along_axis(indices, order, 1), np.take_along_axis(scores, order, 1)
