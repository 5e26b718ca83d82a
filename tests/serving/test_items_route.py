"""POST /v1/models/scenerec/items on the real ModelServer over a real SQLite Feast store and the
model's own ONNX graphs: an added item is retrieved in the next answer and flagged new, hidden
items leave the answers, a change written by the CLI reaches the running server, bad changes are
400s naming the line and field, and the route is documented and counted."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tests.serving.conftest import ROOT, Server, start_server
from tests.serving.test_server import known_user, predict


@pytest.fixture(scope="module")
def live_server(
    served_model: tuple[Path, Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A predictor of its own over a copy of the published repo (changes write to the store)."""
    _, model, repo = served_model
    copy = Path(shutil.copytree(repo, tmp_path_factory.mktemp("items") / "feature_repo"))
    shutil.rmtree(copy / "data" / "items", ignore_errors=True)  # what other tests (the fuzz) added
    running = start_server(model, copy, tmp_path_factory.mktemp("logs") / "predictor.log")
    yield running
    running.stop()


def change(server: Server, *records: dict, model: str = "scenerec") -> httpx.Response:
    body = "\n".join(json.dumps(r) for r in records)
    return httpx.post(
        f"{server.http}/v1/models/{model}/items",
        content=body,
        headers={"content-type": "application/x-ndjson"},
        timeout=60,
    )


def answer(server: Server, user: str, **fields: object) -> list[dict]:
    response = predict(server, {"user_id": user, "scene": "home", "explain": True, **fields})
    assert response.status_code == 200, response.text
    return response.json()["predictions"][0]["items"]


def test_an_added_item_is_retrieved_and_flagged_new(
    live_server: Server, served_model: tuple[Path, Path, Path]
) -> None:
    data, _, _ = served_model
    user, _ = known_user(served_model)
    items = pd.read_parquet(data / "items.parquet")
    everything = len(items) + 10
    before = answer(live_server, user, k=everything)
    assert not any(i["new"] for i in before)
    text = str(items["text"].iloc[0])
    added = change(live_server, {"item_id": "fresh-1", "title": "Fresh", "text": text, "category": "news"})
    assert added.status_code == 200, added.text
    assert added.json()["added"] == 1 and added.json()["model_version"]
    after = answer(live_server, user, k=everything)
    found = [i for i in after if i["item_id"] == "fresh-1"]
    assert len(found) == 1 and found[0]["new"] is True
    assert found[0]["parts"]["item_item"] == 0.0  # no co-occurrence yet
    assert sum(i["new"] for i in after) == 1 and len(after) == len(before) + 1
    # the fresh ranker (candidates) and retrieval agree on the new item's score
    ranked = answer(live_server, user, k=5, candidates=["fresh-1", before[0]["item_id"]])
    score = {i["item_id"]: i["score"] for i in ranked}
    assert score["fresh-1"] == pytest.approx(found[0]["score"], abs=1e-4)
    assert score[before[0]["item_id"]] == pytest.approx(before[0]["score"], abs=1e-4)


def test_hidden_items_leave_the_answers_and_come_back(
    live_server: Server, served_model: tuple[Path, Path, Path]
) -> None:
    user, _ = known_user(served_model)
    top = answer(live_server, user, k=10)[0]["item_id"]
    assert change(live_server, {"item_id": top, "action": "hide"}).json()["hidden"] == 1
    assert top not in {i["item_id"] for i in answer(live_server, user, k=10)}
    assert answer(live_server, user, k=5, candidates=[top]) == []
    assert change(live_server, {"item_id": top, "action": "show"}).json()["shown"] == 1
    assert answer(live_server, user, k=10)[0]["item_id"] == top
    change(live_server, {"item_id": "fresh-2", "text": "a brand new thing"})
    assert "fresh-2" in {i["item_id"] for i in answer(live_server, user, k=500)}
    assert change(live_server, {"item_id": "fresh-2", "action": "remove"}).json()["removed"] == 1
    assert "fresh-2" not in {i["item_id"] for i in answer(live_server, user, k=500)}
    gone = predict(live_server, {"user_id": user, "candidates": ["fresh-2"]})
    assert gone.status_code == 400 and "unknown item id 'fresh-2'" in gone.text


def test_a_cli_change_reaches_the_running_server(
    live_server: Server, served_model: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """Another process (the CLI) appends to the repo's catalogue log: the server serves it next."""
    _, model, _ = served_model
    user, _ = known_user(served_model)
    path = tmp_path / "new.csv"
    pd.DataFrame([{"item_id": "from-cli", "title": "A lamp", "text": "a warm brass lamp"}]).to_csv(
        path, index=False
    )
    command = [sys.executable, "-m", "scenerec.cli", "items", "add", "--data", str(path)]
    result = subprocess.run(
        [*command, "--model", str(model), "--repo", str(live_server.repo)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    asked = predict(live_server, {"user_id": user, "k": 1, "candidates": ["from-cli"]})  # before any batch
    assert asked.status_code == 200 and asked.json()["predictions"][0]["items"][0]["item_id"] == "from-cli"
    found = [i for i in answer(live_server, user, k=500) if i["item_id"] == "from-cli"]
    assert len(found) == 1 and found[0]["new"] is True


@pytest.mark.parametrize(
    ("records", "status", "message"),
    [
        ([{"item_id": "x1", "title": "", "text": ""}], 400, "body: line 1, field text: empty"),
        ([{"item_id": "i000", "text": "t"}], 400, "line 1: item_id 'i000': already in the model's catalogue"),
        ([{"item_id": "x2", "text": "t"}, {"item_id": "x3", "action": "sell"}], 400, "line 2, field action"),
        ([{"item_id": "nowhere", "action": "show"}], 400, "item_id 'nowhere': not in the catalogue"),
    ],
)
def test_bad_changes_are_400s_naming_the_line(
    live_server: Server, records: list[dict], status: int, message: str
) -> None:
    response = change(live_server, *records)
    assert response.status_code == status and message in response.json()["error"], response.text


def test_unknown_model_404_openapi_and_metrics(live_server: Server) -> None:
    assert change(live_server, {"item_id": "x", "text": "t"}, model="other").status_code == 404
    document = httpx.get(f"{live_server.http}/openapi.json", timeout=10).json()
    body = document["paths"]["/v1/models/{model_name}/items"]["post"]["requestBody"]["content"]
    assert body["application/x-ndjson"]["schema"]["properties"]["action"]["enum"] == [
        "add",
        "hide",
        "show",
        "remove",
    ]
    change(live_server, {"item_id": "metered", "text": "counted"})
    predict(live_server, {"user_id": "anyone", "k": 1})
    metrics = httpx.get(f"{live_server.http}/metrics", timeout=10).text
    assert 'scenerec_item_changes_total{model="scenerec",outcome="add"}' in metrics
    assert 'scenerec_catalogue_items{kind="added",model="scenerec"}' in metrics
