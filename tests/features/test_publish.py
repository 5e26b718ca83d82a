"""Publishing to the embedded store (SQLite + parquet): apply, materialize, read back, rerun, fail.

Integration: real Feast 0.67, a real trained model, repo copies under tmp_path.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from scenerec.artifact import ArtifactError, read_manifest
from scenerec.data import schema as c
from scenerec.features.cli import main
from scenerec.features.client import FeatureClient, FeatureTimeout
from scenerec.features.publish import PublishError, publish
from scenerec.features.repo import FeatureRepoError
from tests.features.conftest import copy_repo

pytestmark = pytest.mark.integration


def online_rows(repo: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the SQLite online store."""
    with sqlite3.connect(repo / "data" / "online.db") as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {
            t: sorted(db.execute(f'SELECT entity_key, feature_name, value, event_ts FROM "{t}"').fetchall())
            for t in tables
        }


def digests(repo: Path) -> dict[str, str]:
    return {
        str(p.relative_to(repo)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((repo / "data" / "sources").glob("*.parquet"))
    }


def test_publish_materializes_every_entity(sqlite_repo: Path, trained_model: tuple[Path, Path]) -> None:
    model = trained_model[1]
    users = pd.read_parquet(sqlite_repo / "data" / "sources" / "users.parquet")
    rows = online_rows(sqlite_repo)
    counts = {t: len({r[0] for r in found}) for t, found in rows.items()}
    n_items = read_manifest(model)["dims"]["items"]
    assert counts == {
        "scenerec_user_recent_history": len(users),
        "scenerec_user_lifetime_profile": len(users),
        "scenerec_item_model_vectors": n_items,
        "scenerec_item_model_profile": n_items,
        "scenerec_scene_lifetime_stats": 4,  # 3 scenes + default
    }
    assert not list((sqlite_repo / "data").glob(".publish-*"))  # staging cleaned up


def test_a_rerun_changes_nothing_and_loses_nothing(tmp_path: Path, trained_model: tuple[Path, Path]) -> None:
    repo = copy_repo(tmp_path / "repo")
    first = publish(*trained_model, repo)
    before, sources = online_rows(repo), digests(repo)
    second = publish(*trained_model, repo)
    assert online_rows(repo) == before
    assert digests(repo) == sources
    assert first.rows == second.rows


def test_a_failed_run_leaves_the_previous_online_state_readable(
    tmp_path: Path, trained_model: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = copy_repo(tmp_path / "repo")
    publish(*trained_model, repo)
    before = online_rows(repo)
    files = {p: (p.stat().st_ino, p.read_bytes()) for p in (repo / "data").glob("*.db")}

    from feast.infra.passthrough_provider import PassthroughProvider

    calls = []
    write = PassthroughProvider.ingest_df

    def boom(self: Any, *args: Any, **kwargs: Any) -> None:  # fails part-way: some batches are written
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("the offline store went away")
        write(self, *args, **kwargs)

    monkeypatch.setattr(PassthroughProvider, "ingest_df", boom)
    with pytest.raises(PublishError, match=r"sqlite online store failed.*went away.*untouched"):
        publish(*trained_model, repo, batch_rows=50)
    monkeypatch.undo()
    assert len(calls) == 4
    assert {p: (p.stat().st_ino, p.read_bytes()) for p in files} == files
    assert online_rows(repo) == before
    assert not list((repo / "data").glob(".publish-*"))
    client = FeatureClient.from_repo(repo, read_manifest(trained_model[1]))
    user = pd.read_parquet(repo / "data" / "sources" / "users.parquet")["user_id"].iloc[0]
    assert client.read(user, "home").missing == ()
    assert client.read(user, "home") == client.read_via_feast(user, "home")  # views still servable


def test_an_open_client_sees_a_republished_store(tmp_path: Path, trained_model: tuple[Path, Path]) -> None:
    data, model = trained_model
    repo = copy_repo(tmp_path / "repo")
    publish(data, model, repo)
    client = FeatureClient.from_repo(repo, read_manifest(model))
    log = pd.read_parquet(data / "interactions.parquet")
    user = str(log[c.USER_ID].iloc[0])
    assert client.read(user, "home") == client.read_via_feast(user, "home")  # both paths connected
    before = client.read(user, "home").values["user_recent_history__history_item_ids"]
    seen = set(log.loc[log[c.USER_ID] == user, c.ITEM_ID])
    new_item = next(i for i in pd.read_parquet(data / "items.parquet")[c.ITEM_ID] if i not in seen)
    newer = (
        log[log[c.USER_ID] == user]
        .tail(1)
        .assign(**{c.ITEM_ID: new_item, c.TIMESTAMP: log[c.TIMESTAMP].max() + pd.Timedelta(hours=1)})
    )
    data2 = tmp_path / "data2"
    shutil.copytree(data, data2)
    pd.concat([log, newer]).to_parquet(data2 / "interactions.parquet", index=False)
    publish(data2, model, repo)
    after = client.read(user, "home").values["user_recent_history__history_item_ids"]
    assert after[-1] == new_item and after[:-1] == before[-len(after) + 1 :]
    # Feast's own SQLite store keeps its connection to the replaced file until the client refreshes.
    assert client.read_via_feast(user, "home").values["user_recent_history__history_item_ids"] == before
    client.refresh()
    assert client.read(user, "home") == client.read_via_feast(user, "home")


def test_a_locked_store_times_out_with_a_typed_error(
    sqlite_repo: Path, trained_model: tuple[Path, Path]
) -> None:
    client = FeatureClient.from_repo(sqlite_repo, read_manifest(trained_model[1]), timeout_s=0.02)
    holder = sqlite3.connect(sqlite_repo / "data" / "online.db", isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        started = time.perf_counter()
        with pytest.raises(FeatureTimeout, match="exceeded 20 ms"):
            client.read("u1", "home")
        assert time.perf_counter() - started < 0.5
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    client.read("u1", "home")  # and recovers once the lock is gone


def test_a_model_naming_an_unknown_service_is_refused(
    tmp_path: Path, trained_model: tuple[Path, Path]
) -> None:
    data, model = trained_model
    model2 = tmp_path / "model"
    shutil.copytree(model, model2)
    manifest = json.loads((model2 / "manifest.json").read_text())
    manifest["feature_service"] = "ranker_v9"
    (model2 / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FeatureRepoError, match=r"manifest.json names feature service 'ranker_v9'.*ranker_v1"):
        publish(data, model2, copy_repo(tmp_path / "repo"))
    with pytest.raises(ArtifactError, match=r"no manifest\.json"):
        publish(data, tmp_path / "nothing", copy_repo(tmp_path / "repo2"))


def test_a_view_reading_an_unknown_source_is_named(tmp_path: Path, trained_model: tuple[Path, Path]) -> None:
    repo = copy_repo(tmp_path / "repo")
    definitions = repo / "feature_definitions.py"
    definitions.write_text(definitions.read_text().replace("data/sources/scenes.parquet", "data/scenes.csv"))
    with pytest.raises(FeatureRepoError, match=r"'scene_lifetime_stats' reads 'data/scenes.csv'"):
        publish(*trained_model, repo)
    assert not (repo / "data" / "online.db").exists()


def test_the_cli_publishes_and_reports(
    tmp_path: Path, trained_model: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data, model = trained_model
    repo = copy_repo(tmp_path / "repo")
    args = ["features", "publish", "--data", str(data), "--model", str(model), "--repo", str(repo)]
    assert main([*args, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["feature_service"] == "ranker_v1" and summary["online_store"] == "sqlite"
    assert summary["rows"]["scene"] == 4
    assert main(args) == 0
    assert "published ranker_v1 to the sqlite online store" in capsys.readouterr().out
