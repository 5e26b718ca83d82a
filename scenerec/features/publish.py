"""`scenerec features publish`: offline sources from the data and model, applied and written online.

The steps, and why each is where it is:
1. Everything that can fail on input runs before any store is touched: the feature_store yaml, the
   model manifest (hashes verified), the definitions (Feast's own parse), the FeatureService the
   manifest names, the dataset (cleaned with the model's own data config, so the features are the
   ones it was trained on) and every feature table, checked against the views' schemas.
2. The run works in a staging copy of the repo's data folder (`data/.publish-*`): the new parquet
   sources, a copy of the registry and, for SQLite, a copy of the online database (SQLite's backup
   API, consistent under readers). `apply` runs there, with the same yaml rooted at the staging
   folder, then every table goes out in batches of `batch_rows` entities (users are computed batch
   by batch too: their history lists are the bulk at 10^6 users): each batch is appended to its
   parquet source (row groups of a temporary file, renamed when complete) and written into its
   online views with Feast's own conversion and online write (`provider.ingest_df`, what
   `write_to_online_store` does), and the views' materialization interval is recorded as
   `feast materialize` records it. Memory holds one batch's rows and protos, not the tables':
   `materialize` would read each whole source back and convert it at once (benchmarks/RESULTS.md,
   "Publishing at scale"). Staging keeps the registry's state away from live readers.
3. Promotion is a handful of `os.replace` calls: sources, then the SQLite online database, then the
   registry. Each is atomic; a reader that has the old file open keeps reading the previous state
   (FeatureClient reopens when the file changes). A failed run deletes its staging folder and
   leaves the live files as they were.
Redis cannot be staged by renaming: its rows are written in place, each entity's row in one HSET
(overwriting, `skip_dedup`), so a failure part-way leaves every row readable, old or new, and a
rerun completes it.

Idempotent: the same inputs give the same sources and online values; rows are upserted, never
deleted, so a rerun loses nothing. Runs on one repo are serialised by a lock file.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from tqdm.auto import tqdm

from scenerec.artifact import read_manifest
from scenerec.config import Config
from scenerec.data.dataset import load_dataset
from scenerec.data.io import file_lock, write_parquet_stream
from scenerec.errors import ScenerecError
from scenerec.features.compute import (
    EVENT_TIMESTAMP,
    SOURCE_FILES,
    FeatureTables,
    item_table,
    scene_table,
    user_table_batches,
    user_time_range,
)
from scenerec.features.repo import (
    FeatureRepoError,
    apply_definitions,
    check_service,
    load_repo_config,
    parse_definitions,
    resolve_yaml,
)

if TYPE_CHECKING:
    from feast import FeatureStore, RepoConfig
    from feast.repo_contents import RepoContents

log = logging.getLogger(__name__)
BATCH_ROWS = 20_000  # entities per online write and parquet append (benchmarks/publish_scale.py)


class PublishError(ScenerecError):
    """Apply or materialize failed; the message says what state the online store was left in."""

    exit_code = 1


@dataclass(frozen=True)
class PublishResult:
    repo: Path
    config: Path
    online_store: str
    feature_service: str
    rows: dict[str, int]
    window: tuple[datetime, datetime]
    seconds: float
    views: list[str] = field(default_factory=list)
    memory: dict[str, Any] | None = None  # Redis only: used_memory growth per entity (see _memory_account)
    # seconds: checks + dataset + item/scene tables; then apply + user tables + sources + online writes
    steps: dict[str, float] = field(default_factory=dict)


def publish(
    data_dir: Path,
    model_dir: Path,
    repo: Path,
    config: Path | None = None,
    online_store: str | None = None,
    batch_rows: int = BATCH_ROWS,
) -> PublishResult:
    """Write the offline sources for `model_dir` + `data_dir`, apply the repo and write the online
    store, `batch_rows` entities at a time (see the module's steps)."""
    started = time.perf_counter()
    repo = Path(repo).resolve()
    yaml_path = resolve_yaml(repo, config, online_store)
    live = load_repo_config(repo, yaml_path)
    paths = _staged_paths(live, yaml_path)
    manifest = read_manifest(model_dir)
    service = manifest.get("feature_service")
    if not isinstance(service, str) or not service:
        raise FeatureRepoError(f"{Path(model_dir) / 'manifest.json'}: no 'feature_service' named")
    contents = parse_definitions(repo)
    check_service(contents, service, str(Path(model_dir) / "manifest.json"))
    model_config = Config.from_dict(manifest["config"])
    dataset = load_dataset(data_dir, model_config.data)
    users = user_table_batches(dataset, model_config, batch_rows)
    first_users = next(users)  # checked against the views with the others before anything is written
    tables = FeatureTables(
        users=first_users,
        items=item_table(Path(model_dir), manifest),
        scenes=scene_table(dataset, model_config.data),
    )
    views = check_sources(contents, tables)
    prepared = time.perf_counter()
    stamps: list[datetime] = [*user_time_range(dataset)]
    for table in (tables.items, tables.scenes):
        stamps += [table[EVENT_TIMESTAMP].min().to_pydatetime(), table[EVENT_TIMESTAMP].max().to_pydatetime()]
    window = (min(stamps) - timedelta(seconds=1), max(stamps) + timedelta(seconds=1))
    batches = {
        "scene": _batches(tables.scenes, batch_rows),
        "item": _batches(tables.items, batch_rows),
        "user": itertools.chain([first_users], users),
    }
    counts = {"user": len(dataset.vocab.users), "item": len(tables.items), "scene": len(tables.scenes)}

    data_root = repo / "data"
    data_root.mkdir(exist_ok=True)
    with file_lock(data_root / ".publish.lock"), _staging(data_root) as stage:
        for rel in paths:
            _copy_live(repo / rel, stage / rel, sqlite=rel != paths[0])
        staged = load_repo_config(repo, yaml_path, root=stage)
        memory = _write_all(staged, contents, views, window, stage, batches, counts)
        written = time.perf_counter()
        _promote(stage, repo, [*SOURCE_FILES.values(), *paths[1:], paths[0]])
    return PublishResult(
        repo=repo,
        config=yaml_path,
        online_store=str(live.online_store.type),
        feature_service=service,
        rows={entity: counts[entity] for entity in ("user", "item", "scene")},
        window=window,
        seconds=time.perf_counter() - started,
        views=views,
        memory=memory,
        steps={"prepare": prepared - started, "write": written - prepared},
    )


def _batches(table: pd.DataFrame, rows: int) -> Iterator[pd.DataFrame]:
    for lo in range(0, max(len(table), 1), rows):
        yield table.iloc[lo : lo + rows]


def check_sources(contents: RepoContents, tables: FeatureTables) -> list[str]:
    """Online views, after checking each reads a source we write and finds its columns there."""
    by_path = {path: tables.by_entity()[entity] for entity, path in SOURCE_FILES.items()}
    views = []
    for view in contents.feature_views:
        source = view.batch_source
        path = getattr(source, "path", None)
        if source is None or path not in by_path:
            raise FeatureRepoError(
                f"feature view {view.name!r} reads {path!r}, which publish does not write "
                f"(it writes: {', '.join(sorted(by_path))})"
            )
        table = by_path[path]
        needed = [*view.join_keys, *(f.name for f in view.features), source.timestamp_field]
        missing = [name for name in needed if name not in table.columns]
        if missing:
            raise FeatureRepoError(
                f"feature view {view.name!r}: column(s) {', '.join(missing)} not in the computed {path} "
                f"(it has: {', '.join(map(str, table.columns))})"
            )
        if view.online:
            views.append(view.name)
    if not views:
        raise FeatureRepoError("the feature repo defines no online feature view")
    return views


def _staged_paths(live: RepoConfig, yaml_path: Path) -> list[str]:
    """Repo-relative files the run stages: the registry first, then the SQLite database if any."""
    registry = live.registry
    if registry.registry_type != "file" or Path(registry.path).is_absolute() or "://" in registry.path:
        raise FeatureRepoError(
            f"{yaml_path}: field 'registry.path': publish stages a file registry given relative to the "
            f"repo, got {registry.registry_type} {registry.path!r}"
        )
    paths = [registry.path]
    if live.online_store.type == "sqlite":
        if Path(live.online_store.path).is_absolute():
            raise FeatureRepoError(
                f"{yaml_path}: field 'online_store.path': give it relative to the repo, "
                f"got {live.online_store.path!r}"
            )
        paths.append(live.online_store.path)
    return paths


def _write_all(
    config: RepoConfig,
    contents: RepoContents,
    views: list[str],
    window: tuple[datetime, datetime],
    stage: Path,
    batches: dict[str, Iterator[pd.DataFrame]],
    counts: dict[str, int],
) -> dict[str, Any] | None:
    """Apply, then each entity's batches into its offline source (in `stage`) and its online views;
    the views' materialization interval is recorded as `feast materialize` would. Returns the Redis
    memory account (None for other stores)."""
    from feast import FeatureStore

    store_type = config.online_store.type
    chatter = io.StringIO()  # Feast prints progress; keep the CLI's output ours
    memory: dict[str, Any] | None = None
    try:
        with contextlib.redirect_stdout(chatter):
            store = FeatureStore(config=config, repo_path=str(config.repo_path))
            apply_definitions(store, contents)
            online = [store.get_feature_view(name) for name in views]
            redis = _redis_client(store) if store_type == "redis" else None
            used: dict[str, int] = {}
            for entity, path in SOURCE_FILES.items():
                targets = [v for v in online if getattr(v.batch_source, "path", None) == path]
                before = _used_memory(redis)
                frames = _written_online(store, targets, batches[entity], entity, counts[entity])
                write_parquet_stream(frames, stage / path)
                if redis is not None:
                    used[entity] = _used_memory(redis) - before
            for view in online:
                store.registry.apply_materialization(view, store.project, window[0], window[1])
            if redis is not None:
                memory = _memory_account(used, counts, _used_memory(redis))
    except ScenerecError:
        raise
    except Exception as e:  # the store's own failure, whatever its client raises: say what is left
        kept = (
            "the live online store is untouched"
            if store_type == "sqlite"
            else "rows already written are complete and readable; rerun to finish"
        )
        raise PublishError(f"apply/write into the {store_type} online store failed: {e!r}; {kept}") from e
    finally:
        log.debug("feast output:\n%s", chatter.getvalue())
    return memory


def _written_online(
    store: FeatureStore, views: list[Any], frames: Iterator[pd.DataFrame], entity: str, total: int
) -> Iterator[pd.DataFrame]:
    """Each frame, after writing its rows into `views` (Feast's own conversion and online write)."""
    provider = store._get_provider()
    with tqdm(total=total, desc=f"publishing {entity}s", unit=entity, disable=None) as bar:
        for frame in frames:
            for view in views:
                key = view.entity_columns[0].name
                provider.ingest_df(view, frame[[key, *(f.name for f in view.features), EVENT_TIMESTAMP]])
            bar.update(len(frame))
            yield frame


def _redis_client(store: FeatureStore) -> Any:
    online: Any = store._get_provider().online_store  # RedisOnlineStore: its own pooled client
    return online._get_client(store.config.online_store)


def _used_memory(client: Any) -> int:
    return int(client.info("memory")["used_memory"]) if client is not None else 0


def _memory_account(used: dict[str, int], counts: dict[str, int], total: int) -> dict[str, Any]:
    """Redis `used_memory` growth while each entity was written, per row. A republish overwrites rows
    of the same size, so only a first publish (or new entities) shows the full cost."""
    return {
        "used_memory_bytes": total,
        "growth_bytes": used,
        "bytes_per_user": round(used["user"] / counts["user"], 1) if counts["user"] else None,
        "bytes_per_item": round(used["item"] / counts["item"], 1) if counts["item"] else None,
    }


def _copy_live(live: Path, staged: Path, sqlite: bool) -> None:
    """Seed the staging copy with the live registry / online database, if there is one yet."""
    if not live.is_file():
        return
    staged.parent.mkdir(parents=True, exist_ok=True)
    if not sqlite:
        shutil.copy2(live, staged)
        return
    with (
        contextlib.closing(sqlite3.connect(f"file:{live}?mode=ro", uri=True)) as source,
        contextlib.closing(sqlite3.connect(staged)) as target,
    ):
        source.backup(target)


def _promote(stage: Path, repo: Path, relative: list[str]) -> None:
    for rel in relative:
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        os.chmod(stage / rel, 0o644)
        os.replace(stage / rel, repo / rel)


@contextlib.contextmanager
def _staging(data_root: Path) -> Iterator[Path]:
    stage = Path(tempfile.mkdtemp(prefix=".publish-", dir=data_root))
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def summary(result: PublishResult) -> dict[str, Any]:
    """A JSON-ready account of a publish run (what the CLI prints and the pipeline records)."""
    return {
        "repo": str(result.repo),
        "config": str(result.config),
        "online_store": result.online_store,
        "feature_service": result.feature_service,
        "views": result.views,
        "rows": result.rows,
        "window": [t.isoformat() for t in result.window],
        "seconds": round(result.seconds, 2),
        "steps_seconds": {step: round(value, 2) for step, value in result.steps.items()},
        **({"redis_memory": result.memory} if result.memory is not None else {}),
    }
