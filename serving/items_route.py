"""`POST /v1/models/{name}/items`: new, hidden, shown and removed items, from the predictor.

The body is JSON lines (or a JSON array) of the items table's columns (item_id, title, text,
category) and an optional `action` (add, the default; hide; show; remove). Added items are
embedded with the model's own text encoder and item tower, written to the Feast item views and
to the catalogue log (`scenerec.features.items`); this process serves them from its next call,
every other process following the log from its own next call. Answers: 200 with the counts; 400
naming the line and field of a bad change; 404 for a model this server does not serve; 409 for a
model that cannot place new items (trained without text); 413 past `--max_body_bytes`; 503 with
Retry-After when the store fails (nothing of the call was accepted: retry).

Changes run on one thread of their own, with a FeatureStore of their own: scoring and event
pushes never wait behind an embedding.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import JSONResponse

from serving import metrics
from serving.events_route import run_change

if TYPE_CHECKING:
    from scenerec.features.items import ItemWriter
    from serving.predictor import ScenerecModel

log = logging.getLogger(__name__)

PATH = "/v1/models/{model_name}/items"
_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scenerec-items")
_writers: dict[str, ItemWriter] = {}

ITEMS_BODY_SCHEMA: dict[str, Any] = {
    "description": "JSON lines (or a JSON array) of catalogue changes in the items table's columns",
    "type": "object",
    "required": ["item_id"],
    "properties": {
        "action": {"type": "string", "enum": ["add", "hide", "show", "remove"], "default": "add"},
        "item_id": {"type": "string", "maxLength": 256},
        "title": {"type": "string"},
        "text": {"type": "string", "description": "what the encoder reads (default: the title); add only"},
        "category": {"type": "string", "default": "unknown"},
    },
}


def _writer(model: ScenerecModel) -> ItemWriter:
    """The model's writer, built on the items thread (its FeatureStore is used there only)."""
    writer = _writers.get(model.name)
    if writer is None:
        from scenerec.catalogue import CatalogueLog
        from scenerec.features.items import ItemWriter
        from scenerec.features.repo import open_store, resolve_yaml
        from scenerec.item_encoder import ItemEncoder

        runtime = model.runtime
        assert runtime is not None and model.feature_repo is not None
        repo = Path(model.feature_repo)
        store = open_store(
            repo, resolve_yaml(repo, Path(model.feature_config) if model.feature_config else None)
        )
        encoder = ItemEncoder(runtime.model_dir, runtime.manifest, threads=model.threads)
        state = Path(model.state_dir or repo)
        writer = ItemWriter(store, CatalogueLog.of_repo(state), encoder, runtime.item_index, state / "data")
        _writers[model.name] = writer
    return writer


def forget_writer(model_name: str) -> None:
    """Drop a model's writer (after a model swap): the next call builds one for the new version."""
    _writers.pop(model_name, None)


def _apply(model: ScenerecModel, body: bytes) -> dict[str, Any]:
    from scenerec.features.items import parse_item_lines

    changes = parse_item_lines(body)
    result = _writer(model).apply(changes, "body")
    model.refresh_catalogue()  # this process serves them from its next call, whichever thread
    return {**result.summary(), "model_version": model.version}


async def change_items(model_name: str, request: Request) -> JSONResponse:
    """Apply the body's catalogue changes (see the module docstring for the answers)."""
    from scenerec.artifact import ArtifactError

    result = await run_change(model_name, request, _executor, _apply, metrics.ITEM_CHANGES, (ArtifactError,))
    if isinstance(result, JSONResponse):
        return result
    for action, key in (("add", "added"), ("hide", "hidden"), ("show", "shown"), ("remove", "removed")):
        metrics.ITEM_CHANGES.labels(model_name, action).inc(result[key])
    return JSONResponse(result)


def install_items_route(app: Any) -> None:
    app.add_api_route(
        PATH,
        change_items,
        methods=["POST"],
        summary="Add, hide, show or remove catalogue items (JSON lines)",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/x-ndjson": {"schema": ITEMS_BODY_SCHEMA},
                    "application/json": {"schema": {"type": "array", "items": ITEMS_BODY_SCHEMA}},
                },
            }
        },
    )
