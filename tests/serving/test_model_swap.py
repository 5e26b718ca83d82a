"""A new model version goes live on the real ModelServer without dropping a request: through KServe's
V2 repository API (`/v2/repository/models/scenerec/load`) and through a watched model directory;
a version that fails its checks is refused and the old one keeps serving."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.serving.conftest import TINY_TRAIN, Server, scenerec, start_server
from tests.serving.test_server import known_user


@pytest.fixture(scope="module")
def second_model(served_model: tuple[Path, Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another version of the model: the same data and features, another seed."""
    data, _, _ = served_model
    out = tmp_path_factory.mktemp("second") / "model"
    scenerec("train", "--data", str(data), "--out", str(out), *TINY_TRAIN, "--set", "train.seed=7")
    return out


def version(model: Path) -> str:
    return str(json.loads((model / "manifest.json").read_text())["model_version"])


def point(link: Path, target: Path) -> None:
    """Repoint the served directory (a symlink) in one rename, as a deployment would."""
    tmp = link.with_name(f".{link.name}.new")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, link)


class SteadyLoad:
    """A client looping over V1 calls in a thread; every answer's status and version recorded."""

    def __init__(self, server: Server, user: str) -> None:
        self.server, self.user = server, user
        self.answers: list[tuple[int, str | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        body = {"instances": [{"user_id": self.user, "scene": "home", "k": 10}]}
        with httpx.Client(base_url=self.server.http, timeout=30) as client:
            while not self._stop.is_set():
                try:
                    answer = client.post("/v1/models/scenerec:predict", json=body)
                    found = (
                        answer.json()["predictions"][0]["model_version"]
                        if answer.status_code == 200
                        else None
                    )
                    self.answers.append((answer.status_code, found))
                except httpx.HTTPError as e:
                    self.answers.append((0, type(e).__name__))
                time.sleep(0.01)

    def __enter__(self) -> SteadyLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


@pytest.fixture
def linked(served_model: tuple[Path, Path, Path], tmp_path: Path) -> Path:
    link = tmp_path / "current"
    link.symlink_to(served_model[1])
    return link


def test_repository_load_swaps_under_load_and_refuses_a_broken_version(
    served_model: tuple[Path, Path, Path], second_model: Path, linked: Path, tmp_path: Path
) -> None:
    _, first, repo = served_model
    server = start_server(linked, repo, tmp_path / "predictor.log")
    user, _ = known_user(served_model)
    try:
        load = f"{server.http}/v2/repository/models/scenerec/load"
        with SteadyLoad(server, user) as steady:
            time.sleep(0.5)
            point(linked, second_model)
            answer = httpx.post(load, timeout=60)
            assert answer.status_code == 200, answer.text
            time.sleep(0.5)
        statuses = [status for status, _ in steady.answers]
        assert statuses and set(statuses) == {200}, steady.answers[-5:]  # not one call failed
        versions = [found for _, found in steady.answers]
        assert versions[0] == version(first) and versions[-1] == version(second_model)
        switched = versions.index(version(second_model))
        assert set(versions[switched:]) == {version(second_model)}  # no flapping back
        # a broken copy of another version: its graph no longer matches the manifest's hash
        broken = Path(shutil.copytree(first, tmp_path / "broken"))
        manifest = json.loads((broken / "manifest.json").read_text())
        manifest["model_version"] = "broken-version"
        (broken / "manifest.json").write_text(json.dumps(manifest))
        ranker = broken / manifest["graphs"]["ranker"]["file"]
        ranker.write_bytes(ranker.read_bytes()[:-16])
        point(linked, broken)
        refused = httpx.post(load, timeout=60)
        assert refused.status_code == 400, refused.text
        assert "not swapped" in refused.text and "ranker" in refused.text
        still = httpx.post(
            f"{server.http}/v1/models/scenerec:predict", json={"instances": [{"user_id": user}]}, timeout=30
        )
        assert still.json()["predictions"][0]["model_version"] == version(second_model)
        metrics = httpx.get(f"{server.http}/metrics", timeout=10).text
        assert 'scenerec_model_swaps_total{model="scenerec",outcome="swapped"} 1.0' in metrics
        assert 'scenerec_model_swaps_total{model="scenerec",outcome="refused"} 1.0' in metrics
        assert f'scenerec_model_info{{model="scenerec",version="{version(second_model)}"}} 1.0' in metrics
    finally:
        server.stop()


def test_a_watched_model_directory_swaps_by_itself(
    served_model: tuple[Path, Path, Path], second_model: Path, linked: Path, tmp_path: Path
) -> None:
    _, first, repo = served_model
    server = start_server(linked, repo, tmp_path / "predictor.log", "--model_watch_s", "0.2")
    user, _ = known_user(served_model)
    try:
        body = {"instances": [{"user_id": user, "k": 3}]}
        ask = lambda: httpx.post(f"{server.http}/v1/models/scenerec:predict", json=body, timeout=30)  # noqa: E731
        assert ask().json()["predictions"][0]["model_version"] == version(first)
        point(linked, second_model)
        deadline = time.monotonic() + 30
        while ask().json()["predictions"][0]["model_version"] != version(second_model):
            assert time.monotonic() < deadline, "the watched directory's new version never went live"
            time.sleep(0.1)
    finally:
        server.stop()


def test_added_and_hidden_items_outlive_a_swap(
    served_model: tuple[Path, Path, Path], second_model: Path, linked: Path, tmp_path: Path
) -> None:
    """The new version places the catalogue log's added items with its own item tower."""
    _, _, repo = served_model
    copy = Path(shutil.copytree(repo, tmp_path / "feature_repo"))
    shutil.rmtree(copy / "data" / "items", ignore_errors=True)
    server = start_server(linked, copy, tmp_path / "predictor.log", "--model_watch_s", "0.2")
    user, _ = known_user(served_model)
    items = f"{server.http}/v1/models/scenerec/items"
    try:
        added = httpx.post(items, content='{"item_id": "kept-1", "text": "a lamp"}', timeout=60)
        assert added.status_code == 200, added.text
        body = {"instances": [{"user_id": user, "k": 3, "explain": True, "candidates": ["kept-1", "i000"]}]}
        ask = lambda: httpx.post(f"{server.http}/v1/models/scenerec:predict", json=body, timeout=30)  # noqa: E731
        hidden = httpx.post(items, content='{"item_id": "i000", "action": "hide"}', timeout=60)
        assert hidden.status_code == 200, hidden.text
        before = ask().json()["predictions"][0]
        assert [(i["item_id"], i["new"]) for i in before["items"]] == [("kept-1", True)]
        point(linked, second_model)
        deadline = time.monotonic() + 30
        while (after := ask().json()["predictions"][0])["model_version"] != version(second_model):
            assert time.monotonic() < deadline, "the watched directory's new version never went live"
            time.sleep(0.1)
        assert [(i["item_id"], i["new"]) for i in after["items"]] == [("kept-1", True)]
        assert after["items"][0]["score"] != pytest.approx(before["items"][0]["score"])  # its own weights
    finally:
        server.stop()
