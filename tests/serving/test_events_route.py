"""POST /v1/models/scenerec/events on the real ModelServer over a real SQLite Feast store: a pushed
click changes that user's next answer, a duplicate changes nothing, bad events are 400s naming the
line and field, and the route is documented in /openapi.json."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from scenerec.features.events import EventLog
from tests.serving.conftest import Server, start_server
from tests.serving.test_server import known_user, predict


@pytest.fixture(scope="module")
def live_server(
    served_model: tuple[Path, Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A predictor of its own over a copy of the published repo (pushes change the store)."""
    _, model, repo = served_model
    copy = Path(shutil.copytree(repo, tmp_path_factory.mktemp("events") / "feature_repo"))
    running = start_server(model, copy, tmp_path_factory.mktemp("logs") / "predictor.log")
    yield running
    running.stop()


def push(server: Server, body: bytes | str) -> httpx.Response:
    return httpx.post(
        f"{server.http}/v1/models/scenerec/events",
        content=body,
        headers={"content-type": "application/x-ndjson"},
        timeout=30,
    )


def event(user: str, item: str, **fields: object) -> str:
    return json.dumps(
        {"user_id": user, "item_id": item, "event_timestamp": datetime.now(UTC).isoformat(), **fields}
    )


def test_a_pushed_click_changes_the_next_answer(
    live_server: Server, served_model: tuple[Path, Path, Path]
) -> None:
    user, _ = known_user(served_model)
    before = predict(live_server, {"user_id": user, "scene": "home", "k": 10}).json()["predictions"][0][
        "items"
    ]
    top = before[0]["item_id"]
    line = event(user, top, scene="home", event="click", event_id=f"test-{user}-{top}")
    first = push(live_server, line + "\n")
    assert first.status_code == 200, first.text
    assert first.json()["accepted"] == 1 and first.json()["users"] == 1
    after = predict(live_server, {"user_id": user, "scene": "home", "k": 10}).json()["predictions"][0][
        "items"
    ]
    assert top not in {i["item_id"] for i in after}  # now in the history: excluded as seen
    assert [i["item_id"] for i in after] != [i["item_id"] for i in before]
    again = push(live_server, line)
    assert again.status_code == 200 and again.json()["accepted"] == 0 and again.json()["duplicates"] == 1
    unchanged = predict(live_server, {"user_id": user, "scene": "home", "k": 10}).json()["predictions"][0][
        "items"
    ]
    assert [i["item_id"] for i in unchanged] == [i["item_id"] for i in after]
    assert f"test-{user}-{top}" in EventLog.of_repo(live_server.repo).read()["event_id"].tolist()
    metrics = httpx.get(f"{live_server.http}/metrics", timeout=10).text
    assert 'scenerec_events_total{model="scenerec",outcome="accepted"} 1.0' in metrics
    assert 'scenerec_events_total{model="scenerec",outcome="duplicate"} 1.0' in metrics


def test_events_of_a_new_user_and_an_unknown_item(live_server: Server) -> None:
    body = "\n".join([event("brand-new-user", "i001"), event("brand-new-user", "not-yet-in-catalogue")])
    answer = push(live_server, body)
    assert answer.status_code == 200, answer.text
    assert (answer.json()["accepted"], answer.json()["unknown_items"]) == (2, 1)
    (prediction,) = predict(live_server, {"user_id": "brand-new-user", "scene": "home", "k": 5}).json()[
        "predictions"
    ]
    assert prediction["fallback"] is None  # the user has a history now
    assert "i001" not in {i["item_id"] for i in prediction["items"]}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"user_id": "u1", "item_id": "i1"}', "missing column(s) event_timestamp"),
        (
            '{"user_id": "u1", "item_id": "i1", "event_timestamp": "2026-01-01T00:00:00Z"}\n'
            '{"user_id": "u1", "item_id": "i2", "event_timestamp": "2026-01-01 10:00"}',
            "line 2, field event_timestamp: '2026-01-01 10:00' has no time zone",
        ),
        ('{"user_id": "u1", "item_id": "i1", "event_timestamp": "2999-01-01T00:00:00Z"}', "is in the future"),
        (
            '{"user_id": "u1", "item_id": "i1", "event_timestamp": "2026-01-01T00:00:00Z"}\n{"user_id"',
            "line 2",
        ),
        ("", "no events"),
    ],
)
def test_bad_events_are_400s_naming_the_line_and_field(live_server: Server, body: str, message: str) -> None:
    answer = push(live_server, body)
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["error"]


def test_unknown_model_is_404_and_route_is_documented(live_server: Server) -> None:
    answer = httpx.post(f"{live_server.http}/v1/models/nope/events", content=event("u1", "i001"), timeout=10)
    assert answer.status_code == 404 and "nope" in answer.json()["error"]
    document = httpx.get(f"{live_server.http}/openapi.json", timeout=10).json()
    route = document["paths"]["/v1/models/{model_name}/events"]["post"]
    schema = route["requestBody"]["content"]["application/x-ndjson"]["schema"]
    assert set(schema["required"]) == {"user_id", "item_id", "event_timestamp"}
