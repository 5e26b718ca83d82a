"""Online-store reads below Feast's SDK, for the request path (FeatureClient uses these).

About 70% of a one-row `get_online_features` is SDK work (request resolution, response building),
not storage (benchmarks/RESULTS.md). These readers do only the storage part, with the keys and
statements built once by the caller's plan and Feast's own key encoding, so they read exactly the
rows Feast wrote; tests/features and benchmarks/feature_store.py check the values against
`get_online_features`.

Each reader has one timeout, fixed when it is made (bulk reads get a longer one):
- SQLite: one read-only connection, one UNION ALL statement per request or batch (every view's
  rows for its entity; batches in chunks of 100 reads). The timeout bounds a lock wait (busy
  timeout) and the whole read (a progress handler interrupts it at the deadline). `publish`
  replaces the database file: the reader notices the new inode and reopens.
- Redis: its own redis-py client with socket timeouts (per socket operation) and no retries, one
  pipelined HMGET per entity (a user's views share one hash), so user + scene, or a whole batch
  of requests, is one round trip.
- Anything else: the online store's own `online_read` per view (timeout checked after the call).

Every reader returns, per requested row, {feature name: ValueProto} with absent features left out.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from scenerec.errors import ScenerecError

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView


class FeatureReadError(ScenerecError):
    """The online store failed or is unreachable: serving should degrade, flag and count it."""

    exit_code = 1


class FeatureTimeout(FeatureReadError):
    """An online read took longer than the client's timeout."""


@dataclass(frozen=True)
class ViewRead:
    """What one feature view contributes to a read, resolved once at load."""

    view: FeatureView
    name: str  # the output prefix (the projection's name)
    join_key: str
    features: tuple[str, ...]
    table: str  # SQLite table id
    fields: tuple[bytes, ...]  # Redis hash fields (murmur3 of "<view>:<feature>"), in `features` order


Rows = list[dict[str, Any]]  # per requested (view, entity key): feature name -> ValueProto


Read = tuple[ViewRead, bytes, Any]  # the view, its serialized entity key, the EntityKey proto


class Reader(Protocol):
    timeout_s: float

    def read(self, reads: Sequence[Read]) -> Rows: ...

    def read_many(self, view: ViewRead, keys: Sequence[tuple[bytes, Any]], timeout_s: float) -> Rows: ...

    def close(self) -> None: ...


class SqliteReader:
    """Reads the SQLite online database Feast materialized, read-only."""

    CHUNK = 100  # reads per UNION ALL statement: SQLite allows at most 500 terms in one compound SELECT

    def __init__(self, path: Path, timeout_s: float) -> None:
        self.path = Path(path)
        self.timeout_s = timeout_s
        self._deadline = 0.0
        self._conn: sqlite3.Connection | None = None
        self._inode = -1
        self._statements: dict[tuple[str, ...], str] = {}
        self._open()

    def _open(self) -> None:
        try:
            inode = os.stat(self.path).st_ino
            conn = sqlite3.connect(
                f"file:{self.path}?mode=ro", uri=True, timeout=self.timeout_s, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as e:
            raise FeatureReadError(f"{self.path}: cannot open the SQLite online store ({e})") from e
        conn.set_progress_handler(self._past_deadline, 200)
        if self._conn is not None:
            self._conn.close()
        self._conn, self._inode = conn, inode

    def _past_deadline(self) -> int:
        return int(time.perf_counter() > self._deadline)

    def read(self, reads: Sequence[Read]) -> Rows:
        timeout_s = self.timeout_s
        try:
            if os.stat(self.path).st_ino != self._inode:  # publish swapped the file in
                self._open()
        except OSError as e:
            raise FeatureReadError(f"{self.path}: the SQLite online store is gone ({e})") from e
        from feast.protos.feast.types.Value_pb2 import Value

        self._deadline = time.perf_counter() + timeout_s  # one deadline for every chunk
        assert self._conn is not None
        rows: Rows = [{} for _ in reads]
        for lo in range(0, len(reads), self.CHUNK):
            chunk = reads[lo : lo + self.CHUNK]
            if lo and time.perf_counter() > self._deadline:
                raise FeatureTimeout(f"SQLite online read exceeded {timeout_s * 1000:.0f} ms")
            tables = tuple(r[0].table for r in chunk)
            sql = self._statements.get(tables)
            if sql is None:
                sql = " UNION ALL ".join(
                    f'SELECT {k}, feature_name, value FROM "{t}" WHERE entity_key = ?'
                    for k, t in enumerate(tables)
                )
                self._statements[tables] = sql
            try:
                found = self._conn.execute(sql, [r[1] for r in chunk]).fetchall()
            except sqlite3.OperationalError as e:
                # "interrupted": the progress handler hit the deadline; "locked": the busy wait ran out.
                if time.perf_counter() > self._deadline or "locked" in str(e) or "interrupt" in str(e):
                    raise FeatureTimeout(
                        f"SQLite online read exceeded {timeout_s * 1000:.0f} ms ({e})"
                    ) from e
                raise FeatureReadError(f"{self.path}: SQLite online read failed ({e})") from e
            for k, name, blob in found:
                if name in chunk[k][0].features:  # SQLite keeps every feature of the view
                    value = Value()
                    value.ParseFromString(blob)
                    rows[lo + k][name] = value
        return rows

    def read_many(self, view: ViewRead, keys: Sequence[tuple[bytes, Any]], timeout_s: float) -> Rows:
        """One view for many entity keys (load-time item reads), in batches under SQLite's limits."""
        from feast.protos.feast.types.Value_pb2 import Value

        assert self._conn is not None
        index = {key: k for k, (key, _) in enumerate(keys)}
        rows: list[dict[str, Any]] = [{} for _ in keys]
        self._deadline = time.perf_counter() + timeout_s
        for lo in range(0, len(keys), 500):
            chunk = [key for key, _ in keys[lo : lo + 500]]
            sql = (
                f'SELECT entity_key, feature_name, value FROM "{view.table}" '
                f"WHERE entity_key IN ({','.join('?' * len(chunk))})"
            )
            try:
                found = self._conn.execute(sql, chunk).fetchall()
            except sqlite3.OperationalError as e:
                raise FeatureReadError(f"{self.path}: SQLite online read failed ({e})") from e
            for key, name, blob in found:
                if name in view.features:
                    value = Value()
                    value.ParseFromString(blob)
                    rows[index[key]][name] = value
        return rows

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class RedisReader:
    """Reads the Redis hashes Feast materialized (one hash per entity key and project)."""

    def __init__(self, connection_string: str, project: str, timeout_s: float) -> None:
        import redis
        from feast.infra.online_stores.redis import RedisOnlineStore

        nodes, params = RedisOnlineStore._parse_connection_string(connection_string)
        self._params = {**params, "host": nodes[0]["host"], "port": int(nodes[0]["port"])}
        self._redis = redis
        self._project = project.encode()
        self._client: Any = None
        self.timeout_s = timeout_s

    def _connect(self) -> Any:
        if self._client is None:
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            # No retries: redis-py 7 retries a timeout 3 times with 1-10 s backoff by default, which
            # would turn a hung Redis into seconds per request; serving degrades instead.
            self._client = self._redis.Redis(
                **{
                    "socket_timeout": self.timeout_s,
                    "socket_connect_timeout": self.timeout_s,
                    **self._params,
                    "retry": Retry(NoBackoff(), 0),
                }
            )
        return self._client

    def read(self, reads: Sequence[Read]) -> Rows:
        from feast.protos.feast.types.Value_pb2 import Value

        # Views of one entity share a hash: one HMGET per distinct key, fields of all its views.
        commands: dict[bytes, list[bytes]] = {}
        for read, key, _ in reads:
            commands.setdefault(key + self._project, []).extend(read.fields)
        client = self._connect()
        try:
            pipe = client.pipeline(transaction=False)
            for key, fields in commands.items():
                pipe.hmget(key, fields)
            replies = dict(zip(commands, pipe.execute(), strict=True))
        except self._redis.exceptions.TimeoutError as e:
            raise FeatureTimeout(f"Redis online read exceeded {self.timeout_s * 1000:.0f} ms") from e
        except self._redis.exceptions.RedisError as e:
            raise FeatureReadError(f"Redis online read failed ({e})") from e
        offsets: dict[bytes, int] = {}
        rows: Rows = []
        for read, key, _ in reads:
            full = key + self._project
            at = offsets.get(full, 0)
            values = replies[full][at : at + len(read.fields)]
            offsets[full] = at + len(read.fields)
            row = {}
            for name, blob in zip(read.features, values, strict=True):
                if blob is not None:
                    value = Value()
                    value.ParseFromString(blob)
                    row[name] = value
            rows.append(row)
        return rows

    def read_many(self, view: ViewRead, keys: Sequence[tuple[bytes, Any]], timeout_s: float) -> Rows:
        """Many keys of one view (`timeout_s` unused: the socket timeout bounds each operation)."""
        rows: Rows = []
        for lo in range(0, len(keys), 1000):
            rows.extend(self.read([(view, key, proto) for key, proto in keys[lo : lo + 1000]]))
        return rows

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class StoreReader:
    """Any other online store: its own `online_read`, one call per view."""

    def __init__(self, store: FeatureStore, timeout_s: float) -> None:
        self._store = store
        self.timeout_s = timeout_s
        self._online = store._get_provider().online_store

    def read(self, reads: Sequence[Read]) -> Rows:
        started = time.perf_counter()
        rows: Rows = []
        try:
            for read, _, entity_key in reads:
                # A copy: RedisOnlineStore.online_read appends to the list it is given.
                ((_, values),) = self._online.online_read(
                    self._store.config, read.view, [entity_key], list(read.features)
                )
                rows.append({k: v for k, v in (values or {}).items() if k in read.features})
        except Exception as e:  # the store's client raises its own types; name and keep them
            raise FeatureReadError(f"online read failed ({e!r})") from e
        if time.perf_counter() - started > self.timeout_s:
            raise FeatureTimeout(f"online read exceeded {self.timeout_s * 1000:.0f} ms")
        return rows

    def read_many(self, view: ViewRead, keys: Sequence[tuple[bytes, Any]], timeout_s: float) -> Rows:
        try:
            found = self._online.online_read(
                self._store.config, view.view, [proto for _, proto in keys], list(view.features)
            )
        except Exception as e:  # as in read()
            raise FeatureReadError(f"online read failed ({e!r})") from e
        return [{k: v for k, v in (values or {}).items() if k in view.features} for _, values in found]

    def close(self) -> None:
        pass
