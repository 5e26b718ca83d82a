"""What the predictor adds to KServe's FastAPI app: a body size limit and a multiprocess-aware /metrics.

Both are installed on `kserve.model_server.app` before `ModelServer.start()` registers KServe's
own routes, so our `/metrics` route is matched first.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from serving import metrics

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
        body = json.dumps({"error": f"body: larger than the {self.limit} bytes this server accepts"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


async def metrics_page(request: Request) -> Response:
    content, content_type = metrics.exposition(request.headers.get("accept"))
    return Response(content=content, headers={"content-type": content_type})


def install_http_extras(max_body_bytes: int) -> None:
    from kserve import model_server

    app = model_server.app
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    app.add_api_route("/metrics", metrics_page, methods=["GET"])
