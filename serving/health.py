"""Readiness with detail: a ready model's `/v1/models/{name}` and `/v2/models/{name}/ready` also say
how its feature store is doing (the circuit breaker's state, the last error, the next probe).

Readiness itself stays as KServe decides it: a predictor whose store is down still answers (with
`fallback: feature_store_unavailable`), so taking it out of the load balancer would only move the
load to replicas that share the same store. A model that is not ready is KServe's own 503.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from serving.http import ASGIApp, Receive, Scope, Send, send_json

# name -> the model's detail; filled by each process's ScenerecModel when it is ready
DETAILS: dict[str, Callable[[], dict[str, Any] | None]] = {}


def model_name(path: str) -> str | None:
    """The model a readiness path asks about: `/v1/models/M` or `/v2/models/M/ready`."""
    parts = path.rstrip("/").split("/")  # "", "v1", "models", M [, "ready"]
    if len(parts) == 4 and parts[1] == "v1" and parts[2] == "models":
        return parts[3]
    if len(parts) == 5 and parts[1] == "v2" and parts[2] == "models" and parts[4] == "ready":
        return parts[3]
    return None


class ReadinessDetail:
    """Answers a ready model's readiness GETs itself, with `feature_store` detail; all else passes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            name = model_name(scope["path"])
            detail = DETAILS[name]() if name in DETAILS else None
            if detail is not None:
                await send_json(send, 200, {"name": name, "ready": True, **detail})
                return
        await self.app(scope, receive, send)
