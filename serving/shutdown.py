"""Graceful drain on SIGTERM: stop accepting, answer every call already on the wire, then exit.

uvicorn's own shutdown closes every idle keep-alive connection at once. A client that has just
read an answer and written its next request on that connection gets it closed under it (a reset:
the server closes a socket with unread bytes), which is what 23 of 24 keep-alive clients saw when
SIGTERM arrived while large answers were being written. Here the shutdown first drains:

1. the listening sockets close (new connections are refused, never reset) and `/v2/health/ready`
   answers 503, so a load balancer that still probes takes the pod out;
2. every answer from then on carries `Connection: close` (uvicorn closes the connection after
   writing it), so each keep-alive client learns, from a complete answer, not to reuse it;
3. a connection idle for `idle_close_s` is closed (a client that stopped sending), one that is
   busy is left alone; once none is left, or after `drain_seconds`, uvicorn's own shutdown runs
   (it waits for tasks still running, then the app's shutdown).

gRPC has its own grace (`ModelServer(grace_period=...)`, the same `--drain_seconds`). In a cluster
the pod's `preStop` sleep (k8s/base/predictor) lets endpoints be removed before the signal arrives.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from serving.http import ASGIApp, Message, Receive, Scope, Send, send_json

log = logging.getLogger(__name__)


@dataclass
class DrainState:
    """Whether this process is draining (set when the shutdown starts), and its settings."""

    drain_seconds: float = 20.0
    idle_close_s: float = 1.0
    started: float | None = None

    @property
    def draining(self) -> bool:
        return self.started is not None


DRAIN = DrainState()


class DrainingAnswers:
    """While draining: `Connection: close` on every answer, and 503 from `/v2/health/ready`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not DRAIN.draining:
            await self.app(scope, receive, send)
            return

        async def closing_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        if scope["path"] == "/v2/health/ready":
            draining = {"error": "draining: this server is shutting down", "ready": False}
            await send_json(closing_send, 503, draining)
            return
        await self.app(scope, receive, closing_send)


def _idle(connection: Any) -> bool:
    """A uvicorn protocol (httptools or h11) with no call in progress."""
    cycle = getattr(connection, "cycle", None)
    return cycle is None or bool(getattr(cycle, "response_complete", False))


async def drain(server: Any, state: DrainState = DRAIN) -> None:
    """Steps 1-3 of the module docstring on a running uvicorn.Server."""
    state.started = time.monotonic()
    for listener in server.servers:
        listener.close()
    deadline = state.started + state.drain_seconds
    idle_since: dict[int, float] = {}
    open_now = len(server.server_state.connections)
    log.info("draining: %d connection(s) open, up to %.0f s", open_now, state.drain_seconds)
    while server.server_state.connections and time.monotonic() < deadline and not server.force_exit:
        now = time.monotonic()
        for connection in list(server.server_state.connections):
            if not _idle(connection):
                idle_since.pop(id(connection), None)
            elif now - idle_since.setdefault(id(connection), now) >= state.idle_close_s:
                connection.transport.close()
        await asyncio.sleep(0.05)
    left = len(server.server_state.connections)
    log.info("drained in %.2f s (%d connection(s) left)", time.monotonic() - state.started, left)


def install_drain(drain_seconds: float, idle_close_s: float = 1.0) -> None:
    """Runs `drain` before uvicorn's own shutdown, in this process (KServe's RESTServer and each
    `--workers` process build their uvicorn.Server from the class patched here)."""
    import uvicorn

    DRAIN.drain_seconds, DRAIN.idle_close_s = drain_seconds, idle_close_s
    original = uvicorn.Server.shutdown
    if getattr(original, "_scenerec_drain", False):
        return

    async def shutdown(self: Any, sockets: Any = None) -> None:
        await drain(self)
        spent = time.monotonic() - (DRAIN.started or 0.0)
        self.config.timeout_graceful_shutdown = max(1, int(DRAIN.drain_seconds - spent))
        await original(self, sockets)

    shutdown._scenerec_drain = True  # type: ignore[attr-defined]
    uvicorn.Server.shutdown = shutdown  # type: ignore[method-assign]
