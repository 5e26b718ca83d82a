"""`--workers 2`: two worker processes answer, and /metrics is one view of both, whichever serves it.

Which worker answered is read from the predictor's access log (`uvicorn.access ... <pid> - "..."`),
turned on by a `--log_config_file` (the default logs no line per request): so the test also shows
that KServe's flag reaches every worker. Every request goes on a fresh connection, so the kernel
spreads them over the workers.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import httpx
import pytest
import yaml

from serving.__main__ import DEFAULT_LOG_CONFIG
from tests.serving.conftest import Server, start_server

pytestmark = pytest.mark.integration

PREDICT = '"POST /v1/models/scenerec%3Apredict'
METRICS = '"GET /metrics'


def children(pid: int) -> set[int]:
    """Processes whose parent is `pid` (the workers and multiprocessing's resource tracker)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def answered_by(log: Path, request_line: str) -> list[int]:
    """The pid of the process that answered each such request, in order."""
    pattern = re.compile(r"uvicorn\.access INFO:\s+\S+ (\d+) - " + re.escape(request_line))
    return [int(m.group(1)) for m in pattern.finditer(log.read_text(errors="replace"))]


def requests_total(server: Server) -> float:
    with httpx.Client(timeout=10) as client:  # a fresh connection each time
        text = client.get(f"{server.http}/metrics").text
    return sum(float(m.group(1)) for m in re.finditer(r"^scenerec_requests_total\{.*\} (\S+)$", text, re.M))


def alive(pids: set[int]) -> set[int]:
    return {
        p for p in pids if Path(f"/proc/{p}").exists() and " Z " not in Path(f"/proc/{p}/stat").read_text()
    }


def test_two_workers_share_one_metrics_page(served_model: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _, model, repo = served_model
    log = tmp_path / "predictor.log"
    config = yaml.safe_load(DEFAULT_LOG_CONFIG.read_text())
    config["loggers"]["uvicorn.access"]["level"] = "INFO"
    access_log = tmp_path / "access_log.yaml"
    access_log.write_text(yaml.safe_dump(config))
    server = start_server(model, repo, log, "--workers", "2", "--log_config_file", str(access_log))
    spawned = children(server.process.pid)
    try:
        environ = Path(f"/proc/{max(spawned)}/environ").read_bytes().split(b"\0")
        metrics_dir = next(
            Path(v.split(b"=", 1)[1].decode()) for v in environ if v.startswith(b"PROMETHEUS_MULTIPROC_DIR=")
        )
        assert metrics_dir.is_dir()
        sent = 0
        while sent < 40 or len(set(answered_by(log, PREDICT))) < 2:
            assert sent < 400, f"one worker answered all {sent} requests: {set(answered_by(log, PREDICT))}"
            with httpx.Client(timeout=30) as client:
                response = client.post(
                    f"{server.http}/v1/models/scenerec:predict",
                    json={"instances": [{"user_id": f"u{sent}", "scene": "home", "k": 3}]},
                )
            assert response.status_code == 200, response.text
            sent += 1
        workers = set(answered_by(log, PREDICT))
        assert len(workers) == 2 and workers <= spawned, (workers, spawned)
        for asked in range(40):  # until both workers have served /metrics, each time the same total
            assert requests_total(server) == sent, f"ask {asked}: {requests_total(server)} != {sent}"
            if set(answered_by(log, METRICS)) == workers:
                break
        assert set(answered_by(log, METRICS)) == workers
    finally:
        server.stop()
        deadline = time.monotonic() + 30
        while alive(spawned) and time.monotonic() < deadline:
            time.sleep(0.2)
        leaked = alive(spawned)
        for pid in leaked:  # ours: do not leave them to the next test
            os.kill(pid, signal.SIGKILL)
    assert not leaked, f"worker processes outlived the server: {leaked}"
    assert not metrics_dir.exists(), f"{metrics_dir} was left behind"
