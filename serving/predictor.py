"""The KServe predictor: validate -> Feast read -> user tower -> retrieval -> ranker -> top-k.

`load()` reads only the model directory and the Feast repo and refuses to start on any mismatch.
Degraded answers are flagged in `fallback` and counted, never a 5xx:
- `unknown_user`: no history in the feature store: the answer comes from the scene and context;
- `feature_store_unavailable`: the store timed out or failed: the same, for every request;
- `unknown_scene`: a scene the model never saw: the `default` scene is used.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from kserve import Model
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from serving import metrics
from serving.requests import V2_INPUTS, V2_OUTPUTS, Request, parse_v1, parse_v2
from serving.runtime import PART_NAMES, Query, Runtime

log = logging.getLogger(__name__)


class FeatureUnavailable(Exception):
    """The feature store did not answer in time or failed; the predictor degrades, never fails."""


class UserHistory(Protocol):
    item_ids: Sequence[str]
    scenes: Sequence[str]
    missing: Sequence[str]


class FeatureReader(Protocol):
    """What the predictor needs from the feature store (scenerec.features.client implements it)."""

    def read_users(self, user_ids: list[str]) -> list[UserHistory]: ...

    def probe(self) -> None: ...


class ScenerecModel(Model):
    """Ranked items for (user, scene, context) requests over V1, V2 REST and V2 gRPC."""

    def __init__(
        self,
        name: str,
        model_dir: str | Path,
        features: FeatureReader | None = None,
        runtime: Runtime | None = None,
        feature_repo: str | Path | None = None,
        device: str = "cpu",
        retrieval_depth: int = 200,
        threads: int | None = 1,
    ) -> None:
        super().__init__(name)
        self.model_dir, self.feature_repo = Path(model_dir), feature_repo
        self.features, self.runtime = features, runtime
        self.device, self.retrieval_depth, self.threads = device, retrieval_depth, threads
        self.version = "unloaded"

    # ---- lifecycle ----------------------------------------------------------------------------
    def load(self) -> bool:
        if self.runtime is None:
            self.runtime = Runtime.from_model_dir(self.model_dir, device=self.device, threads=self.threads)
        self.runtime.retrieval_depth = self.retrieval_depth
        if self.features is None:
            from scenerec.features.client import FeatureClient  # Feast is heavy: import only when serving

            self.features = FeatureClient.from_repo(self.feature_repo, self.runtime.manifest)
        self.features.probe()  # a real round trip before readiness says yes
        self.version = self.runtime.manifest["model_version"]
        for graph, report in self.runtime.providers.items():
            metrics.PROVIDER.labels(self.name, graph, ",".join(report.requested), report.actual).set(1)
        metrics.MODEL_INFO.labels(self.name, self.version).set(1)
        self._warm_up()
        gc.collect()
        gc.freeze()  # a full collection with Feast and ORT loaded takes >100 ms: not on the request path
        metrics.READY.labels(self.name).set(1)
        self.ready = True
        return self.ready

    def _warm_up(self) -> None:
        assert self.runtime is not None
        probe = Request(user_id="__scenerec_warm_up__", k=10)
        for _ in range(3):
            self.recommend([probe])

    # ---- KServe hooks -------------------------------------------------------------------------
    async def predict(
        self,
        payload: dict[str, Any] | InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> dict[str, Any] | InferResponse:
        if isinstance(payload, InferRequest):
            answers = self.recommend(parse_v2(payload))
            return self._v2_response(payload, answers)
        return {"predictions": self.recommend(parse_v1(payload))}

    def get_input_types(self) -> list[dict[str, Any]]:
        return [{"name": name, "datatype": dtype, "shape": [-1]} for name, (dtype, _) in V2_INPUTS.items()]

    def get_output_types(self) -> list[dict[str, Any]]:
        return [{"name": name, "datatype": dtype, "shape": [-1, -1]} for name, dtype in V2_OUTPUTS.items()]

    # ---- the request path ---------------------------------------------------------------------
    def recommend(self, requests: list[Request]) -> list[dict[str, Any]]:
        """Answers for a batch of validated requests (one ONNX run per graph for the whole batch)."""
        assert self.runtime is not None and self.features is not None
        rt, model = self.runtime, self.name
        started = time.perf_counter()
        histories: list[UserHistory] | None
        try:
            with metrics.STAGE_SECONDS["feature_read"].labels(model).time():
                histories = self.features.read_users([r.user_id for r in requests])
        except FeatureUnavailable as e:
            log.warning("feature store unavailable, answering from defaults: %s", e)
            histories = None
        queries, reasons = [], []
        for row, request in enumerate(requests):
            why: list[str] = []
            history = histories[row] if histories is not None else None
            if history is None:
                why.append("feature_store_unavailable")
                ids, scenes = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
            else:
                if history.missing:
                    why.append("unknown_user")
                    for feature in history.missing:
                        metrics.MISSING_FEATURES.labels(model, feature).inc()
                ids, scenes = self._history_indices(history)
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
                    candidates=self._candidate_indices(request, row),
                    exclude=ids if request.exclude_seen else np.zeros(0, dtype=np.int64),
                )
            )
            reasons.append(why)
        metrics.BATCH_SIZE.labels(model).observe(len(queries))
        ranking_started = time.perf_counter()
        ranked = rt.recommend(queries)
        metrics.STAGE_SECONDS["ranking"].labels(model).observe(time.perf_counter() - ranking_started)
        answers = []
        for request, query, result, why in zip(requests, queries, ranked, reasons, strict=True):
            items = []
            for n, index in enumerate(result.items):
                item: dict[str, Any] = {"item_id": str(rt.item_ids[index]), "score": float(result.scores[n])}
                if request.explain:
                    item["parts"] = {
                        name: float(v) for name, v in zip(PART_NAMES, result.parts[n], strict=True)
                    }
                    item["p_conversion"] = float(result.p_conversion[n])
                items.append(item)
            for reason in why:
                metrics.FALLBACKS.labels(model, reason).inc()
            scene_label = rt.scenes[query.scene]
            metrics.REQUESTS.labels(model, scene_label, "fallback" if why else "ok").inc()
            answers.append({"items": items, "model_version": self.version, "fallback": ",".join(why) or None})
        metrics.STAGE_SECONDS["request"].labels(model).observe(time.perf_counter() - started)
        return answers

    def _history_indices(self, history: UserHistory) -> tuple[np.ndarray, np.ndarray]:
        """Item and scene indices of a history; items the model does not know are dropped."""
        assert self.runtime is not None
        rt = self.runtime
        items = rt.item_index.get_indexer(list(history.item_ids))
        scenes = np.array([rt.scene_index.get(s, rt.default_scene) for s in history.scenes], dtype=np.int64)
        known = items >= 0
        return items[known].astype(np.int64), scenes[known] if len(scenes) == len(items) else scenes[
            : known.sum()
        ]

    def _candidate_indices(self, request: Request, row: int) -> np.ndarray | None:
        if request.candidates is None:
            return None
        assert self.runtime is not None
        indices = self.runtime.item_index.get_indexer(request.candidates)
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
        outputs = [
            InferOutput("item_id", list(ids.shape), "BYTES"),
            InferOutput("score", list(scores.shape), "FP32"),
        ]
        outputs[0].set_data_from_numpy(ids, binary_data=False)
        outputs[1].set_data_from_numpy(scores, binary_data=False)
        return InferResponse(
            response_id=request.id or "",
            model_name=self.name,
            infer_outputs=outputs,
            parameters={"model_version": self.version},
        )
