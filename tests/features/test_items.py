"""New, hidden and removed items through real Feast stores (SQLite and Redis) and the model's own
ONNX text encoder and item tower: the item rows, the catalogue log, repeats, bad rows by name, and
a store that fails accepting nothing."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scenerec.artifact import read_manifest
from scenerec.catalogue import CatalogueLog, CatalogueState
from scenerec.errors import DataError
from scenerec.features.events import StoreUnavailable
from scenerec.features.items import ItemWriter, check_item_records, parse_item_file, parse_item_lines
from scenerec.features.model_ids import ModelIds
from scenerec.features.repo import open_store, resolve_yaml
from scenerec.item_encoder import ItemEncoder

NEW = [
    {"item_id": "n-lamp", "title": "Desk lamp", "text": "a warm brass desk lamp", "category": "home"},
    {"item_id": "n-guitar", "title": "Guitar", "text": "", "category": "music"},  # text falls back to title
]


def _writer(repo: Path, model: Path, online_store: str | None = None, offline: bool = True) -> ItemWriter:
    manifest = read_manifest(model)
    store = open_store(repo, resolve_yaml(repo, None, online_store))
    trained = ModelIds.load(model, manifest).items
    return ItemWriter(
        store,
        CatalogueLog.of_repo(repo),
        ItemEncoder(model, manifest),
        trained,
        repo / "data",
        offline=offline,
    )


def _item_rows(store, items: list[str]) -> dict:
    refs = ["item_model_vectors:vector", "item_model_vectors:text_embedding", "item_model_profile:cold"]
    return store.get_online_features(refs, [{"item_id": i} for i in items]).to_dict()


@pytest.fixture
def sqlite_copy(sqlite_repo: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(sqlite_repo, tmp_path / "repo"))


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([{"title": "x"}], "line 1, field item_id: None"),
        ([{"item_id": "n1", "title": "", "text": " "}], "line 1, field text: empty, and no title either"),
        ([{"item_id": "n1", "text": "t", "price": 3}], "line 1: unknown field 'price'"),
        (
            [{"item_id": "n1", "text": "t"}, {"item_id": "n2", "action": "sell"}],
            "line 2, field action: 'sell'",
        ),
        ([{"item_id": "n1", "text": 5}], "line 1, field text: 5 \\(expected a string\\)"),
        ([{"item_id": "x" * 300, "text": "t"}], "line 1, field item_id: 300 characters"),
    ],
)
def test_bad_items_name_the_line_and_field(records: list[dict], message: str) -> None:
    with pytest.raises(DataError, match=message):
        check_item_records(records, "body", "line", None)


def test_files_and_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    pd.DataFrame(NEW).to_csv(path, index=False)
    changes = parse_item_file(path, "add")
    assert [c.item_id for c in changes] == ["n-lamp", "n-guitar"] and changes[1].text == "Guitar"
    hides = parse_item_lines(
        b'{"item_id": "n-lamp", "action": "hide"}\n\n{"item_id": "i001", "action": "show"}'
    )
    assert [(c.action, c.item_id) for c in hides] == [("hide", "n-lamp"), ("show", "i001")]
    with pytest.raises(DataError, match="line 2: not valid JSON"):
        parse_item_lines(b'{"item_id": "a", "text": "t"}\n{"item_id": ')
    pd.DataFrame({"item_id": ["a"], "action": ["hide"]}).to_csv(bad := tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match=r"bad\.csv: column 'action': the command says"):
        parse_item_file(bad, "hide")


def test_item_encoder_matches_training_embeddings(trained_model: tuple[Path, Path]) -> None:
    """Serving's torch-free tokenizer + text_encoder.onnx give the embeddings training stored."""
    data, model = trained_model
    encoder = ItemEncoder(model, read_manifest(model))
    stored = pd.read_parquet(model / "items.parquet")
    texts = pd.read_parquet(data / "items.parquet").set_index("item_id").loc[stored["item_id"][:40], "text"]
    got = encoder.embed([str(t) for t in texts])
    np.testing.assert_allclose(got, np.stack(stored["text_embedding"][:40]), atol=1e-4)
    tables = encoder.tables(got)
    assert tables.vectors().shape == (40, read_manifest(model)["dims"]["query"])
    assert np.isfinite(tables.vectors()).all()


def test_added_items_reach_the_sqlite_store_and_the_log(
    sqlite_copy: Path, trained_model: tuple[Path, Path]
) -> None:
    _, model = trained_model
    writer = _writer(sqlite_copy, model)
    result = writer.apply(check_item_records(NEW, "body", "line", None), "body")
    assert (result.received, result.added) == (2, ["n-lamp", "n-guitar"])
    rows = _item_rows(writer.store, ["n-lamp", "n-guitar"])
    assert rows["cold"] == [True, True]
    width = read_manifest(model)["dims"]["query"]
    assert [len(v) for v in rows["vector"]] == [width, width]
    state = CatalogueState.read(CatalogueLog.of_repo(sqlite_copy))
    assert list(state.added) == ["n-lamp", "n-guitar"]
    logged = state.added["n-lamp"].embedding
    np.testing.assert_allclose(logged, np.asarray(rows["text_embedding"][0]), atol=1e-6)
    size = CatalogueLog.of_repo(sqlite_copy).size()
    again = writer.apply(check_item_records(NEW, "body", "line", None), "body")  # a retried call
    assert again.added == [] and CatalogueLog.of_repo(sqlite_copy).size() == size
    offline = pd.read_parquet(sqlite_copy / "data/sources/items.parquet")
    assert set(offline["item_id"]) >= {"n-lamp", "n-guitar"}
    trained_id = next(iter(ModelIds.load(model, read_manifest(model)).items))
    with pytest.raises(DataError, match=f"line 1: item_id '{trained_id}': already in the model's catalogue"):
        writer.apply(check_item_records([{"item_id": trained_id, "text": "t"}], "body", "line", None), "body")
    writer.apply(check_item_records([{"item_id": trained_id, "action": "hide"}], "b", "line", None), "b")
    assert trained_id in CatalogueState.read(CatalogueLog.of_repo(sqlite_copy)).hidden


def test_added_items_reach_redis(
    redis_repo: Path, redis_server: str, trained_model: tuple[Path, Path]
) -> None:
    _, model = trained_model
    writer = _writer(redis_repo, model, "redis", offline=False)
    try:
        writer.apply(check_item_records(NEW[:1], "body", "line", None), "body")
        rows = _item_rows(writer.store, ["n-lamp"])
        assert rows["cold"] == [True] and len(rows["vector"][0]) == read_manifest(model)["dims"]["query"]
    finally:  # the Redis store is the session's: the added item's key goes, publish restores the rest
        import redis

        host, port = redis_server.split(":")
        client = redis.Redis(host=host, port=int(port))
        for key in list(client.scan_iter(match=b"*n-lamp*")):
            client.delete(key)
        client.close()
        from scenerec.features.publish import publish

        publish(*trained_model, redis_repo, online_store="redis")
        shutil.rmtree(redis_repo / "data" / "items", ignore_errors=True)


def test_a_store_that_is_down_accepts_nothing(
    redis_repo: Path, trained_model: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis gone (a closed port): the write fails, nothing reaches the catalogue log or the event log."""
    from datetime import UTC, datetime

    from scenerec.config import Config
    from scenerec.features.events import EventLog, EventPusher, check_events

    _, model = trained_model
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    monkeypatch.setenv("SCENEREC_REDIS", f"127.0.0.1:{closed}")
    writer = _writer(redis_repo, model, "redis", offline=False)
    with pytest.raises(StoreUnavailable, match="feature store write failed while adding items"):
        writer.apply(check_item_records(NEW[:1], "body", "line", None), "body")
    assert CatalogueLog.of_repo(redis_repo).size() == 0
    pusher = EventPusher(
        writer.store,
        EventLog.of_repo(redis_repo),
        Config.from_dict(read_manifest(model)["config"]),
        offline=False,
    )
    events = check_events(
        pd.DataFrame(
            {"user_id": ["u1"], "item_id": ["i001"], "event_timestamp": [datetime.now(UTC).isoformat()]}
        ),
        "t",
        "row",
    )
    with pytest.raises(StoreUnavailable, match="feature store read failed during the push"):
        pusher.push(events)
    assert len(EventLog.of_repo(redis_repo).read()) == 0


def test_cli_adds_hides_and_refuses(
    sqlite_copy: Path, trained_model: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from scenerec.cli import main

    _, model = trained_model
    path = tmp_path / "new.parquet"
    pd.DataFrame(NEW).to_parquet(path)
    common = ["--model", str(model), "--repo", str(sqlite_copy), "--json"]
    assert main(["items", "add", "--data", str(path), *common]) == 0
    assert '"added": 2' in capsys.readouterr().out
    assert main(["items", "hide", "--ids", "n-lamp", *common]) == 0
    assert main(["items", "remove", "--ids", "n-guitar", *common]) == 0
    state = CatalogueState.read(CatalogueLog.of_repo(sqlite_copy))
    assert list(state.added) == ["n-lamp"] and state.hidden == {"n-lamp"}
    capsys.readouterr()
    assert main(["items", "show", "--ids", "n-guitar", *common]) == 2
    assert "--ids: id 1: item_id 'n-guitar': not in the catalogue" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("item_id,title,text\nn9,Lamp,a lamp\nn10,,\n")
    assert main(["items", "add", "--data", str(bad), *common]) == 2
    assert "bad.csv: row 2, field text: empty, and no title either" in capsys.readouterr().err
