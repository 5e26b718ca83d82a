"""The KServe predictor: validate -> Feast read -> user tower -> retrieval -> ranker -> top-k.

`load()` reads only the model directory and the Feast repo and refuses to start on any mismatch.
Degraded answers are flagged in `fallback` and counted, never a 5xx:
- `unknown_user`: no history in the feature store: the answer comes from the scene and context;
- `feature_store_unavailable`: the store timed out or failed: the same, for every request;
- `unknown_scene`: a scene the model never saw: the `default` scene is used.
Filters (`exclude`, `categories`) that leave fewer than k items answer what is left and say so in
`notice`; `diversity` re-orders the best candidates by maximal marginal relevance
(scenerec/diversity.py) and keeps each item's relevance score and its parts.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from kserve import Model
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from scenerec.artifact import ArtifactError, read_manifest
from scenerec.features.readers import FeatureReadError, FeatureTimeout  # light: no Feast import
from serving import metrics
from serving.admission import Limits, Overloaded, admit, lane
from serving.breaker import STATES, BreakerSettings, CircuitBreaker
from serving.request_metrics import in_flight
from serving.requests import EXPLAINED_HISTORY, V2_INPUTS, V2_OUTPUTS, Request, parse_v1, parse_v2
from serving.runtime import PART_NAMES, Overlay, Query, Runtime

log = logging.getLogger(__name__)


class FeatureReader(Protocol):
    """What the predictor needs from the feature store: `scenerec.features.client.FeatureClient`."""

    feature_names: tuple[str, ...]

    def read(self, user_id: str, scene_id: str) -> Any: ...

    def read_batch(self, requests: list[tuple[str, str]]) -> list[Any]: ...


HISTORY_ITEMS, HISTORY_SCENES = "history_item_ids", "history_scenes"
# on: always score on the scoring thread, batching what arrives meanwhile; off: always on the event
# loop; auto: on the loop when the server was idle (no thread hand-off, the lowest latency at low
# load), on the thread under load (batches, throughput).
BATCHING = ("auto", "on", "off")


def _longest(texts: Any) -> int:
    """The longest of some strings as JSON text, escapes included: the answer byte bound
    (serving/admission.py) must hold."""
    return max((len(json.dumps(str(t))) - 2 for t in texts), default=0)


def _longest_text(runtime: Runtime) -> int:
    """The longest title, category or scene name a runtime's answers can carry."""
    return max(_longest(runtime.info.titles), _longest(runtime.info.category_set), _longest(runtime.scenes))


class SwapRefused(ValueError):
    """A new model version failed a check before the swap: the served one is unchanged."""


def check_swap(current: Runtime, candidate: Runtime) -> None:
    """What a new version must share with the served one, and its export's parity record."""
    service, served = candidate.manifest.get("feature_service"), current.manifest.get("feature_service")
    if service != served:
        raise SwapRefused(
            f"feature service {service!r} differs from the served {served!r} "
            "(a new feature set needs its features published first, then a new predictor)"
        )
    path = candidate.model_dir / "parity.json"
    try:
        parity = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SwapRefused(f"{path}: no parity record ({e})") from e
    tolerance = float(parity.get("tolerance", 1e-4))
    for graph, record in parity.get("graphs", {}).items():
        error = record.get("max_abs_error") if isinstance(record, dict) else None
        if error is None or not float(error) <= tolerance:
            raise SwapRefused(f"{path}: graph {graph} parity error {error} exceeds the tolerance {tolerance}")


class ScenerecModel(Model):
    """Ranked items for (user, scene, context) requests over V1, V2 REST and V2 gRPC."""

    def __init__(
        self,
        name: str,
        model_dir: str | Path,
        features: FeatureReader | None = None,
        runtime: Runtime | None = None,
        feature_repo: str | Path | None = None,
        feature_config: str | Path | None = None,
        feature_timeout_s: float = 0.05,
        device: str = "cpu",
        retrieval_depth: int = 200,
        threads: int | None = 1,
        batching: str = "auto",
        idle_s: float = 0.001,
        breaker: BreakerSettings | None = None,
        limits: Limits | None = None,
        watch_s: float = 0.0,
        retrieval: str = "auto",
        state_dir: str | Path | None = None,
    ) -> None:
        super().__init__(name)
        self.retrieval = retrieval
        # where the event and catalogue logs live: the feature repo unless it is read-only (k8s)
        self.state_dir = Path(state_dir) if state_dir is not None else None
        if watch_s < 0:
            raise ValueError(f"model_watch_s must be >= 0, got {watch_s}")
        self.watch_s = watch_s
        self._watcher: threading.Thread | None = None
        self.model_dir, self.feature_repo, self.feature_config = Path(model_dir), feature_repo, feature_config
        self.feature_timeout_s = feature_timeout_s
        self.features, self.runtime = features, runtime
        self.device, self.retrieval_depth, self.threads = device, retrieval_depth, threads
        if batching not in BATCHING:
            raise ValueError(f"batching must be one of {BATCHING}, got {batching!r}")
        self.batching, self.idle_s = batching, idle_s
        self._last_scored = 0.0  # time.monotonic() when the last scoring ended
        self._pending: list[tuple[list[Request], asyncio.Future[list[dict[str, Any]]]]] = []
        self._draining = False
        self._drain_task: asyncio.Task[None] | None = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scenerec-scoring")
        self.limits = limits or Limits()
        self._large_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scenerec-large")
        self._large_in_lane = 0
        self._longest_id = 0  # the longest item id, and title, category or scene: as JSON text
        self._longest_text = 0
        self.version = "unloaded"
        self._swap_lock = threading.Lock()
        self._catalogue: Any = None  # serving.catalogue_follower.CatalogueFollower of self.runtime
        self.breaker_settings = breaker or BreakerSettings()
        self._breaker = self._new_breaker()

    def _new_breaker(self) -> CircuitBreaker:
        """The store's breaker; its probe is a real read of the default scene (any row will do)."""

        def probe() -> None:
            assert self.features is not None and self.runtime is not None
            self.features.read("__scenerec_probe__", self.runtime.scenes[self.runtime.default_scene])

        def on_change(state: str) -> None:
            for known in STATES:
                metrics.FEATURE_STORE_CIRCUIT.labels(self.name, known).set(int(known == state))

        on_change("closed")
        return CircuitBreaker(probe, self.breaker_settings, on_change=on_change)

    # ---- lifecycle ----------------------------------------------------------------------------
    def load(self) -> bool:
        if self.runtime is None:
            self.runtime = Runtime.from_model_dir(
                self.model_dir, device=self.device, threads=self.threads, retrieval=self.retrieval
            )
        self.runtime.retrieval_depth = self.retrieval_depth
        if self.features is None:
            from scenerec.features.client import FeatureClient  # Feast is heavy: import only when serving

            if self.feature_repo is None:
                raise ValueError("--feature_repo is required")
            self.features = FeatureClient.from_repo(
                self.feature_repo,
                self.runtime.manifest,
                config=self.feature_config,
                timeout_s=self.feature_timeout_s,
            )
        self._history_names = self._history_feature_names(self.features)
        self._catalogue = self._follow_catalogue(self.runtime)
        self.features.read(
            "__scenerec_probe__", self.runtime.scenes[self.runtime.default_scene]
        )  # round trip
        # as JSON text, escapes included: the answer byte bound (serving/admission.py) must hold
        self._longest_id = _longest(self.runtime.item_ids)
        self._longest_text = _longest_text(self.runtime)
        self.version = self.runtime.manifest["model_version"]
        for graph, report in self.runtime.providers.items():
            metrics.PROVIDER.labels(self.name, graph, ",".join(report.requested), report.actual).set(1)
        metrics.MODEL_INFO.labels(self.name, self.version).set(1)
        from serving.events_route import SERVED

        SERVED[self.name] = self  # POST /v1/models/{name}/events pushes through this model's store
        self._warm_up()
        gc.collect()
        gc.freeze()  # a full collection with Feast and ORT loaded takes >100 ms: not on the request path
        self._warm_up()  # again after the collection, which left the caches cold for the first request
        metrics.READY.labels(self.name).set(1)
        self.ready = True
        if self.watch_s > 0 and self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, name="scenerec-model-watch", daemon=True)
            self._watcher.start()
        self._publish_detail()
        return self.ready

    def _follow_catalogue(self, runtime: Runtime) -> Any:
        """The catalogue follower of `runtime` (added and hidden items), caught up with the log."""
        if self.feature_repo is None:
            return None
        from scenerec.catalogue import CatalogueLog
        from serving.catalogue_follower import CatalogueFollower

        state = self.state_dir or self.feature_repo
        follower = CatalogueFollower(runtime, CatalogueLog.of_repo(state), self.threads)
        follower.refresh()
        return follower

    def refresh_catalogue(self) -> Overlay | None:
        """Serve what the catalogue log gained since the last batch (one stat when nothing did)."""
        follower = self._catalogue
        if follower is None:
            return None
        if follower.refresh():
            overlay = follower.runtime.overlay
            self._longest_id = max(self._longest_id, _longest(overlay.ids))
            self._longest_text = max(
                self._longest_text, _longest(overlay.titles), _longest(overlay.categories)
            )
            metrics.CATALOGUE_ITEMS.labels(self.name, "added").set(len(overlay))
            metrics.CATALOGUE_ITEMS.labels(self.name, "hidden").set(len(overlay.hidden))
        return follower.runtime.overlay

    # ---- model swaps -------------------------------------------------------------------------
    def swap(self, model_dir: str | Path | None = None) -> str:
        """Serve the model in `model_dir` (default: this model's directory, read again) if it is a
        new version that passes its checks; the old one keeps serving otherwise. Returns the
        version served afterwards; raises `SwapRefused` naming the failed check.

        Checks, all before the swap: the manifest and every file's hash, each graph's signature
        (`Runtime.from_model_dir`), the export's parity record within its tolerance, the same
        feature service, and a trial of the whole request path (a real feature read, three scored
        batches with finite scores). The swap itself is one assignment between two batches.
        """
        directory = Path(model_dir) if model_dir is not None else self.model_dir
        with self._swap_lock:
            assert self.runtime is not None
            try:
                manifest = read_manifest(directory)
                if manifest["model_version"] == self.version and directory == self.model_dir:
                    return self.version
                candidate = Runtime.from_model_dir(
                    directory, device=self.device, threads=self.threads, retrieval=self.retrieval
                )
                check_swap(self.runtime, candidate)
                candidate.retrieval_depth = self.retrieval_depth
                follower = self._follow_catalogue(candidate)
                probe = Request(user_id="__scenerec_warm_up__", k=10)
                for _ in range(3):
                    answer = self.recommend([probe], record=False, runtime=candidate)
                    if not all(np.isfinite(i["score"]) for a in answer for i in a["items"]):
                        raise SwapRefused(f"{directory}: the trial answers have non-finite scores")
            except (ArtifactError, SwapRefused, OSError, ValueError, KeyError) as e:
                metrics.MODEL_SWAPS.labels(self.name, "refused").inc()
                log.error("model swap to %s refused, %s keeps serving: %s", directory, self.version, e)
                raise SwapRefused(f"{directory}: {e}") from e
            old = self.version
            self._longest_id = max(self._longest_id, _longest(candidate.item_ids))
            self._longest_text = max(self._longest_text, _longest_text(candidate))
            self.runtime, self.model_dir, self._catalogue = candidate, directory, follower
            self.version = candidate.manifest["model_version"]
            metrics.MODEL_INFO.labels(self.name, old).set(0)
            metrics.MODEL_INFO.labels(self.name, self.version).set(1)
            metrics.MODEL_SWAPS.labels(self.name, "swapped").inc()
            from serving.events_route import forget_pusher
            from serving.items_route import forget_writer

            forget_pusher(self.name)  # the next push reads the new version's config and catalogue
            forget_writer(self.name)
            log.info("model swapped: %s -> %s (%s)", old, self.version, directory)
            return self.version

    def _watch(self) -> None:
        """Swap when the model directory's manifest names another version (`--model_watch_s`).

        A refused version is not retried until its manifest changes again (it is logged and
        counted once, not every few seconds)."""
        refused: tuple[float, int] | None = None
        while True:
            time.sleep(self.watch_s)
            path = self.model_dir / "manifest.json"
            try:
                stat = path.stat()
                mark = (stat.st_mtime, stat.st_size)
                version = json.loads(path.read_text()).get("model_version")
            except (OSError, json.JSONDecodeError):
                continue  # mid-replacement: look again next time
            if version == self.version or mark == refused:
                continue
            try:
                self.swap()
            except SwapRefused:
                refused = mark

    def _publish_detail(self) -> None:
        """Readiness detail in this process (serving/health.py): the feature store's breaker."""
        from serving.health import DETAILS

        DETAILS[self.name] = lambda: {"feature_store": self._breaker.status()} if self.ready else None

    @staticmethod
    def _history_feature_names(features: FeatureReader) -> tuple[str, str]:
        """The service's history features (`<view>__history_item_ids`, `<view>__history_scenes`)."""
        names = []
        for suffix in (HISTORY_ITEMS, HISTORY_SCENES):
            found = [n for n in features.feature_names if n.endswith(f"__{suffix}")]
            if len(found) != 1:
                raise ValueError(
                    f"the feature service must hold exactly one '{suffix}' feature, found {found}"
                )
            names.append(found[0])
        return names[0], names[1]

    def __getstate__(self) -> dict[str, Any]:
        """`--workers N` pickles the model into each worker: sessions, the store client and the
        scoring thread cannot travel, so each worker rebuilds them. It loads when its app starts
        (`serving.repository.ServedModels`), not while being unpickled: KServe's parent kills a
        worker that has not answered its liveness ping within 5 s, and a load can take longer."""
        state = dict(self.__dict__)
        state.update(
            runtime=None,
            features=None,
            _worker=None,
            _large_worker=None,
            _swap_lock=None,
            _catalogue=None,
            _watcher=None,
            _large_in_lane=0,
            _pending=[],
            _draining=False,
            _drain_task=None,
            _breaker=None,
            ready=False,
        )
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scenerec-scoring")
        self._large_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scenerec-large")
        self._swap_lock = threading.Lock()
        self._breaker = self._new_breaker()

    def _warm_up(self) -> None:
        assert self.runtime is not None
        probe = Request(user_id="__scenerec_warm_up__", k=10)
        for _ in range(3):
            self.recommend([probe], record=False)  # not a request: /metrics counts only real ones

    # ---- KServe hooks -------------------------------------------------------------------------
    async def predict(
        self,
        payload: dict[str, Any] | InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> dict[str, Any] | InferResponse:
        requests = parse_v2(payload) if isinstance(payload, InferRequest) else parse_v1(payload)
        assert self.runtime is not None
        self.refresh_catalogue()  # candidates added by another process are known before validation
        for row, request in enumerate(requests):  # a bad candidate list fails its own call, not a batch
            self._candidate_indices(request, row, self.runtime)
        served = self.runtime.n_items + len(self.runtime.overlay)
        found = admit(requests, self.limits, served, self._longest_id, self._longest_text)  # 413: before work
        if lane(found, self.limits) == "large":
            answers = await self._score_large(requests)
        elif self._score_inline():
            answers = self.recommend(requests)
        else:
            answers = await self._batched(requests)
        if isinstance(payload, InferRequest):
            return self._v2_response(payload, answers)
        return {"predictions": answers}

    def _score_inline(self) -> bool:
        """Score this request on the event loop? Always with batching off; with auto, when it is
        the only call this process has in flight, nothing is queued or being scored and nothing
        was scored in the last `idle_s` (a lone request at low load). Under load a request has
        others in flight beside it (received, being parsed, waiting to be answered) and goes to the
        scoring thread with whatever else has arrived.

        Time since the last scoring alone is not enough: under a steady closed loop, parsing the
        next request can take longer than `idle_s` (a V2 body through pydantic does), and every
        request was then scored alone on the loop, never batched (V2 REST's throughput at 16
        connections fell to half of V1's)."""
        if self.batching != "auto":
            return self.batching == "off"
        idle = time.monotonic() - self._last_scored >= self.idle_s
        return idle and in_flight() <= 1 and not self._draining and not self._pending

    async def _score_large(self, requests: list[Request]) -> list[dict[str, Any]]:
        """A large call on its own thread, alone: small calls keep their lane and their latency.
        At most `max_large_queued` large calls wait or run; the next one gets a 429."""
        if self._large_in_lane >= self.limits.max_large_queued:
            metrics.SHED.labels(self.name).inc()
            raise Overloaded(
                f"instances x k: {self._large_in_lane} large calls are already being answered "
                f"(--max_large_queued {self.limits.max_large_queued}); retry shortly, or ask for at most "
                f"{self.limits.large_items} items to be answered at once"
            )
        self._large_in_lane += 1
        metrics.LARGE_IN_LANE.labels(self.name).set(self._large_in_lane)
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._large_worker, self.recommend, requests)
        finally:
            self._large_in_lane -= 1
            metrics.LARGE_IN_LANE.labels(self.name).set(self._large_in_lane)

    async def _batched(self, requests: list[Request]) -> list[dict[str, Any]]:
        """Dynamic batching on one worker thread: requests that arrive while a batch is being scored
        wait and are scored together next, in one run of each graph.

        The event loop stays free to accept and parse requests meanwhile, so every request on the
        wire is in flight (and finishes) when SIGTERM starts a graceful shutdown; an idle server
        scores a lone request at once.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[dict[str, Any]]] = loop.create_future()
        self._pending.append((requests, future))
        if not self._draining:
            self._draining = True
            self._drain_task = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                pending, self._pending = self._pending, []
                combined = [r for requests, _ in pending for r in requests]
                try:
                    answers = await loop.run_in_executor(self._worker, self.recommend, combined)
                except Exception as e:
                    for _, future in pending:
                        future.set_exception(e)
                    continue
                start = 0
                for requests, future in pending:
                    future.set_result(answers[start : start + len(requests)])
                    start += len(requests)
        finally:
            self._draining = False

    async def explain(self, payload: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
        """No separate explainer: KServe's default answers 501; the split of each score comes from
        `:predict` with `"explain": true`."""
        raise InvalidInput(
            'explain: this model has no explainer; send "explain": true in a :predict instance'
        )

    def get_input_types(self) -> list[dict[str, Any]]:
        return [{"name": name, "datatype": dtype, "shape": [-1]} for name, (dtype, _) in V2_INPUTS.items()]

    def get_output_types(self) -> list[dict[str, Any]]:
        return [{"name": name, "datatype": dtype, "shape": [-1, -1]} for name, dtype in V2_OUTPUTS.items()]

    # ---- the request path ---------------------------------------------------------------------
    def recommend(
        self, requests: list[Request], record: bool = True, runtime: Runtime | None = None
    ) -> list[dict[str, Any]]:
        """Answers for a batch of validated requests (one ONNX run per graph for the whole batch);
        `record=False` leaves the metrics alone (the warm-up). The batch reads `self.runtime` once,
        so a model swap between batches never mixes two versions in one answer; `runtime` scores
        with another one (a candidate version's trial before the swap)."""
        assert self.features is not None
        rt = runtime or self.runtime  # the catalogue log was followed once per call, in predict()
        assert rt is not None
        overlay = rt.overlay  # one catalogue state for the whole batch
        model = self.name
        started = time.perf_counter()
        histories = self._read_histories(requests, record, rt)
        queries, reasons, read = [], [], []
        for row, request in enumerate(requests):
            why: list[str] = []
            history = histories[row]
            if history is None:
                why.append("feature_store_unavailable")
                ids, scenes = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
            else:
                item_ids, scene_ids, unknown_user = history
                if unknown_user:
                    why.append("unknown_user")
                ids, scenes = self._history_indices(item_ids, scene_ids, rt, overlay)
            read.append((ids, scenes))
            excluded = ids if request.exclude_seen else np.zeros(0, dtype=np.int64)
            if request.exclude:
                asked = rt.item_indices(request.exclude, overlay)  # unknown ids: nothing to leave out
                excluded = np.concatenate([excluded, asked[asked >= 0]])
            scene = rt.scene_index.get(request.scene or rt.manifest["vocab"]["default_scene"])
            if scene is None:
                why.append("unknown_scene")
                scene = rt.default_scene
            queries.append(
                Query(
                    history=ids,
                    history_scenes=scenes,
                    scene=scene,
                    device=rt.device_index.get(request.device or "", rt.n_devices),
                    timestamp=request.timestamp,
                    k=request.k,
                    candidates=self._candidate_indices(request, row, rt, overlay, strict=False),
                    exclude=excluded,
                    categories=frozenset(request.categories) if request.categories is not None else None,
                    diversity=request.diversity,
                )
            )
            reasons.append(why)
        ranked = rt.recommend(queries, overlay=overlay)
        if record:
            metrics.BATCH_SIZE.labels(model).observe(len(queries))
            for stage, seconds in rt.timings.items():
                metrics.STAGE_SECONDS[stage].labels(model).observe(seconds)
        answers = []
        for request, query, result, why, seen in zip(requests, queries, ranked, reasons, read, strict=True):
            items = []
            for n, index in enumerate(result.items):
                item: dict[str, Any] = {
                    "item_id": rt.item_id(index, overlay),
                    "score": float(result.scores[n]),
                }
                if request.explain:
                    item["title"] = rt.title(index, overlay)
                    item["category"] = rt.category(index, overlay)
                    item["parts"] = {
                        name: float(v) for name, v in zip(PART_NAMES, result.parts[n], strict=True)
                    }
                    item["p_conversion"] = float(result.p_conversion[n])
                    item["new"] = bool(index >= rt.n_items)  # added after training (from its text)
                items.append(item)
            notice = self._notice(request, len(items), rt, overlay)
            if record:
                for reason in why:
                    metrics.FALLBACKS.labels(model, reason).inc()
                scene_label = rt.scenes[query.scene]
                metrics.REQUESTS.labels(model, scene_label, "fallback" if why else "ok").inc()
                self._count_options(request, notice)
            version = rt.manifest["model_version"]
            answer = {"items": items, "model_version": version, "fallback": ",".join(why) or None}
            if notice:
                answer["notice"] = notice
            if request.explain:
                answer["provider"] = rt.provider
                answer["history"] = self._explained_history(*seen, rt, overlay)
            answers.append(answer)
        if record:
            metrics.BATCH_SECONDS.labels(model).observe(time.perf_counter() - started)
        self._last_scored = time.monotonic()
        return answers

    @staticmethod
    def _notice(request: Request, answered: int, rt: Runtime, overlay: Overlay) -> str | None:
        """Why an answer holds fewer than k items when its filters are the reason; else None."""
        if answered >= request.k or not (request.exclude or request.categories is not None):
            return None
        text = f"the filters left {answered} of the {request.k} items asked for"
        if request.categories is not None:
            unknown = sorted(set(request.categories) - rt.known_categories(overlay))
            if unknown:
                text += f"; no item has the category {', '.join(repr(c) for c in unknown[:5])}"
        return text

    def _count_options(self, request: Request, notice: str | None) -> None:
        if request.diversity > 0:
            metrics.RERANKED.labels(self.name, "diversity").inc()
        if request.exclude:
            metrics.RERANKED.labels(self.name, "exclude").inc()
        if request.categories is not None:
            metrics.RERANKED.labels(self.name, "categories").inc()
        if notice:
            metrics.SHORT_ANSWERS.labels(self.name).inc()

    @staticmethod
    def _explained_history(
        items: np.ndarray, scenes: np.ndarray, rt: Runtime, overlay: Overlay
    ) -> list[dict[str, Any]]:
        """The history the model read, most recent first (the last `EXPLAINED_HISTORY`)."""
        recent = range(len(items) - 1, max(-1, len(items) - 1 - EXPLAINED_HISTORY), -1)
        return [
            {
                "item_id": rt.item_id(int(items[n]), overlay),
                "title": rt.title(int(items[n]), overlay),
                "category": rt.category(int(items[n]), overlay),
                "scene": rt.scenes[int(scenes[n])],
            }
            for n in recent
        ]

    def _read_histories(
        self, requests: list[Request], record: bool, rt: Runtime
    ) -> list[tuple[list[str], list[str], bool] | None]:
        """(history items, history scenes, unknown user) per request, or None for each when the
        store is skipped (circuit open) or its batch read failed: one read, one deadline."""
        assert self.features is not None
        model = self.name
        if not self._breaker.allow():
            return [None] * len(requests)
        default_scene = rt.scenes[rt.default_scene]
        pairs = [(r.user_id, r.scene if r.scene in rt.scene_index else default_scene) for r in requests]
        timer = metrics.STAGE_SECONDS["feature_read"].labels(model).time() if record else nullcontext()
        try:
            with timer:
                rows = self.features.read_batch(pairs)
        except FeatureReadError as e:
            log.warning("feature store unavailable, answering %d request(s) from defaults: %s", len(pairs), e)
            if record:
                kind = "timeout" if isinstance(e, FeatureTimeout) else "error"
                metrics.FEATURE_READ_ERRORS.labels(model, kind).inc()
            self._breaker.failure(e)
            return [None] * len(requests)
        self._breaker.success()
        items_name, scenes_name = self._history_names
        histories: list[tuple[list[str], list[str], bool] | None] = []
        for row in rows:
            for feature in row.missing if record else ():
                metrics.MISSING_FEATURES.labels(model, feature).inc()
            histories.append(
                (row.values[items_name] or [], row.values[scenes_name] or [], items_name in row.missing)
            )
        return histories

    @staticmethod
    def _history_indices(
        item_ids: list[str], scene_ids: list[str], rt: Runtime, overlay: Overlay
    ) -> tuple[np.ndarray, np.ndarray]:
        """Item and scene indices of a history, oldest first; items the model does not know are dropped."""
        items = rt.item_indices(item_ids, overlay)
        scenes = np.array([rt.scene_index.get(s, rt.default_scene) for s in scene_ids], dtype=np.int64)
        if len(scenes) != len(items):
            scenes = np.full(len(items), rt.default_scene, dtype=np.int64)
        known = items >= 0
        return items[known].astype(np.int64), scenes[known]

    @staticmethod
    def _candidate_indices(
        request: Request, row: int, rt: Runtime, overlay: Overlay | None = None, strict: bool = True
    ) -> np.ndarray | None:
        """Indices of a request's candidates; an unknown id is a 400 (`strict`, at validation) or
        dropped (at scoring: an added item removed between the two)."""
        if request.candidates is None:
            return None
        indices = rt.item_indices(request.candidates, overlay)
        if not strict:
            return indices[indices >= 0].astype(np.int64)
        unknown = np.flatnonzero(indices < 0)
        if len(unknown):
            first = int(unknown[0])
            where = f"instances[{row}].candidates[{first}]"
            raise InvalidInput(f"{where}: unknown item id {request.candidates[first]!r}")
        return indices.astype(np.int64)

    def _v2_response(self, request: InferRequest, answers: list[dict[str, Any]]) -> InferResponse:
        width = max(1, max(len(a["items"]) for a in answers))
        ids = np.full((len(answers), width), "", dtype=object)
        scores = np.zeros((len(answers), width), dtype=np.float32)
        for row, answer in enumerate(answers):
            for col, item in enumerate(answer["items"]):
                ids[row, col], scores[row, col] = item["item_id"], item["score"]
        # Raw outputs whenever the client asked for them (KServe's and Triton's rule): gRPC requests
        # with raw inputs; REST `binary_data_output`, or `binary_data` on a requested output, which
        # overrides it. Typed JSON / typed contents otherwise.
        binary = bool(request.use_binary_outputs)
        requested = request.request_outputs or None
        for output in requested or ():
            if output.binary_data is None:
                output.parameters = {**(output.parameters or {}), "binary_data": binary}
        outputs = [
            InferOutput("item_id", list(ids.shape), "BYTES"),
            InferOutput("score", list(scores.shape), "FP32"),
        ]
        outputs[0].set_data_from_numpy(ids, binary_data=binary)
        outputs[1].set_data_from_numpy(scores, binary_data=binary)
        return InferResponse(
            response_id=request.id or "",
            model_name=self.name,
            infer_outputs=outputs,
            parameters={"model_version": self.version},
            use_binary_outputs=binary,
            requested_outputs=requested,
        )
