"""One observation per inference call, as the client sees it: `scenerec_request_seconds` and
`scenerec_responses_total` by protocol (v1, v2, grpc) and status.

REST calls are timed by an ASGI middleware outside every other one, so a body refused for its size
(413), a model version (400) or a shed request (429) is counted like an answer; gRPC calls by a
servicer that wraps KServe's `ModelInfer`. Only inference routes are counted (health, metadata
and /metrics are not), and the model label is a served model's name or "other" (a client's typo
must not create a series).
"""

from __future__ import annotations

import re
import time
from typing import Any

from serving import metrics
from serving.http import ASGIApp, Message, Receive, Scope, Send

_ROUTES = (
    ("v1", re.compile(r"^/v1/models/(?P<model>[^/:]+):predict$")),
    ("v2", re.compile(r"^/v2/models/(?P<model>[^/]+)(?:/versions/[^/]+)?/infer$")),
)
CODE_CLASSES = ("2xx", "4xx", "5xx")
_in_flight = 0  # inference calls of this process between their arrival and their answer


def in_flight() -> int:
    """Inference calls (REST and gRPC) this process has received and not yet answered: the
    predictor scores a call on the event loop only when it is the only one (serving/predictor.py)."""
    return _in_flight


def served(name: str) -> str:
    """The model label: the name if this process serves it, else "other" (bounded labels)."""
    from serving.health import DETAILS

    return name if name in DETAILS else "other"


def route(path: str) -> tuple[str, str] | None:
    """(protocol, model label) of an inference path, or None for every other path."""
    for protocol, pattern in _ROUTES:
        match = pattern.match(path)
        if match:
            return protocol, served(match.group("model"))
    return None


def observe(model: str, protocol: str, status: int | str, code: str, seconds: float) -> None:
    metrics.REQUEST_SECONDS.labels(model, protocol, code).observe(seconds)
    metrics.RESPONSES.labels(model, protocol, str(status)).inc()


def code_class(status: int) -> str:
    return "2xx" if status < 400 else "4xx" if status < 500 else "5xx"


class RequestMetrics:
    """Times each REST inference call from its arrival to its last body byte, by its status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = route(scope["path"]) if scope["type"] == "http" else None
        if found is None:
            await self.app(scope, receive, send)
            return
        global _in_flight
        protocol, model = found
        started, status, done = time.perf_counter(), 500, False
        _in_flight += 1

        async def timed_send(message: Message) -> None:
            nonlocal status, done
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                done = True
                observe(model, protocol, status, code_class(status), time.perf_counter() - started)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            _in_flight -= 1
            if not done:  # the app failed (or the client left) before the answer was complete
                observe(model, protocol, status, code_class(status), time.perf_counter() - started)


# gRPC status -> the same status classes as REST (a client's mistake is 4xx, ours 5xx)
_GRPC_CLIENT_ERRORS = frozenset(
    {
        "INVALID_ARGUMENT",
        "NOT_FOUND",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "OUT_OF_RANGE",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
        "CANCELLED",
    }
)


def grpc_status(error: BaseException | None) -> str:
    """The gRPC status name KServe's interceptor will answer with for `error` (None: OK)."""
    if error is None:
        return "OK"
    from kserve.errors import InferenceError, InvalidInput, ModelNotFound, ModelNotReady, UnsupportedProtocol

    if isinstance(error, (InferenceError, InvalidInput, UnsupportedProtocol)):
        return "INVALID_ARGUMENT"
    if isinstance(error, ModelNotFound):
        return "NOT_FOUND"
    if isinstance(error, ModelNotReady):
        return "UNAVAILABLE"
    code = getattr(error, "status_code", None)  # grpc_interceptor's GrpcException (e.g. 429 -> 8)
    return str(getattr(code, "name", "INTERNAL"))


def install_grpc_metrics() -> None:
    """KServe builds its gRPC servicer from a module-level name at start: ours takes its place."""
    from kserve.protocol.grpc import server as grpc_server

    base: Any = grpc_server.InferenceServicer

    class TimedServicer(base):
        async def ModelInfer(self, request: Any, context: Any) -> Any:
            global _in_flight
            started, error = time.perf_counter(), None
            _in_flight += 1
            try:
                return await super().ModelInfer(request, context)
            except BaseException as e:
                error = e
                raise
            finally:
                _in_flight -= 1
                status = grpc_status(error)
                code = "2xx" if status == "OK" else "4xx" if status in _GRPC_CLIENT_ERRORS else "5xx"
                observe(served(request.model_name), "grpc", status, code, time.perf_counter() - started)

    if not getattr(base, "_scenerec_timed", False):
        TimedServicer._scenerec_timed = True
        grpc_server.InferenceServicer = TimedServicer
