"""Events pushed into real Feast stores (SQLite and Redis): the history changes, duplicates do not,
bad rows are refused by name, and the accepted events are in the event log."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from scenerec.artifact import read_manifest
from scenerec.config import Config
from scenerec.data.schema import TIMESTAMP
from scenerec.errors import DataError
from scenerec.features.events import (
    EVENT_ID,
    EventLog,
    EventPusher,
    check_events,
    fold_events,
    parse_event_file,
    parse_json_lines,
)
from scenerec.features.repo import open_store, resolve_yaml

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def _config(model: Path) -> Config:
    return Config.from_dict(read_manifest(model)["config"])


def _history(store, user: str) -> list[str]:
    data = store.get_online_features(["user_recent_history:history_item_ids"], [{"user_id": user}]).to_dict()
    return list(data["history_item_ids"][0] or [])


def _profile(store, user: str) -> dict:
    refs = [f"user_lifetime_profile:{f}" for f in ("interaction_count", "distinct_scenes", "scenes_seen")]
    data = store.get_online_features(refs, [{"user_id": user}]).to_dict()
    return {k: v[0] for k, v in data.items()}


def _pusher(repo: Path, model: Path, online_store: str | None = None) -> EventPusher:
    store = open_store(repo, resolve_yaml(repo, None, online_store))
    items = set(pd.read_parquet(model / "items.parquet")["item_id"].astype(str))
    return EventPusher(store, EventLog.of_repo(repo), _config(model), known_items=items)


@pytest.fixture
def sqlite_copy(sqlite_repo: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(sqlite_repo, tmp_path / "repo"))


def _new_item_for(store, user: str, model: Path) -> str:
    history = set(_history(store, user))
    items = pd.read_parquet(model / "items.parquet")["item_id"].astype(str)
    return next(i for i in items if i not in history)


def test_check_events_fills_defaults_and_ids() -> None:
    frame = pd.DataFrame({"user_id": ["u1"], "item_id": ["i1"], TIMESTAMP: ["2026-12-07T10:00:00Z"]})
    events = check_events(frame, "f.csv", "row", now=NOW)
    assert events.loc[0, "scene"] == "default" and events.loc[0, "device"] == "unknown"
    assert events.loc[0, "label"] == 1.0
    again = check_events(frame, "f.csv", "row", now=NOW)
    assert events.loc[0, EVENT_ID] == again.loc[0, EVENT_ID]  # the same event, the same id
    other = check_events(frame.assign(item_id=["i2"]), "f.csv", "row", now=NOW)
    assert other.loc[0, EVENT_ID] != events.loc[0, EVENT_ID]


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ({"user_id": ["u1"], "item_id": ["i1"]}, "missing column(s) event_timestamp"),
        (
            {
                "user_id": ["u1", "u2"],
                "item_id": ["i1", "i2"],
                TIMESTAMP: ["2026-12-07T10:00:00Z", "2026-12-07 10:00"],
            },
            "row 2, field event_timestamp: '2026-12-07 10:00' has no time zone",
        ),
        (
            {"user_id": ["u1"], "item_id": ["i1"], TIMESTAMP: ["2027-01-01T00:00:00Z"]},
            "row 1, field event_timestamp",
        ),
        ({"user_id": [""], "item_id": ["i1"], TIMESTAMP: ["2026-12-07T10:00:00Z"]}, "row 1, field user_id"),
        (
            {"user_id": ["u1"], "item_id": ["i1"], TIMESTAMP: ["2026-12-07T10:00:00Z"], "label": ["x"]},
            "row 1, field label: 'x' (expected a number)",
        ),
        (
            {"user_id": ["u1"], "item_id": ["i1"], TIMESTAMP: ["2026-12-07T10:00:00Z"], "colour": ["x"]},
            "unknown column(s) colour",
        ),
    ],
)
def test_bad_events_name_the_row_and_field(frame: dict, message: str) -> None:
    with pytest.raises(DataError, match=None) as error:
        check_events(pd.DataFrame(frame), "events.csv", "row", now=NOW)
    assert message in str(error.value) and "events.csv" in str(error.value)


def test_json_lines_name_the_line() -> None:
    body = (
        b'{"user_id": "u1", "item_id": "i1", "event_timestamp": "2026-12-07T10:00:00Z"}\n{"user_id": "u2"\n'
    )
    with pytest.raises(DataError, match="body: line 2: not valid JSON"):
        parse_json_lines(body, now=NOW)
    events = parse_json_lines(body.splitlines()[0], now=NOW)
    assert list(events["user_id"]) == ["u1"]


def test_fold_keeps_first_occurrence_and_caps_history() -> None:
    config = Config()
    current = {
        "history_item_ids": ["a", "b"],
        "history_scenes": ["home", "home"],
        "interaction_count": 2,
        "conversion_rate": 0.5,
        "scenes_seen": ["home"],
    }
    events = check_events(
        pd.DataFrame(
            {
                "user_id": ["u"] * 3,
                "item_id": ["a", "c", "d"],
                TIMESTAMP: ["2026-12-07T10:00:00Z", "2026-12-07T10:01:00Z", "2026-12-07T10:02:00Z"],
                "scene": ["search", "search", "detail"],
                "event": ["click", "purchase", "click"],
            }
        ),
        "t",
        "row",
        now=NOW,
    )
    row = fold_events(current, events, config, NOW)
    assert row["history_item_ids"] == ["a", "b", "c", "d"]  # "a" again changes nothing
    assert row["history_scenes"] == ["home", "home", "search", "detail"]
    assert row["interaction_count"] == 4 and row["conversion_rate"] == pytest.approx(2 / 4)
    assert row["distinct_scenes"] == 3 and row["last_scene"] == "detail"
    short = Config.from_dict({**config.to_dict(), "model": {**config.to_dict()["model"], "max_history": 3}})
    assert fold_events(current, events, short, NOW)["history_item_ids"] == ["b", "c", "d"]


def test_push_file_changes_history_once_sqlite(
    sqlite_copy: Path, trained_model: tuple[Path, Path], tmp_path: Path
) -> None:
    _, model = trained_model
    pusher = _pusher(sqlite_copy, model)
    user = (
        "u0001"
        if _history(pusher.store, "u0001")
        else str(pd.read_parquet(sqlite_copy / "data/sources/users.parquet")["user_id"].iloc[0])
    )
    before = _history(pusher.store, user)
    count = _profile(pusher.store, user)["interaction_count"]
    item = _new_item_for(pusher.store, user, model)
    path = tmp_path / "events.csv"
    stamp = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    pd.DataFrame(
        {"user_id": [user, user], "item_id": [item, "not-in-catalogue"], TIMESTAMP: [stamp, stamp]}
    ).to_csv(path, index=False)
    first = pusher.push(parse_event_file(path))
    assert (first.accepted, first.duplicates, first.unknown_items, first.users) == (2, 0, 1, 1)
    after = _history(pusher.store, user)
    assert after[-2:] == sorted([item, "not-in-catalogue"]) or set(after[-2:]) == {item, "not-in-catalogue"}
    assert after[: len(before) - 2] == before[2:] or len(before) + 2 <= 20
    assert _profile(pusher.store, user)["interaction_count"] == count + 2
    second = pusher.push(parse_event_file(path))  # the same events again: nothing changes
    assert (second.accepted, second.duplicates) == (0, 2)
    assert _history(pusher.store, user) == after
    assert _profile(pusher.store, user)["interaction_count"] == count + 2
    logged = EventLog.of_repo(sqlite_copy).read()  # a fresh reader sees what was accepted
    assert sorted(logged["item_id"]) == sorted([item, "not-in-catalogue"])
    offline = pd.read_parquet(sqlite_copy / "data/sources/users.parquet")
    assert (offline["user_id"] == user).sum() == 2  # the published row and the pushed one


def test_push_reaches_redis(redis_repo: Path, trained_model: tuple[Path, Path]) -> None:
    _, model = trained_model
    pusher = _pusher(redis_repo, model, "redis")
    pusher.offline = False
    user = str(pd.read_parquet(redis_repo / "data/sources/users.parquet")["user_id"].iloc[3])
    item = _new_item_for(pusher.store, user, model)
    stamp = datetime.now(UTC).isoformat()
    events = check_events(
        pd.DataFrame({"user_id": [user], "item_id": [item], TIMESTAMP: [stamp]}), "t", "row"
    )
    try:
        assert pusher.push(events).accepted == 1
        assert _history(pusher.store, user)[-1] == item
        assert pusher.push(events).accepted == 0
    finally:  # the Redis repo is the session's: its rows go back to what publish wrote
        from scenerec.features.publish import publish

        publish(*trained_model, redis_repo, online_store="redis")
        shutil.rmtree(redis_repo / "data" / "events", ignore_errors=True)


def test_cli_pushes_a_file_and_refuses_a_bad_one(
    sqlite_copy: Path, trained_model: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from scenerec.cli import main

    _, model = trained_model
    user = str(pd.read_parquet(sqlite_copy / "data/sources/users.parquet")["user_id"].iloc[5])
    store = open_store(sqlite_copy, resolve_yaml(sqlite_copy))
    item = _new_item_for(store, user, model)
    good = tmp_path / "events.parquet"
    stamp = pd.Timestamp.now(tz="UTC") - pd.Timedelta(minutes=2)
    pd.DataFrame({"user_id": [user], "item_id": [item], TIMESTAMP: [stamp]}).to_parquet(good)
    args = ["events", "push", "--model", str(model), "--repo", str(sqlite_copy), "--json"]
    assert main([*args, "--data", str(good)]) == 0
    assert '"accepted": 1' in capsys.readouterr().out
    assert _history(store, user)[-1] == item
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,item_id,event_timestamp\nu1,i1,2026-01-01T10:00:00Z\nu1,i2,yesterday\n")
    assert main([*args, "--data", str(bad)]) == 2
    assert "bad.csv: row 2, field event_timestamp: 'yesterday'" in capsys.readouterr().err
