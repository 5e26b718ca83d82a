"""Starting the predictor as a subprocess on loopback: one way for the demo, the tests and tools.

Deliberately light (no KServe, Feast or ONNX imports): callers only need the command line, a free
port and a readiness wait that fails with the predictor's own log.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


class PredictorNotReady(RuntimeError):
    """The predictor exited, or was not ready in time; the message carries its log's tail."""


def predictor_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment to start the predictor with: the caller's, minus PROMETHEUS_MULTIPROC_DIR.

    Importing Feast sets that variable to a temporary directory of its own; a predictor started by
    a process that imported Feast (the demo, a test run, a benchmark) would inherit it and add its
    counts to those of every other predictor started from the same parent. The predictor makes its
    own directory when it runs several workers.
    """
    env = dict(os.environ if base is None else base)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def predictor_command(
    model_dir: Path, feature_repo: Path, http_port: int, grpc_port: int, *extra: str
) -> list[str]:
    """`python -m serving ...` for a model directory and a published feature repo."""
    return [
        sys.executable,
        "-m",
        "serving",
        "--model_name",
        "scenerec",
        "--model_dir",
        str(model_dir),
        "--feature_repo",
        str(feature_repo),
        "--http_port",
        str(http_port),
        "--grpc_port",
        str(grpc_port),
        "--enable_latency_logging",
        "false",
        *extra,
    ]


def wait_until_ready(
    process: subprocess.Popen[bytes], http_port: int, log: Path, timeout_s: float = 180.0
) -> None:
    """Poll `/v2/health/ready` until 200; kill the process and raise if it exits or times out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise PredictorNotReady(f"the predictor exited ({process.returncode}):\n{_tail(log)}")
        try:
            if httpx.get(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    process.wait()
    raise PredictorNotReady(f"the predictor was not ready in {timeout_s:.0f} s:\n{_tail(log)}")


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.is_file() else f"(no log at {log})"
