"""SIGTERM on a real predictor under keep-alive load: every call on the wire is answered in full,
no connection is reset, new connections are refused, readiness turns 503, and the drain is bounded."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.serving.conftest import Server, start_server

pytestmark = pytest.mark.integration

# 900 items (the small lane), about 45 KB of JSON per answer
BODY = json.dumps({"instances": [{"user_id": f"u{n}", "k": 150} for n in range(6)]}).encode()
PREDICT, JSON = "/v1/models/scenerec:predict", {"content-type": "application/json"}
RESETS = (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected, http.client.IncompleteRead)


def port_of(server: Server) -> int:
    return int(server.http.rsplit(":", 1)[1])


def keep_alive_client(port: int, until: float, outcomes: list[str]) -> None:
    """POSTs on one keep-alive connection until the server refuses; records each outcome."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    while time.monotonic() < until:
        try:
            connection.request("POST", PREDICT, BODY, JSON)
            response = connection.getresponse()
            answer = json.loads(response.read())
            assert response.status == 200 and len(answer["predictions"]) == 6, answer
            outcomes.append("answered")
        except ConnectionRefusedError:
            outcomes.append("refused")  # a new connection after the listener closed: clean
            return
        except RESETS as e:
            outcomes.append(f"reset: {e!r}")
            return
    connection.close()


def test_sigterm_under_keep_alive_load_answers_everything_on_the_wire(
    served_model: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, model, repo = served_model
    server = start_server(model, repo, tmp_path / "predictor.log", "--drain_seconds", "10")
    port = port_of(server)
    outcomes: list[str] = []
    until = time.monotonic() + 60
    clients = [threading.Thread(target=keep_alive_client, args=(port, until, outcomes)) for _ in range(12)]
    for client in clients:
        client.start()
    probe = http.client.HTTPConnection("127.0.0.1", port, timeout=10)  # a load balancer's probe
    probe.request("GET", "/v2/health/ready")
    first = probe.getresponse()
    first.read()
    assert first.status == 200
    time.sleep(1.5)  # every client is mid-loop, answers being written
    answered_before = outcomes.count("answered")
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    ready_status, connection_header = 200, ""
    while ready_status == 200 and time.monotonic() < signalled + 3:  # readiness turns 503
        probe.request("GET", "/v2/health/ready")
        response = probe.getresponse()
        response.read()
        ready_status, connection_header = response.status, response.getheader("connection", "")
    refused = False
    while not refused and time.monotonic() < signalled + 5:  # and new connections are refused
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            time.sleep(0.02)
        except ConnectionRefusedError:
            refused = True
    for client in clients:
        client.join(timeout=60)
    code = server.process.wait(timeout=30)
    exited = time.monotonic() - signalled
    assert answered_before > 0 and outcomes.count("answered") > answered_before
    assert [o for o in outcomes if o not in ("answered", "refused")] == []  # no reset, no error
    assert outcomes.count("refused") == len(clients)  # each client left after a complete answer
    assert (ready_status, connection_header) == (503, "close")
    assert refused
    assert code == 0 and exited < 10 + 5, (code, exited)


def test_the_drain_is_bounded_by_drain_seconds(served_model: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """Slow calls still running when the drain time is up are cut; the process exits on time."""
    _, model, repo = served_model
    raised = ("--max_items", "50000", "--max_explained_items", "50000", "--large_items", "50000")
    server = start_server(model, repo, tmp_path / "predictor.log", "--drain_seconds", "1", *raised)
    port = port_of(server)
    slow = json.dumps({"instances": [{"user_id": f"u{n}", "k": 150, "explain": True} for n in range(64)]})
    done: list[str] = []

    def call() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            connection.request("POST", PREDICT, slow, JSON)
            done.append(str(connection.getresponse().status))
        except (OSError, http.client.HTTPException) as e:
            done.append(type(e).__name__)

    callers = [threading.Thread(target=call) for _ in range(6)]  # seconds of queued scoring
    for caller in callers:
        caller.start()
    time.sleep(0.5)
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(timeout=30)
    exited = time.monotonic() - signalled
    for caller in callers:
        caller.join(timeout=30)
    assert exited < 1 + 8, exited  # the drain, uvicorn's 1 s grace, and one batch finishing
    assert len(done) == len(callers)
