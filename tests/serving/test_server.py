"""The real predictor over HTTP and gRPC: answers, explanations, degraded answers, bad input, metrics."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from tests.serving.conftest import Server, free_port, start_server

pytestmark = pytest.mark.integration


def predict(server: Server, *instances: dict) -> httpx.Response:
    return httpx.post(
        f"{server.http}/v1/models/scenerec:predict", json={"instances": list(instances)}, timeout=30
    )


def known_user(served_model: tuple[Path, Path, Path]) -> tuple[str, set[str]]:
    """A user whose whole log fits in the history the feature store keeps (the last max_history items)."""
    data = served_model[0]
    log = pd.read_parquet(data / "interactions.parquet")
    counts = log["user_id"].value_counts()
    user = str(counts[counts <= 40].index[0])
    return user, set(log.loc[log["user_id"] == user, "item_id"].astype(str))


def test_v1_ranks_unseen_items_for_a_known_user(
    server: Server, served_model: tuple[Path, Path, Path]
) -> None:
    user, seen = known_user(served_model)
    response = predict(server, {"user_id": user, "scene": "home", "context": {"device": "mobile"}, "k": 10})
    assert response.status_code == 200, response.text
    (answer,) = response.json()["predictions"]
    items = answer["items"]
    assert len(items) == 10 and answer["fallback"] is None
    scores = [i["score"] for i in items]
    assert scores == sorted(scores, reverse=True)
    assert not {i["item_id"] for i in items} & seen  # exclude_seen defaults to true
    manifest = json.loads((server.model_dir / "manifest.json").read_text())
    assert answer["model_version"] == manifest["model_version"]
    kept = predict(server, {"user_id": user, "scene": "home", "k": 200, "exclude_seen": False}).json()
    assert {i["item_id"] for i in kept["predictions"][0]["items"]} & seen


def test_explanations_split_each_score_exactly(server: Server, served_model: tuple[Path, Path, Path]) -> None:
    user, _ = known_user(served_model)
    (answer,) = predict(server, {"user_id": user, "scene": "search", "k": 5, "explain": True}).json()[
        "predictions"
    ]
    for item in answer["items"]:
        parts = item["parts"]
        assert set(parts) == {"collaborative", "text", "scene", "item_item"}
        assert sum(parts.values()) == pytest.approx(item["score"], abs=1e-4)
        assert 0.0 <= item["p_conversion"] <= 1.0


def test_candidates_unknown_user_and_unknown_scene(
    server: Server, served_model: tuple[Path, Path, Path]
) -> None:
    user, _ = known_user(served_model)
    candidates = ["i000", "i010", "i020", "i030"]
    (answer,) = predict(
        server, {"user_id": user, "candidates": candidates, "k": 3, "exclude_seen": False}
    ).json()["predictions"]
    assert len(answer["items"]) == 3 and {i["item_id"] for i in answer["items"]} <= set(candidates)
    cold, odd = predict(
        server, {"user_id": "never-seen", "scene": "home", "k": 4}, {"user_id": user, "scene": "moon", "k": 4}
    ).json()["predictions"]
    assert cold["fallback"] == "unknown_user" and len(cold["items"]) == 4
    assert odd["fallback"] == "unknown_scene" and len(odd["items"]) == 4


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "Unrecognized request format"),
        (b'{"instances": [{"scene": "home"}]}', 400, "instances[0].user_id: required"),
        (
            b'{"instances": [{"user_id": "u1", "k": 0}]}',
            400,
            "instances[0].k: expected an integer in 1..1000",
        ),
        (b'{"instances": [{"user_id": "u1", "k": "ten"}]}', 400, "instances[0].k"),
        (b'{"instances": [{"user_id": 5}]}', 400, "instances[0].user_id"),
        (b'{"instances": [{"user_id": "u1", "candidates": ["nope"]}]}', 400, "unknown item id 'nope'"),
        (
            json.dumps({"instances": [{"user_id": "u1", "candidates": ["i001"] * 1001}]}).encode(),
            400,
            "at most 1000",
        ),
        (b'{"instances": [{"user_id": "u1", "pad": "' + b"x" * (2 << 20) + b'"}]}', 413, "larger than"),
        (json.dumps({"instances": [{"user_id": "u1", "k": 1000}] * 256}).encode(), 413, "--max_items"),
        (
            json.dumps({"instances": [{"user_id": "u1", "k": 150, "explain": True}] * 20}).encode(),
            413,
            "--max_explained_items",
        ),
    ],
)
def test_bad_input_is_a_4xx_naming_the_field(server: Server, body: bytes, status: int, message: str) -> None:
    response = httpx.post(
        f"{server.http}/v1/models/scenerec:predict",
        content=body,
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == status, response.text
    assert message in response.text


def test_v2_rest_metadata_and_infer(server: Server, served_model: tuple[Path, Path, Path]) -> None:
    metadata = httpx.get(f"{server.http}/v2/models/scenerec", timeout=10).json()
    assert [i["name"] for i in metadata["inputs"]][:3] == ["user_id", "scene", "k"]
    assert {o["name"]: o["datatype"] for o in metadata["outputs"]} == {"item_id": "BYTES", "score": "FP32"}
    user, _ = known_user(served_model)
    body = {
        "inputs": [
            {"name": "user_id", "shape": [2], "datatype": "BYTES", "data": [user, "stranger"]},
            {"name": "scene", "shape": [1], "datatype": "BYTES", "data": ["detail"]},
            {"name": "k", "shape": [1], "datatype": "INT32", "data": [4]},
        ]
    }
    response = httpx.post(f"{server.http}/v2/models/scenerec/infer", json=body, timeout=30)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert outputs["item_id"]["shape"] == [2, 4] and outputs["score"]["datatype"] == "FP32"
    scores = np.array(outputs["score"]["data"]).reshape(2, 4)
    assert (np.diff(scores, axis=1) <= 1e-6).all()
    bad = {"inputs": [{"name": "k", "shape": [1], "datatype": "INT32", "data": [4]}]}
    response = httpx.post(f"{server.http}/v2/models/scenerec/infer", json=bad, timeout=30)
    assert response.status_code == 400 and "inputs.user_id: required" in response.text


def test_v2_grpc_with_kserves_own_client(server: Server, served_model: tuple[Path, Path, Path]) -> None:
    import asyncio

    from kserve import InferenceGRPCClient, InferInput, InferRequest

    user, _ = known_user(served_model)

    async def call() -> dict[str, np.ndarray]:
        client = InferenceGRPCClient(server.grpc, timeout=30)
        inputs = [InferInput("user_id", [1], "BYTES"), InferInput("k", [1], "INT32")]
        inputs[0].set_data_from_numpy(np.array([user], dtype=object))
        inputs[1].set_data_from_numpy(np.array([3], dtype=np.int32))
        response = await client.infer(InferRequest(model_name="scenerec", infer_inputs=inputs))
        await client.close()
        return {o.name: o.as_numpy() for o in response.outputs}

    outputs = asyncio.run(call())
    assert outputs["item_id"].shape == (1, 3) and outputs["score"].dtype == np.float32
    rest = predict(server, {"user_id": user, "k": 3}).json()["predictions"][0]["items"]
    grpc_ids = [v.decode() if isinstance(v, bytes) else v for v in outputs["item_id"][0]]
    assert grpc_ids == [i["item_id"] for i in rest]


def test_no_log_line_per_request_by_default(server: Server) -> None:
    """The shipped log config keeps start-up lines and drops KServe's per-request access lines."""
    with httpx.Client(timeout=30) as client:
        for n in range(5):
            body = {"instances": [{"user_id": f"quiet{n}", "scene": "home", "k": 3}]}
            assert client.post(f"{server.http}/v1/models/scenerec:predict", json=body).status_code == 200
    text = server.log.read_text(errors="replace")
    assert "Uvicorn running on" in text or "Application startup complete" in text, text[-2000:]
    assert "scenerec%3Apredict" not in text and "scenerec:predict" not in text


def test_metrics_count_requests_and_name_the_provider(server: Server) -> None:
    def counter(text: str, pattern: str) -> float:
        return sum(float(m.group(1)) for m in re.finditer(pattern + r"\S* (\S+)", text))

    before = httpx.get(f"{server.http}/metrics", timeout=10).text
    predict(server, {"user_id": "metrics-probe", "scene": "home"})
    after = httpx.get(f"{server.http}/metrics", timeout=10).text
    pattern = r'scenerec_requests_total\{model="scenerec",outcome="fallback",scene="home"\}'
    assert counter(after, pattern) == counter(before, pattern) + 1
    assert (
        'scenerec_onnx_provider_info{graph="user_tower",model="scenerec",provider="CPUExecutionProvider"'
        in after
    )
    assert 'scenerec_batch_seconds_bucket{le="0.0005",model="scenerec"}' in after  # sub-millisecond buckets
    calls = r'scenerec_request_seconds_count\{code="2xx",model="scenerec",protocol="v1"\}'
    assert counter(after, calls) == counter(before, calls) + 1
    assert 'scenerec_fallbacks_total{model="scenerec",reason="unknown_user"}' in after
    assert "metrics-probe" not in after  # labels are bounded: never a user id


def test_grpc_calls_are_counted_by_status(server: Server) -> None:
    import asyncio

    import grpc
    from kserve import InferenceGRPCClient, InferInput, InferRequest

    def counts() -> dict[str, float]:
        text = httpx.get(f"{server.http}/metrics", timeout=10).text
        pattern = r'scenerec_responses_total\{model="scenerec",protocol="grpc",status="(\w+)"\} (\S+)'
        return {status: float(value) for status, value in re.findall(pattern, text)}

    async def call(k: int) -> None:
        client = InferenceGRPCClient(server.grpc, timeout=30)
        inputs = [InferInput("user_id", [1], "BYTES"), InferInput("k", [1], "INT32")]
        inputs[0].set_data_from_numpy(np.array(["grpc-probe"], dtype=object))
        inputs[1].set_data_from_numpy(np.array([k], dtype=np.int32))
        try:
            await client.infer(InferRequest(model_name="scenerec", infer_inputs=inputs))
        finally:
            await client.close()

    before = counts()
    asyncio.run(call(3))
    with pytest.raises(grpc.RpcError) as error:
        asyncio.run(call(-1))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    after = counts()
    assert after.get("OK", 0) == before.get("OK", 0) + 1
    assert after.get("INVALID_ARGUMENT", 0) == before.get("INVALID_ARGUMENT", 0) + 1


def test_sigterm_under_load_fails_no_inflight_request(
    served_model: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, model, repo = served_model
    # limits raised so that these calls are batched together on the scoring thread (tests/serving/
    # test_limits.py covers the large-call lane)
    raised = ("--max_items", "50000", "--max_explained_items", "50000", "--large_items", "50000")
    server = start_server(model, repo, tmp_path / "predictor.log", *raised)
    results: list[int] = []

    def call() -> None:
        response = httpx.post(
            f"{server.http}/v1/models/scenerec:predict",
            json={"instances": [{"user_id": "u1", "k": 150, "explain": True}] * 64},
            timeout=60,
        )
        results.append(response.status_code)

    threads = [threading.Thread(target=call) for _ in range(12)]
    for thread in threads:
        thread.start()
    # every request is on the wire and being scored (one batch takes well over a second) ...
    time.sleep(0.5)
    server.process.send_signal(signal.SIGTERM)  # ... when the shutdown starts
    for thread in threads:
        thread.join(timeout=90)
    assert server.process.wait(timeout=60) == 0 or server.process.returncode == -signal.SIGTERM
    assert results and all(code == 200 for code in results), results


def test_feature_store_down_degrades_instead_of_failing(
    served_model: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed: run scripts/ensure_redis.sh (make test does)"
    data, model, _ = served_model
    port = free_port()
    redis = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    monkeypatch.setenv("SCENEREC_REDIS", f"127.0.0.1:{port}")
    try:
        time.sleep(0.5)
        repo = tmp_path / "feature_repo"
        shutil.copytree(
            Path(__file__).resolve().parents[2] / "feature_repo",
            repo,
            ignore=shutil.ignore_patterns("data", "__pycache__"),
        )
        from tests.serving.conftest import scenerec

        scenerec(
            "features",
            "publish",
            "--data",
            str(data),
            "--model",
            str(model),
            "--repo",
            str(repo),
            "--online-store",
            "redis",
        )
        server = start_server(
            model,
            repo,
            tmp_path / "predictor.log",
            "--feature_config",
            str(repo / "feature_store.redis.yaml"),
            "--breaker_failures",
            "2",
            "--breaker_backoff_ms",
            "100",
            "--breaker_max_backoff_ms",
            "200",
        )
        user = str(pd.read_parquet(data / "interactions.parquet")["user_id"].iloc[0])
        healthy = predict(server, {"user_id": user, "k": 5}).json()["predictions"][0]
        assert healthy["fallback"] is None
        assert readiness(server)["feature_store"] == {"state": "closed"}
        redis.terminate()
        redis.wait(timeout=10)
        for _ in range(3):  # two failed reads open the circuit; the third request skips the store
            degraded = predict(server, {"user_id": user, "k": 5})
            assert degraded.status_code == 200
            answer = degraded.json()["predictions"][0]
            assert answer["fallback"] == "feature_store_unavailable" and len(answer["items"]) == 5
        text = httpx.get(f"{server.http}/metrics", timeout=10).text
        assert 'scenerec_fallbacks_total{model="scenerec",reason="feature_store_unavailable"} 3.0' in text
        assert 'scenerec_feature_read_errors_total{kind="error",model="scenerec"} 2.0' in text
        gauge = r'scenerec_feature_store_circuit\{model="scenerec",state="(\w+)"\} (\S+)'
        circuit = dict(re.findall(gauge, text))
        assert float(circuit["closed"]) == 0 and float(circuit["open"]) + float(circuit["half_open"]) == 1
        detail = readiness(server)  # readiness stays up, with the store's state beside it
        assert detail["ready"] is True and detail["feature_store"]["state"] in ("open", "half_open")
        assert "Redis online read failed" in detail["feature_store"]["last_error"]
        v1 = httpx.get(f"{server.http}/v1/models/scenerec", timeout=10).json()
        assert v1["ready"] is True and v1["feature_store"]["state"] in ("open", "half_open")
        redis = subprocess.Popen(redis.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10  # the probe thread closes the circuit again on its own
        while readiness(server)["feature_store"]["state"] != "closed" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert readiness(server)["feature_store"] == {"state": "closed"}
        back = predict(server, {"user_id": user, "k": 5}).json()["predictions"][0]
        assert back["fallback"] == "unknown_user"  # the store answers again (a fresh, empty Redis)
        server.stop()
    finally:
        if redis.poll() is None:
            redis.kill()


def readiness(server: Server) -> dict:
    response = httpx.get(f"{server.http}/v2/models/scenerec/ready", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def test_v2_binary_bytes_that_are_not_utf8_get_a_400(server: Server) -> None:
    """KServe's binary tensor extension decodes BYTES before our code runs; a user id that is not
    UTF-8 must still be a client error, not a 500."""
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "user_id",
                    "shape": [1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": 7},
                }
            ]
        }
    ).encode()
    raw = (3).to_bytes(4, "little") + b"\xff\xfe\xfd"  # one BYTES element: length prefix + bad UTF-8
    response = httpx.post(
        f"{server.http}/v2/models/scenerec/infer",
        content=header + raw,
        headers={
            "content-type": "application/octet-stream",
            "inference-header-content-length": str(len(header)),
        },
        timeout=30,
    )
    assert response.status_code == 400, response.text
    assert "UTF-8" in response.text
