"""A real predictor for the serving tests: a small trained model, its features published to a real
Feast repo (SQLite), and `python -m serving` started as a subprocess on loopback ports."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from serving.launch import PredictorNotReady, free_port, predictor_command, predictor_env, wait_until_ready

ROOT = Path(__file__).resolve().parents[2]
TINY_TRAIN = [
    "--set",
    "train.epochs=2",
    "--set",
    "train.ablations=[]",
    "--set",
    "train.cold_start_eval=false",
    "--set",
    "model.dim=16",
    "--set",
    "baselines.names=[popularity]",
]


def scenerec(*args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scenerec.cli", *args], capture_output=True, text=True, timeout=900, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr[-3000:]


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    http: str
    grpc: str
    model_dir: Path
    repo: Path
    log: Path

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@pytest.fixture(scope="session")
def served_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(data dir, model dir, published feature repo) of a tiny synthetic world."""
    base = tmp_path_factory.mktemp("serving")
    data, model, repo = base / "data", base / "model", base / "feature_repo"
    scenerec("data", "synth", "--out", str(data), "--users", "300", "--items", "200", "--seed", "5")
    scenerec("train", "--data", str(data), "--out", str(model), "--cache", str(base / "cache"), *TINY_TRAIN)
    shutil.copytree(ROOT / "feature_repo", repo, ignore=shutil.ignore_patterns("data", "__pycache__"))
    scenerec("features", "publish", "--data", str(data), "--model", str(model), "--repo", str(repo))
    return data, model, repo


def start_server(model: Path, repo: Path, log: Path, *extra: str) -> Server:
    http, grpc = free_port(), free_port()
    command = predictor_command(model, repo, http, grpc, "--device", "cpu", *extra)
    with log.open("wb") as handle:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=predictor_env(),
        )
    try:
        wait_until_ready(process, http, log)
    except PredictorNotReady as e:
        raise AssertionError(str(e)) from e
    return Server(process, f"http://127.0.0.1:{http}", f"127.0.0.1:{grpc}", model, repo, log)


@pytest.fixture(scope="session")
def server(
    served_model: tuple[Path, Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    _, model, repo = served_model
    running = start_server(model, repo, tmp_path_factory.mktemp("logs") / "predictor.log")
    yield running
    running.stop()
