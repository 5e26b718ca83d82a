"""`POST /v1/models/{name}/events`: fresh interactions into the feature store, from the predictor.

The body is JSON lines (or a JSON array) of the data contract's interaction columns; each event is
folded into its user's Feast rows (`scenerec.features.events`), so the user's next request reads
the new history. Answers: 200 with the counts; 400 naming the line and field of a bad event; 404
for a model this server does not serve; 413 past `--max_body_bytes` (serving.http.BodyLimit);
503 with Retry-After when the store fails during the push (nothing of it was accepted: retry).

Pushes run on one thread of their own, with a FeatureStore of their own (its own connection):
scoring never waits behind a push, and a push never shares the scoring thread's connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import JSONResponse

from serving import metrics

if TYPE_CHECKING:
    from scenerec.features.events import EventPusher
    from serving.predictor import ScenerecModel

log = logging.getLogger(__name__)

PATH = "/v1/models/{model_name}/events"
RETRY_AFTER_S = 1
SERVED: dict[str, ScenerecModel] = {}  # filled by ScenerecModel.load, in every worker process
_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scenerec-events")
_pushers: dict[str, EventPusher] = {}

EVENTS_BODY_SCHEMA: dict[str, Any] = {
    "description": "JSON lines (or a JSON array) of events in the data contract's interaction columns",
    "type": "object",
    "required": ["user_id", "item_id", "event_timestamp"],
    "properties": {
        "event_id": {"type": "string", "description": "optional; default: a hash of the fields"},
        "user_id": {"type": "string"},
        "item_id": {"type": "string"},
        "event_timestamp": {"type": "string", "format": "date-time", "description": "with a time zone"},
        "scene": {"type": "string", "default": "default"},
        "event": {"type": "string", "default": "interaction"},
        "label": {"type": "number", "default": 1.0},
        "device": {"type": "string", "default": "unknown"},
    },
}


def _pusher(model: ScenerecModel) -> EventPusher:
    """The model's pusher, built on the events thread (its FeatureStore is used there only)."""
    pusher = _pushers.get(model.name)
    if pusher is None:
        from scenerec.config import Config
        from scenerec.features.events import EventLog, EventPusher
        from scenerec.features.repo import open_store, resolve_yaml

        assert model.runtime is not None and model.feature_repo is not None
        repo = Path(model.feature_repo)
        config_path = Path(model.feature_config) if model.feature_config else None
        store = open_store(repo, resolve_yaml(repo, config_path))
        pusher = EventPusher(
            store,
            EventLog.of_repo(model.state_dir or repo),
            Config.from_dict(model.runtime.manifest["config"]),
            known_items=set(map(str, model.runtime.item_ids)),
            offline=False,  # the event log is the offline record; the source is rebuilt by publish
        )
        _pushers[model.name] = pusher
    return pusher


def forget_pusher(model_name: str) -> None:
    """Drop a model's pusher (after a model swap): the next push builds one for the new version."""
    _pushers.pop(model_name, None)


def _push(model: ScenerecModel, body: bytes) -> dict[str, Any]:
    from scenerec.features.events import parse_json_lines

    events = parse_json_lines(body)
    return _pusher(model).push(events).summary()


async def run_change(
    model_name: str,
    request: Request,
    executor: ThreadPoolExecutor,
    work: Callable[[ScenerecModel, bytes], dict[str, Any]],
    counter: Any,
    conflicts: tuple[type[Exception], ...] = (),
) -> JSONResponse | dict[str, Any]:
    """Run a route's `work(model, body)` on its executor; the answer for each way it can fail.

    404 for a model not served here; 400 for bad input (DataError, a body not UTF-8); 409 for
    `conflicts` (the model cannot do it); 503 + Retry-After when the store fails (nothing of the
    call was accepted). `counter` (outcome-labelled) counts refused and store_unavailable calls.
    """
    from scenerec.errors import DataError
    from scenerec.features.events import StoreUnavailable

    model = SERVED.get(model_name)
    if model is None or model.feature_repo is None:
        return JSONResponse({"error": f"model {model_name!r} is not served here"}, status_code=404)
    body = await request.body()
    try:
        return await asyncio.get_running_loop().run_in_executor(executor, work, model, body)
    except DataError as e:
        counter.labels(model_name, "refused").inc()
        return JSONResponse({"error": "; ".join(e.problems)}, status_code=400)
    except UnicodeDecodeError as e:
        counter.labels(model_name, "refused").inc()
        return JSONResponse({"error": f"body: not UTF-8 ({e.reason} at byte {e.start})"}, status_code=400)
    except StoreUnavailable as e:
        log.warning("%s failed: %s", request.url.path, e)
        counter.labels(model_name, "store_unavailable").inc()
        return JSONResponse(
            {"error": f"{e} (nothing of this call was accepted; retry)"},
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
    except conflicts as e:
        counter.labels(model_name, "refused").inc()
        return JSONResponse({"error": str(e)}, status_code=409)


async def push_events(model_name: str, request: Request) -> JSONResponse:
    """Fold the body's events into the feature store (see the module docstring for the answers)."""
    result = await run_change(model_name, request, _executor, _push, metrics.EVENTS)
    if isinstance(result, JSONResponse):
        return result
    metrics.EVENTS.labels(model_name, "accepted").inc(result["accepted"])
    metrics.EVENTS.labels(model_name, "duplicate").inc(result["duplicates"])
    metrics.EVENTS.labels(model_name, "unknown_item").inc(result["unknown_items"])
    return JSONResponse(result)


def install_events_route(app: Any) -> None:
    app.add_api_route(
        PATH,
        push_events,
        methods=["POST"],
        summary="Push fresh events (JSON lines) into the feature store",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/x-ndjson": {"schema": EVENTS_BODY_SCHEMA},
                    "application/json": {"schema": {"type": "array", "items": EVENTS_BODY_SCHEMA}},
                },
            }
        },
    )
