"""The explorer page, served by the predictor itself: `GET /ui/` (off with `--no_ui`).

A person picks a user, a scene and its context and sees the ranking and why: the page is plain
HTML, CSS and one script (`static/`, no build step, nothing from a CDN: it works offline) that
calls the public V1 endpoint like any client, so what it shows is what clients get. The only
route of its own is `GET /ui/config.json`, read once when the page opens: the served model's
name, version, provider, scenes, devices and categories, the V1 fields this server takes (the
page offers diversity and filters only where they exist) and a few example users read from the
feature store's offline user source. It is read-only and never on the scoring path.

Routes are added to KServe's FastAPI app by `install_ui_routes` (from `serving.http`), before
ModelServer registers its own, in the main process and again in each `--workers` process.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi.responses import JSONResponse, RedirectResponse, Response

if TYPE_CHECKING:
    from serving.predictor import ScenerecModel

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
# name -> content type; only these files are served (no directory listing, no path from the URL)
FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "bars.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
# Everything from this server, nothing inline or remote: a CDN reference would fail loudly here.
# `data:` images: the empty favicon (no /favicon.ico request, so no 404 in the console).
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "cache-control": "no-cache",
}
EXAMPLE_USERS = 6  # offered in the page's user list
EXAMPLE_ROWS = 512  # of the user source read to choose them (the first row group's head)
MAX_CATEGORIES = 200  # offered as filters; a larger catalogue's long tail is typed, not listed


def install_ui_routes(app: Any) -> None:
    """Add `/ui`, `/ui/`, `/ui/{file}` and `/ui/config.json` to KServe's FastAPI app."""
    app.add_api_route("/ui", _to_index, methods=["GET"], include_in_schema=False)
    app.add_api_route("/ui/", _index, methods=["GET"], include_in_schema=False)
    app.add_api_route("/ui/config.json", ui_config, methods=["GET"], summary="The explorer page's set-up")
    app.add_api_route("/ui/{name}", _static, methods=["GET"], include_in_schema=False)


async def _to_index() -> Response:
    """`/ui` -> `/ui/`: the page's relative URLs (its script, the V1 endpoint) then resolve under any
    path prefix an ingress adds."""
    return RedirectResponse("ui/", status_code=307)


async def _index() -> Response:
    return _file("index.html")


async def _static(name: str) -> Response:
    if name not in FILES or name == "index.html":
        return JSONResponse({"error": f"/ui/{name}: no such file"}, status_code=404)
    return _file(name)


@functools.cache
def _read(name: str) -> bytes:
    return (STATIC / name).read_bytes()


def _file(name: str) -> Response:
    return Response(_read(name), media_type=FILES[name], headers=SECURITY_HEADERS)


def ui_config() -> JSONResponse:
    """The page's set-up for the model this server serves (the first, when it serves several).

    A plain function: FastAPI runs it on its thread pool, so the few parquet rows it may read
    never hold up the event loop that scores inline requests.
    """
    from serving.events_route import SERVED

    model = next(iter(SERVED.values()), None)
    if model is None or model.runtime is None:
        return JSONResponse({"error": "no model is loaded yet; retry in a moment"}, status_code=503)
    return JSONResponse(model_setup(model), headers={"cache-control": "no-cache"})


def model_setup(model: ScenerecModel) -> dict[str, Any]:
    """What the page needs of a served model (see the module docstring); every field optional to it."""
    from serving.requests import MAX_K, V1_BODY_SCHEMA

    runtime = model.runtime
    assert runtime is not None
    instance = V1_BODY_SCHEMA["properties"]["instances"]["items"]
    repo = Path(model.feature_repo) if model.feature_repo is not None else None
    return {
        "model": model.name,
        "model_version": model.version,
        "provider": runtime.provider,
        "scenes": list(runtime.scenes),
        "default_scene": runtime.scenes[runtime.default_scene],
        "devices": list(runtime.devices),
        "categories": _categories(runtime),
        "request_fields": sorted(instance.get("properties", {})),
        "list_limits": {  # the most entries a list field takes (exclude, categories), as V1 checks
            name: spec["maxItems"]
            for name, spec in instance.get("properties", {}).items()
            if spec.get("type") == "array" and "maxItems" in spec
        },
        "max_k": MAX_K,
        "predict_path": f"v1/models/{model.name}:predict",
        "example_users": example_users(repo) if repo is not None else [],
    }


def _categories(runtime: Any) -> list[str]:
    """The catalogue's categories (for the category filter), from the runtime's item table."""
    info = getattr(runtime, "info", None)
    names = getattr(info, "categories", None)
    if names is None:
        return []
    found = sorted({str(c) for c in names} - {"unknown"})
    return found[:MAX_CATEGORIES]


def example_users(repo: Path) -> list[dict[str, Any]]:
    """A few users of the feature store's offline user source, the most active of its first rows.

    Only the head of the file is read (one batch of a few columns), once per file version: the
    page needs examples, not a census. A missing or unreadable source gives none (the page then
    offers only a new user); the error is logged.
    """
    from scenerec.features.compute import SOURCE_FILES

    path = repo / SOURCE_FILES["user"]
    try:
        stat = path.stat()
    except OSError as e:
        log.warning("explorer page: no example users (%s)", e)
        return []
    return list(_example_users(str(path), stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=4)
def _example_users(path: str, mtime_ns: int, size: int) -> tuple[dict[str, Any], ...]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    wanted = ("user_id", "interaction_count", "last_scene", "last_device")
    try:
        source = pq.ParquetFile(path)
        columns = [name for name in wanted if name in source.schema_arrow.names]
        if "user_id" not in columns:
            log.warning("explorer page: %s has no user_id column: no example users", path)
            return ()
        batch = next(source.iter_batches(batch_size=EXAMPLE_ROWS, columns=columns), None)
    except (OSError, pa.ArrowException) as e:
        log.warning("explorer page: cannot read example users from %s: %s", path, e)
        return ()
    rows = batch.to_pylist() if batch is not None else []
    rows.sort(key=lambda r: (-int(r.get("interaction_count") or 0), str(r["user_id"])))
    return tuple(
        {
            "user_id": str(row["user_id"]),
            "interactions": int(row.get("interaction_count") or 0),
            "last_scene": row.get("last_scene"),
            "last_device": row.get("last_device"),
        }
        for row in rows[:EXAMPLE_USERS]
    )
