"""`--state_dir`: the event and catalogue logs beside a read-only feature repo (a ConfigMap on k8s).

The real server, the real CLI and a real SQLite store: pushes, item changes and the CLI's changes
go to the state directory, the server follows them there, and nothing is written under the repo.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tests.serving.conftest import ROOT, Server, start_server
from tests.serving.test_items_route import answer, change
from tests.serving.test_server import known_user

pytestmark = pytest.mark.integration


def tree(directory: Path) -> dict[str, int]:
    return {str(p.relative_to(directory)): p.stat().st_size for p in directory.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def stateful(
    served_model: tuple[Path, Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    _, model, repo = served_model
    base = tmp_path_factory.mktemp("state")
    copy = Path(shutil.copytree(repo, base / "feature_repo"))
    for kept in ("items", "events"):  # what other tests wrote into the shared repo
        shutil.rmtree(copy / "data" / kept, ignore_errors=True)
    state = base / "state"
    state.mkdir()
    running = start_server(model, copy, base / "predictor.log", "--state_dir", str(state))
    running.state = state  # type: ignore[attr-defined]
    yield running
    running.stop()


def test_changes_and_events_live_in_the_state_dir_and_the_repo_is_untouched(
    stateful: Server, served_model: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, model, _ = served_model
    state: Path = stateful.state  # type: ignore[attr-defined]
    user, _ = known_user(served_model)
    # the online store (SQLite in the repo's data/) is written by design: compare everything else
    before = {k: v for k, v in tree(stateful.repo).items() if not k.startswith("data/online")}
    added = change(stateful, {"item_id": "state-1", "title": "Kept apart", "text": "a copper kettle"})
    assert added.status_code == 200, added.text
    events = httpx.post(
        f"{stateful.http}/v1/models/scenerec/events",
        content=json.dumps(
            {"user_id": user, "item_id": "state-1", "event_timestamp": datetime.now(UTC).isoformat()}
        ),
        headers={"content-type": "application/x-ndjson"},
        timeout=60,
    )
    assert events.status_code == 200, events.text
    path = tmp_path / "new.csv"
    pd.DataFrame([{"item_id": "state-2", "title": "A lamp", "text": "a warm brass lamp"}]).to_csv(
        path, index=False
    )
    command = [
        sys.executable,
        "-m",
        "scenerec.cli",
        "items",
        "add",
        "--data",
        str(path),
        "--model",
        str(model),
    ]
    result = subprocess.run(
        [*command, "--repo", str(stateful.repo), "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    served = {i["item_id"] for i in answer(stateful, "someone-new", k=500)}
    assert {"state-1", "state-2"} <= served  # the server follows the state dir's catalogue log
    assert (state / "data" / "items" / "catalogue.jsonl").read_text().count("\n") == 2
    assert any((state / "data" / "events").iterdir())
    after = {k: v for k, v in tree(stateful.repo).items() if not k.startswith("data/online")}
    assert {k: v for k, v in after.items() if not k.startswith("data/sources/")} == {
        k: v for k, v in before.items() if not k.startswith("data/sources/")
    }
    assert (
        not (stateful.repo / "data" / "items").exists() and not (stateful.repo / "data" / "events").exists()
    )
