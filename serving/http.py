"""What the predictor adds to KServe's FastAPI app: a body size limit, a 400 for model versions and
for binary BYTES that are not UTF-8, a multiprocess-aware /metrics, readiness with the feature
store's state (serving/health.py), per-call metrics (serving/request_metrics.py), a graceful drain
on SIGTERM (serving/shutdown.py) and its request bodies in the OpenAPI document.

All are installed on `kserve.model_server.app` before `ModelServer.start()` registers KServe's
own routes, so our `/metrics` route is matched first; with `--workers N`, again in each worker
(`serving.repository.ServedModels`), whose app is a fresh import.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from serving import metrics
from serving.requests import V1_BODY_SCHEMA, V2_BODY_SCHEMA

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimit:
    """Rejects request bodies above `limit` bytes with 413, whether or not Content-Length is sent."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._reject(send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            await self._reject(send)

    async def _reject(self, send: Send) -> None:
        await _send_error(send, 413, f"body: larger than the {self.limit} bytes this server accepts")


class _TooLarge(Exception):
    pass


class NoModelVersions:
    """Answers 400 naming `model_version` when a V2 request asks for one.

    KServe serves one version per model name and answers 501 to any version (in the path,
    `/v2/models/M/versions/V/...`, or the query, `?model_version=V`): a server error for what
    is the client's choice. The version being served is in every answer and in the metadata.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v2/models/"):
            parts = scope["path"].split("/")  # "", "v2", "models", name, "versions", version, ...
            in_path = parts[5] if len(parts) > 5 and parts[4] == "versions" else ""
            query = parse_qsl(scope.get("query_string", b"").decode("latin-1"))
            in_query = next((v for k, v in reversed(query) if k == "model_version"), "")
            if in_path or in_query:
                message = (
                    f"model_version: {in_path or in_query!r} cannot be chosen: this server serves one "
                    "version per model (its model_version is in the model metadata); leave it out"
                )
                await _send_error(send, 400, message)
                return
        await self.app(scope, receive, send)


class V2JsonBody:
    """A V2 infer body without the binary extension's header is JSON, whatever its Content-Type.

    KServe parses a V2 body as JSON only under a JSON Content-Type and otherwise expects the binary
    extension (an `Inference-Header-Content-Length` header), refusing the rest with a 400. Triton's
    HTTP client sends JSON tensors with no Content-Type, curl `-d` sends a form type: both are
    JSON by the protocol's own rule, and are read as such here.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"].endswith("/infer"):
            headers = [(k, v) for k, v in scope.get("headers") or [] if k.lower() != b"content-type"]
            names = {k.lower() for k, _ in scope.get("headers") or []}
            if b"inference-header-content-length" not in names:
                scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
        await self.app(scope, receive, send)


async def _send_error(send: Send, status: int, message: str) -> None:
    await send_json(send, status, {"error": message})


async def send_json(send: Send, status: int, payload: dict[str, Any]) -> None:
    """A whole JSON answer from an ASGI middleware."""
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def inference_error(request: Request, error: Exception) -> Response:
    """KServe decodes V2 binary BYTES tensors itself, before the predictor sees them, and reports
    text that is not UTF-8 as an InferenceError (a 500). It is the client's input: a 400. Every
    other InferenceError keeps KServe's own answer.

    KServe registers its exception handlers when its REST server is built, after ours would be, so
    this one takes the place of the module-level name that registration reads.
    """
    from kserve.errors import inference_error_handler

    if "using UTF-8" in str(error):
        return JSONResponse(
            status_code=400, content={"error": f"a BYTES input is not valid UTF-8 text: {error}"}
        )
    response: Response = await inference_error_handler(request, error)
    return response


async def validation_error(request: Request, error: Exception) -> Response:
    """FastAPI's 422 `{"detail": [...]}` for a V2 body that is not an inference request, as the
    product's 400 `{"error": ...}` naming the first field (`inputs[0].datatype: Field required`)."""
    problems: list[dict[str, Any]] = getattr(error, "errors", lambda: [])()
    messages = []
    for problem in problems[:3]:
        location = list(problem.get("loc", ()))
        where = ""
        for part in location[1:] if location[:1] == ["body"] else location:
            where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
        messages.append(f"{where or 'body'}: {problem.get('msg', 'invalid')}")
    message = "; ".join(messages) or "body: not a valid request"
    return JSONResponse(status_code=400, content={"error": message})


async def limit_exceeded(request: Request, error: Exception) -> Response:
    """A call over the per-call limits (serving/admission.py): 413, naming the limit and its flag."""
    return JSONResponse(status_code=413, content={"error": str(error)})


async def overloaded(request: Request, error: Exception) -> Response:
    """The large-call lane is full: 429 with Retry-After; small calls are not affected."""
    retry = str(getattr(error, "retry_after_s", 1))
    message = str(getattr(error, "details", error))
    return JSONResponse(status_code=429, content={"error": message}, headers={"Retry-After": retry})


async def metrics_page(request: Request) -> Response:
    content, content_type = metrics.exposition(request.headers.get("accept"))
    return Response(content=content, headers={"content-type": content_type})


BODY_SCHEMAS = {
    ("/v1/models/{model_name}:predict", "post"): V1_BODY_SCHEMA,
    ("/v2/models/{model_name}/infer", "post"): V2_BODY_SCHEMA,
}


def _document_bodies(app: FastAPI) -> None:
    """Puts our V1 and V2 request bodies into the OpenAPI document, so clients and fuzzers see the
    fields this predictor takes (KServe's V1 route documents no body, its V2 one any tensor)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()  # FastAPI caches it on the app: edited once
        for (path, method), schema in BODY_SCHEMAS.items():
            route = document.get("paths", {}).get(path, {}).get(method)
            if route is not None:
                route["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def install_http_extras(max_body_bytes: int, drain_seconds: float = 20.0, ui: bool = True) -> None:
    from kserve import model_server

    from serving.health import ReadinessDetail
    from serving.request_metrics import RequestMetrics, install_grpc_metrics

    app = model_server.app
    from serving.shutdown import DrainingAnswers, install_drain

    app.add_middleware(ReadinessDetail)
    app.add_middleware(DrainingAnswers)
    install_drain(drain_seconds)
    app.add_middleware(NoModelVersions)
    app.add_middleware(V2JsonBody)
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    app.add_middleware(RequestMetrics)  # the last added is the outermost: it sees every answer
    install_grpc_metrics()
    app.add_api_route("/metrics", metrics_page, methods=["GET"])
    from serving.events_route import install_events_route
    from serving.items_route import install_items_route

    install_events_route(app)
    install_items_route(app)
    if ui:  # the explorer page (serving/ui/): static files and its set-up, beside V1
        from serving.ui import install_ui_routes

        install_ui_routes(app)
    from fastapi.exceptions import RequestValidationError

    from serving.admission import LimitExceeded, Overloaded

    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(LimitExceeded, limit_exceeded)  # before InvalidInput's: its subclass
    app.add_exception_handler(Overloaded, overloaded)
    from kserve.protocol.rest import server as rest_server

    rest_server.inference_error_handler = inference_error
    _document_bodies(app)
