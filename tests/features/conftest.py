"""Fixtures of the Feast tests: one small model per session, repo copies, a private Redis server.

The model is trained once (a real `scenerec train` in a subprocess, ~20 s) with max_history 20, so
many users have longer logs than the history the features keep. Redis is a real `redis-server`
bound to 127.0.0.1 on a free port, without persistence, stopped after the session; when it is not
installed the Redis tests fail under CI=true (run scripts/ensure_redis.sh) and skip elsewhere.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scenerec.data.synthetic import SyntheticSpec, write_synthetic

REPO = Path(__file__).resolve().parents[2] / "feature_repo"
MAX_HISTORY = 20
SPEC = SyntheticSpec(users=300, items=200, scenes=3, seed=5, mean_events=25, max_events=80)
TRAIN = [
    "train.epochs=1",
    "train.ablations=[]",
    "train.cold_start_eval=false",
    "baselines.names=[popularity]",
    "model.dim=16",
    f"model.max_history={MAX_HISTORY}",
]


def copy_repo(destination: Path) -> Path:
    """The checked-in feature repo's definitions and yamls, without any local data."""
    shutil.copytree(REPO, destination, ignore=shutil.ignore_patterns("data", "__pycache__"))
    return destination


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(data directory, model directory) of a small trained model."""
    root = tmp_path_factory.mktemp("features")
    data, model = root / "data", root / "model"
    write_synthetic(data, SPEC)
    overrides = [arg for item in TRAIN for arg in ("--set", item)]
    command = [sys.executable, "-m", "scenerec.cli", "train", "--data", str(data), "--out", str(model)]
    result = subprocess.run(
        [*command, "--cache", str(root / "cache"), *overrides], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return data, model


@pytest.fixture(scope="session")
def sqlite_repo(trained_model: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repo copy published once to SQLite (read-only for tests: copy it to change it)."""
    from scenerec.features.publish import publish

    repo = copy_repo(tmp_path_factory.mktemp("sqlite") / "feature_repo")
    publish(*trained_model, repo)
    return repo


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """`host:port` of a private redis-server, and SCENEREC_REDIS pointing at it meanwhile."""
    binary = shutil.which("redis-server")
    if binary is None:
        message = "redis-server is not installed: run scripts/ensure_redis.sh (make test does)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    port = _free_port()
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    address = f"127.0.0.1:{port}"
    previous = os.environ.get("SCENEREC_REDIS")
    try:
        _wait_for(port, server)
        os.environ["SCENEREC_REDIS"] = address
        yield address
    finally:
        if previous is None:
            os.environ.pop("SCENEREC_REDIS", None)
        else:
            os.environ["SCENEREC_REDIS"] = previous
        server.terminate()
        server.wait(timeout=10)


def _wait_for(port: int, server: subprocess.Popen[bytes]) -> None:
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return
        except redis.exceptions.ConnectionError:
            if server.poll() is not None or time.monotonic() > deadline:
                stderr = server.stderr.read().decode() if server.stderr else ""
                raise RuntimeError(f"redis-server did not start on port {port}: {stderr[-500:]}") from None
            time.sleep(0.05)
        finally:
            client.close()


@pytest.fixture(scope="session")
def redis_repo(
    redis_server: str, trained_model: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A repo copy published once to the private Redis (registry and sources in the copy)."""
    from scenerec.features.publish import publish

    repo = copy_repo(tmp_path_factory.mktemp("redis") / "feature_repo")
    publish(*trained_model, repo, online_store="redis")
    return repo
