"""Publishing to and reading from a real Redis (a private redis-server started by the fixtures)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scenerec.artifact import read_manifest
from scenerec.features.client import FeatureClient, FeatureReadError, FeatureTimeout
from scenerec.features.publish import PublishError, publish
from scenerec.features.repo import FeatureRepoError
from tests.features.conftest import copy_repo

pytestmark = pytest.mark.integration


def redis_contents(address: str) -> dict[bytes, dict[bytes, bytes]]:
    import redis

    host, port = address.split(":")
    client = redis.Redis(host=host, port=int(port))
    try:
        return {key: client.hgetall(key) for key in sorted(client.scan_iter(count=1000))}
    finally:
        client.close()


def test_publish_writes_every_entity_and_a_rerun_changes_nothing(
    redis_repo: Path, redis_server: str, trained_model: tuple[Path, Path]
) -> None:
    before = redis_contents(redis_server)
    n_items = read_manifest(trained_model[1])["dims"]["items"]
    users = {k for k in before if b"user_id" in k}
    assert len([k for k in before if b"item_id" in k]) == n_items
    assert len([k for k in before if b"scene_id" in k]) == 4
    assert len(users) > 100
    result = publish(*trained_model, redis_repo, online_store="redis")
    assert result.online_store == "redis"
    assert redis_contents(redis_server) == before


def test_a_failed_run_keeps_every_row_readable(
    tmp_path: Path, redis_server: str, trained_model: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from feast.infra.passthrough_provider import PassthroughProvider

    repo = copy_repo(tmp_path / "repo")
    publish(*trained_model, repo, online_store="redis")
    before, registry = redis_contents(redis_server), (repo / "data" / "registry.db").read_bytes()
    calls = []
    write = PassthroughProvider.ingest_df

    def boom(self: Any, *args: Any, **kwargs: Any) -> None:  # part-way: some batches are rewritten
        calls.append(1)
        if len(calls) > 3:
            raise ConnectionError("redis went away")
        write(self, *args, **kwargs)

    monkeypatch.setattr(PassthroughProvider, "ingest_df", boom)
    with pytest.raises(PublishError, match=r"redis online store failed.*complete and readable"):
        publish(*trained_model, repo, online_store="redis", batch_rows=50)
    monkeypatch.undo()
    assert len(calls) == 4
    assert redis_contents(redis_server) == before
    assert (repo / "data" / "registry.db").read_bytes() == registry
    client = FeatureClient.from_repo(repo, read_manifest(trained_model[1]), online_store="redis")
    assert client.read("u1", "home") == client.read_via_feast("u1", "home")


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never answers (a hung Redis)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    listener.close()


def test_a_hung_or_absent_redis_raises_typed_errors_within_the_timeout(
    redis_repo: Path, trained_model: tuple[Path, Path], silent_server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = read_manifest(trained_model[1])
    monkeypatch.setenv("SCENEREC_REDIS", f"127.0.0.1:{silent_server}")
    hung = FeatureClient.from_repo(redis_repo, manifest, online_store="redis", timeout_s=0.03, warm_up=False)
    started = time.perf_counter()
    with pytest.raises(FeatureTimeout, match="exceeded 30 ms"):
        hung.read("u1", "home")
    assert time.perf_counter() - started < 0.5
    started = time.perf_counter()  # a whole scoring batch waits out one deadline, not one per request
    with pytest.raises(FeatureTimeout, match="exceeded 30 ms"):
        hung.read_batch([(f"u{n}", "home") for n in range(64)])
    assert time.perf_counter() - started < 0.5
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    monkeypatch.setenv("SCENEREC_REDIS", f"127.0.0.1:{free}")
    absent = FeatureClient.from_repo(
        redis_repo, manifest, online_store="redis", timeout_s=0.03, warm_up=False
    )
    with pytest.raises(FeatureReadError, match="Redis online read failed") as error:
        absent.read("u1", "home")
    assert not isinstance(error.value, FeatureTimeout)


def test_publishing_without_the_redis_address_names_the_variable(
    tmp_path: Path, trained_model: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SCENEREC_REDIS", raising=False)
    with pytest.raises(
        FeatureRepoError, match=r"feature_store.redis.yaml:\d+: environment variable SCENEREC_REDIS"
    ):
        publish(*trained_model, copy_repo(tmp_path / "repo"), online_store="redis")
