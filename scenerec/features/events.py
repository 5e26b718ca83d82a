"""Fresh events into the feature store: `scenerec events push` and the predictor's events route.

An event is one interaction row of the data contract (user_id, item_id, event_timestamp, and
optionally scene, event, label, device) with an id: the `event_id` column when given, else a hash
of its fields, so the same event sent twice is the same event.

    events = parse_event_file(path)          # or parse_json_lines(body, now) for the HTTP route
    result = EventPusher(store, log, config).push(events)

What a push does, in this order, and why:
1. Validate every row (a clear error naming the row and the field; nothing is written).
2. Drop events already accepted (their ids are in the event log) and repeats inside the batch.
3. Read the affected users' current rows (history and profile) from the online store, fold the
   new events in with the data contract's own rule (a repeated (user, item) pair keeps its first
   occurrence, so it changes neither the history nor the counts), and write the new rows through
   Feast's push API (`user_push`, behind both user views). A store that is down fails the push
   here: nothing was accepted, the caller answers 503 and the client retries.
4. Append the accepted events to the event log (`<repo>/data/events/events-YYYYMMDD.jsonl`, one
   fsynced write per push): the offline record in the data contract's interaction columns, which
   the next training run reads next to the dataset, and the ids that make step 2 idempotent.
   With `offline` (the CLI's bulk pushes) the new user rows are also appended to the user views'
   offline source, so a later `feast materialize` reproduces them; the predictor's route leaves
   that rewrite (O(users) per push) to the next `scenerec features publish`.
Events on items the model does not know are stored like any other (the history keeps them; the
predictor drops ids it cannot score, so they count once the item exists) and counted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from scenerec.config import Config
from scenerec.data import schema as c
from scenerec.data.io import file_lock, write_parquet
from scenerec.errors import DataError, ScenerecError
from scenerec.features.compute import EVENT_TIMESTAMP, USER_ID
from scenerec.features.records import read_json_lines, read_table_file

if TYPE_CHECKING:
    from feast import FeatureStore

log = logging.getLogger(__name__)

EVENT_ID = "event_id"
USER_PUSH = "user_push"  # the PushSource of feature_repo/feature_definitions.py
HISTORY_VIEW, PROFILE_VIEW = "user_recent_history", "user_lifetime_profile"
EVENTS_DIR = "data/events"
# An event from the future beyond this skew between clocks is refused (a wrong time zone, usually).
MAX_CLOCK_SKEW = timedelta(minutes=5)
EVENT_COLUMNS = (
    EVENT_ID,
    c.USER_ID,
    c.ITEM_ID,
    c.TIMESTAMP,
    c.SCENE,
    c.EVENT,
    c.LABEL,
    c.DEVICE,
)
_DEFAULTS: dict[str, Any] = {
    c.SCENE: c.DEFAULT_SCENE,
    c.EVENT: c.DEFAULT_EVENT,
    c.LABEL: 1.0,
    c.DEVICE: c.DEFAULT_DEVICE,
}


class StoreUnavailable(ScenerecError):
    """The online store failed during a push: nothing of it was accepted (retry later)."""

    exit_code = 3


# ---- reading and checking events -------------------------------------------------------------
def parse_event_file(path: str | Path, now: datetime | None = None) -> pd.DataFrame:
    """Events from a parquet or CSV file in the data contract's interaction columns, checked."""
    return check_events(read_table_file(path, "events"), str(path), row_label="row", now=now)


def parse_json_lines(body: bytes, now: datetime | None = None, source: str = "body") -> pd.DataFrame:
    """Events from JSON lines (one object per line; a JSON array of objects is taken too), checked."""
    records = read_json_lines(body, source, "event")
    if not records:
        raise DataError(f"{source}: no events (expected JSON lines with user_id, item_id, event_timestamp)")
    return check_events(pd.DataFrame.from_records(records), source, row_label="line", now=now)


def check_events(
    frame: pd.DataFrame, source: str, row_label: str, now: datetime | None = None
) -> pd.DataFrame:
    """The events with defaults filled in and ids set; a DataError naming the row and field otherwise."""
    now = now or datetime.now(UTC)
    required = [col.name for col in c.INTERACTIONS.columns if col.required]
    missing = [name for name in required if name not in frame.columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {', '.join(missing)} (expected {', '.join(required)})")
    known = {col.name for col in c.INTERACTIONS.columns} | {EVENT_ID}
    unknown = sorted(set(map(str, frame.columns)) - known)
    if unknown:
        raise DataError(
            f"{source}: unknown column(s) {', '.join(unknown)} (expected {', '.join(EVENT_COLUMNS)})"
        )
    if len(frame) == 0:
        raise DataError(f"{source}: no events")
    out = pd.DataFrame(index=range(len(frame)))
    for name in (c.USER_ID, c.ITEM_ID):
        values = frame[name].reset_index(drop=True)
        for i, value in enumerate(values):
            if not isinstance(value, str | int | np.integer) or not str(value).strip():
                raise DataError(
                    f"{source}: {row_label} {i + 1}, field {name}: {value!r} (expected a non-empty id)"
                )
        out[name] = values.astype(str).str.strip()
    out[c.TIMESTAMP] = _timestamps(frame[c.TIMESTAMP].reset_index(drop=True), source, row_label, now)
    for name, default in _DEFAULTS.items():
        values = (
            frame[name].reset_index(drop=True) if name in frame.columns else pd.Series([default] * len(frame))
        )
        if name == c.LABEL:
            numbers = pd.to_numeric(values.where(values.astype(str) != "", default), errors="coerce")
            bad = np.flatnonzero(numbers.isna().to_numpy())
            if len(bad):
                value = values[bad[0]]
                raise DataError(
                    f"{source}: {row_label} {bad[0] + 1}, field {name}: {value!r} (expected a number)"
                )
            out[name] = numbers.astype(np.float64)
        else:
            text = values.where(values.notna(), default).astype(str).str.strip()
            out[name] = text.where(text != "", default)
    if EVENT_ID in frame.columns:
        ids = frame[EVENT_ID].reset_index(drop=True)
        for i, value in enumerate(ids):
            if value is None or (isinstance(value, float) and np.isnan(value)) or not str(value).strip():
                raise DataError(
                    f"{source}: {row_label} {i + 1}, field {EVENT_ID}: empty (expected an id, or no column)"
                )
        out[EVENT_ID] = ids.astype(str).str.strip()
    else:
        out[EVENT_ID] = [_event_hash(row) for row in out.itertuples(index=False)]
    return out[list(EVENT_COLUMNS)]


def _timestamps(values: pd.Series, source: str, row_label: str, now: datetime) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(values):
        if getattr(values.dt, "tz", None) is None:
            raise DataError(
                f"{source}: {row_label} 1, field {c.TIMESTAMP}: timestamps without a time zone "
                "(expected timezone-aware UTC)"
            )
        stamps = values.dt.tz_convert("UTC")
    else:
        parsed = []
        for i, value in enumerate(values):
            try:
                stamp = pd.Timestamp(value)
                valid = not pd.isna(stamp)
            except (ValueError, TypeError):
                valid = False
            if not valid:
                raise DataError(
                    f"{source}: {row_label} {i + 1}, field {c.TIMESTAMP}: {value!r} "
                    "(expected an ISO 8601 time with a zone, e.g. 2026-12-07T10:00:00Z)"
                )
            if stamp.tzinfo is None:
                raise DataError(
                    f"{source}: {row_label} {i + 1}, field {c.TIMESTAMP}: {value!r} has no time zone "
                    "(expected e.g. 2026-12-07T10:00:00Z)"
                )
            if stamp > pd.Timestamp(now) + MAX_CLOCK_SKEW:
                raise DataError(
                    f"{source}: {row_label} {i + 1}, field {c.TIMESTAMP}: {value!r} is in the future "
                    f"(now {pd.Timestamp(now).isoformat()}; expected at most {MAX_CLOCK_SKEW} ahead)"
                )
            if stamp.year < 1970:
                raise DataError(
                    f"{source}: {row_label} {i + 1}, field {c.TIMESTAMP}: {value!r} (expected 1970 or later)"
                )
            parsed.append(stamp.tz_convert("UTC"))
        stamps = pd.Series(pd.DatetimeIndex(parsed))
    late = np.flatnonzero((stamps > pd.Timestamp(now) + MAX_CLOCK_SKEW).to_numpy())
    if len(late):
        raise DataError(
            f"{source}: {row_label} {late[0] + 1}, field {c.TIMESTAMP}: {stamps[late[0]].isoformat()} is in "
            f"the future (now {pd.Timestamp(now).isoformat()}; expected at most {MAX_CLOCK_SKEW} ahead)"
        )
    return stamps.astype("datetime64[ns, UTC]")


def _event_hash(row: Any) -> str:
    fields = (row.user_id, row.item_id, pd.Timestamp(row.event_timestamp).isoformat(), row.scene, row.event)
    return hashlib.sha1("\x1f".join(map(str, fields)).encode()).hexdigest()[:20]


# ---- the event log ----------------------------------------------------------------------------
class EventLog:
    """The accepted events, appended as JSON lines to one file per UTC day under
    `<repo>/data/events/`, and their ids (what makes a push idempotent).

    One push is one `write` of whole lines, flushed and fsynced before the push is acknowledged: a
    crash can leave at most an unacknowledged partial last line, which `read` skips (and reports).
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._ids: set[str] | None = None
        self._lock = threading.Lock()

    @classmethod
    def of_repo(cls, repo: str | Path) -> EventLog:
        """The log under a feature repo, or under a `--state_dir` (the same layout)."""
        return cls(Path(repo) / EVENTS_DIR)

    def ids(self) -> set[str]:
        """Ids of every accepted event (read once, then kept up to date by `append`)."""
        if self._ids is None:
            self._ids = set(self.read()[EVENT_ID].astype(str))
        return self._ids

    def new(self, events: pd.DataFrame) -> pd.DataFrame:
        """The events not accepted before, first of each id."""
        seen = self.ids()
        fresh = ~events[EVENT_ID].isin(seen) & ~events[EVENT_ID].duplicated()
        return events[fresh.to_numpy()]

    def append(self, events: pd.DataFrame) -> Path | None:
        """Append the events (one write, fsynced); their ids become known."""
        if len(events) == 0:
            return None
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"events-{datetime.now(UTC):%Y%m%d}.jsonl"
        frame = events.assign(**{c.TIMESTAMP: events[c.TIMESTAMP].map(lambda t: t.isoformat())})
        text = "".join(json.dumps(record) + "\n" for record in frame.to_dict(orient="records"))
        with self._lock:
            descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(descriptor, text.encode())
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
            self.ids().update(events[EVENT_ID])
        return path

    def read(self) -> pd.DataFrame:
        """Every accepted event, in the data contract's interaction columns plus event_id."""
        records: list[dict[str, Any]] = []
        for path in sorted(self.directory.glob("events-*.jsonl")):
            lines = path.read_text().split("\n")
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:  # only an unacknowledged push's partial last line
                    log.warning(
                        "%s: line %d is incomplete (a push cut off before it was accepted)", path, number
                    )
        if not records:
            return pd.DataFrame(columns=list(EVENT_COLUMNS))
        frame = pd.DataFrame.from_records(records, columns=list(EVENT_COLUMNS))
        frame[c.TIMESTAMP] = pd.to_datetime(frame[c.TIMESTAMP], utc=True, format="ISO8601")
        return frame


# ---- folding events into user rows ------------------------------------------------------------
@dataclass
class PushResult:
    """What one push did: counts, and how long it took."""

    received: int
    accepted: int
    duplicates: int
    unknown_items: int
    users: int
    seconds: float
    log_file: str | None = None
    users_changed: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "unknown_items": self.unknown_items,
            "users": self.users,
            "seconds": round(self.seconds, 4),
        }


def fold_events(
    current: dict[str, Any] | None, events: pd.DataFrame, config: Config, now: datetime | None = None
) -> dict[str, Any]:
    """One user's new row (history and profile features) from the stored row and new events.

    The same rule as the data contract's cleaning: a (user, item) pair keeps its first occurrence,
    so an item already in the stored history changes nothing. Counts grow by the new items only.
    The row's timestamp is when it was written (or its latest event, if later): a late event still
    replaces the stored row, which an online store that keeps the newest row would otherwise skip.
    """
    max_history = config.model.max_history
    items = list(current.get("history_item_ids") or []) if current else []
    scenes = list(current.get("history_scenes") or []) if current else []
    count = int(current.get("interaction_count") or 0) if current else 0
    rate = float(current.get("conversion_rate") or 0.0) if current else 0.0
    seen_scenes = set(current.get("scenes_seen") or []) if current else set()
    last_scene = current.get("last_scene") if current else None
    last_device = current.get("last_device") if current else None
    latest = pd.Timestamp(now or datetime.now(UTC))
    present = set(items)
    conversions = rate * count
    ordered = events.sort_values([c.TIMESTAMP, c.ITEM_ID], kind="stable")
    converted = _converted(ordered, config)
    for row, is_conversion in zip(ordered.itertuples(index=False), converted, strict=True):
        stamp = pd.Timestamp(str(row.event_timestamp))
        latest = max(latest, stamp)
        if row.item_id in present:
            continue
        present.add(row.item_id)
        items.append(row.item_id)
        scenes.append(row.scene)
        count += 1
        conversions += float(is_conversion)
        seen_scenes.add(row.scene)
        last_scene, last_device = row.scene, row.device
    return {
        USER_ID: str(ordered[c.USER_ID].iloc[0]),
        "history_item_ids": items[-max_history:],
        "history_scenes": scenes[-max_history:],
        "interaction_count": np.int64(count),
        "conversion_rate": np.float64(conversions / count if count else 0.0),
        "distinct_scenes": np.int64(len(seen_scenes)),
        "scenes_seen": sorted(seen_scenes),
        "last_scene": str(last_scene if last_scene is not None else c.DEFAULT_SCENE),
        "last_device": str(last_device if last_device is not None else c.DEFAULT_DEVICE),
        EVENT_TIMESTAMP: latest.tz_convert("UTC"),
    }


def _converted(events: pd.DataFrame, config: Config) -> np.ndarray:
    kinds = events[c.EVENT].str.lower()
    wanted = {e.lower() for e in config.data.conversion_events}
    rated = (kinds == c.RATING_EVENT) & (events[c.LABEL] >= config.data.conversion_min_rating)
    return (kinds.isin(wanted) | rated).to_numpy()


def write_online(store: FeatureStore, views: list[Any], rows: pd.DataFrame, key: str, during: str) -> None:
    """`rows` into the online store for each of a push source's `views`: what `FeatureStore.push`
    does per view, minus its registry reads; any failure is a StoreUnavailable (nothing accepted)."""
    provider = store._get_provider()
    try:
        for view in views:
            provider.ingest_df(view, rows[[key, *(f.name for f in view.features), EVENT_TIMESTAMP]])
    except Exception as e:
        raise StoreUnavailable(f"feature store write failed {during} ({type(e).__name__}: {e})") from e


class EventPusher:
    """Pushes checked events into one Feast store and its event log (see the module's steps)."""

    def __init__(
        self,
        store: FeatureStore,
        event_log: EventLog,
        config: Config,
        known_items: set[str] | None = None,
        offline: bool = True,
    ) -> None:
        self.store, self.log, self.config = store, event_log, config
        self.known_items, self.offline = known_items, offline
        self._lock = threading.Lock()  # pushes of one process are serialised (read-fold-write)
        # the push source's views, read from the registry once (Feast's push parses them per call)
        self._views = [
            view
            for view in store.list_feature_views()
            if getattr(view.stream_source, "name", None) == USER_PUSH
        ]
        if {v.name for v in self._views} != {HISTORY_VIEW, PROFILE_VIEW}:
            raise ScenerecError(
                f"feature repo {store.repo_path}: push source {USER_PUSH!r} must feed {HISTORY_VIEW} and "
                f"{PROFILE_VIEW} (found {sorted(v.name for v in self._views)}); "
                "run `scenerec features publish`"
            )
        self._features = [f"{v.name}:{f.name}" for v in self._views for f in v.features]

    def push(self, events: pd.DataFrame) -> PushResult:
        started = time.perf_counter()
        # pushes to one store from several processes (CLI, predictor workers) go one at a time:
        # each reads, folds and writes user rows, which two at once would overwrite; the lock lives
        # beside the log they share (the repo's data/, or a --state_dir's)
        with self._lock, file_lock(self.log.directory.parent / ".events.lock"):
            fresh = self.log.new(events)
            unknown = 0 if self.known_items is None else int((~fresh[c.ITEM_ID].isin(self.known_items)).sum())
            rows = self._user_rows(fresh) if len(fresh) else pd.DataFrame()
            if len(rows):
                self._write(rows)
            path = self.log.append(fresh)
        return PushResult(
            received=len(events),
            accepted=len(fresh),
            duplicates=len(events) - len(fresh),
            unknown_items=unknown,
            users=len(rows),
            seconds=time.perf_counter() - started,
            log_file=str(path) if path else None,
            users_changed=[str(u) for u in rows[USER_ID]] if len(rows) else [],
        )

    def _user_rows(self, events: pd.DataFrame) -> pd.DataFrame:
        users = sorted(events[c.USER_ID].unique())
        try:
            current = self.store.get_online_features(
                self._features, [{USER_ID: u} for u in users], full_feature_names=False
            ).to_dict()
        except Exception as e:
            raise StoreUnavailable(
                f"feature store read failed during the push ({type(e).__name__}: {e})"
            ) from e
        rows, now = [], datetime.now(UTC)
        for at, user in enumerate(users):
            stored = {k: v[at] for k, v in current.items()}
            if not stored.get("history_item_ids"):
                stored = {}
            rows.append(fold_events(stored or None, events[events[c.USER_ID] == user], self.config, now))
        return pd.DataFrame(rows)

    def _write(self, rows: pd.DataFrame) -> None:
        write_online(self.store, self._views, rows, USER_ID, "during the push")
        if self.offline:
            self._append_offline(rows)

    def _append_offline(self, rows: pd.DataFrame) -> None:
        """The new rows appended to the user views' batch source (one parquet: both views share it).

        Not `FeatureStore.write_to_offline_store`: Feast 0.67's file offline store cannot map a
        string-list column (`list<element: string>`: KeyError in feast.type_map) and the history is
        one. The file is rewritten to a temporary name and renamed, like `publish` writes it.
        """
        view = self.store.get_feature_view(HISTORY_VIEW)
        path = Path(self.store.repo_path) / view.batch_source.path  # type: ignore[union-attr]
        existing = pd.read_parquet(path)
        combined = pd.concat([existing, rows[existing.columns]], ignore_index=True)
        write_parquet(combined, path)
