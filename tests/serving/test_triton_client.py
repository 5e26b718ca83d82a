"""Triton's own clients (tritonclient) against the real predictor, over gRPC and REST: raw inputs
get raw outputs, binary and JSON tensors both ways, and the same ranking as the V1 answer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.serving.conftest import Server
from tests.serving.test_server import known_user, predict

pytestmark = pytest.mark.integration


def v1_items(server: Server, user: str, k: int) -> list[str]:
    answer = predict(server, {"user_id": user, "scene": "home", "k": k}).json()["predictions"][0]
    return [item["item_id"] for item in answer["items"]]


def decoded(ids: np.ndarray) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in ids.ravel()]


# Triton's gRPC stubs and KServe's define the same `inference.*` protobuf messages, which one process
# cannot load twice: the gRPC client runs in a fresh interpreter, as it would in a client's own.
GRPC_CLIENT = """
import json, sys
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

client = grpcclient.InferenceServerClient(sys.argv[1])
out = {"ready": client.is_server_ready() and client.is_model_ready("scenerec")}
out["outputs"] = sorted(o["name"] for o in client.get_model_metadata("scenerec", as_json=True)["outputs"])
inputs = [grpcclient.InferInput("user_id", [2], "BYTES"), grpcclient.InferInput("scene", [2], "BYTES"),
          grpcclient.InferInput("k", [2], "INT32")]
inputs[0].set_data_from_numpy(np.array([sys.argv[2], "nobody"], dtype=object))
inputs[1].set_data_from_numpy(np.array(["home", "home"], dtype=object))
inputs[2].set_data_from_numpy(np.array([5, 5], dtype=np.int32))
result = client.infer("scenerec", inputs)  # tritonclient always sends raw_input_contents
raw = result.get_response()
out["raw_outputs"] = len(raw.raw_output_contents)
out["typed_outputs"] = sum(o.HasField("contents") for o in raw.outputs)
scores = result.as_numpy("score")
out["scores"], out["dtype"] = scores.tolist(), str(scores.dtype)
out["ids"] = [v.decode() for v in result.as_numpy("item_id")[0]]
k = grpcclient.InferInput("k", [1], "INT32")
k.set_data_from_numpy(np.array([5], dtype=np.int32))
try:
    client.infer("scenerec", [k])
except InferenceServerException as e:
    out["bad"] = [e.status(), e.message()]
client.close()
print(json.dumps(out))
"""


def grpc_client(server: Server, user: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", GRPC_CLIENT, server.grpc, user], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def test_grpc_client_sends_raw_inputs_and_decodes_raw_outputs(
    server: Server, served_model: tuple[Path, Path, Path]
) -> None:
    user, _ = known_user(served_model)
    out = grpc_client(server, user)
    assert out["ready"] and out["outputs"] == ["item_id", "score"]
    assert (out["raw_outputs"], out["typed_outputs"]) == (2, 0)  # raw inputs got raw outputs
    scores = np.array(out["scores"])
    assert scores.shape == (2, 5) and out["dtype"] == "float32"
    assert np.all(np.diff(scores, axis=1) <= 0)
    assert out["ids"] == v1_items(server, user, 5)
    status, message = out["bad"]  # a request without user_id: INVALID_ARGUMENT naming it
    assert status == "StatusCode.INVALID_ARGUMENT" and "user_id" in message


@pytest.mark.parametrize("binary", [True, False])
def test_http_client_with_binary_and_json_tensors(
    server: Server, served_model: tuple[Path, Path, Path], binary: bool
) -> None:
    import tritonclient.http as httpclient

    user, _ = known_user(served_model)
    client = httpclient.InferenceServerClient(server.http.removeprefix("http://"))
    try:
        assert client.is_model_ready("scenerec")
        inputs = [httpclient.InferInput("user_id", [1], "BYTES"), httpclient.InferInput("k", [1], "INT32")]
        inputs[0].set_data_from_numpy(np.array([user], dtype=object), binary_data=binary)
        inputs[1].set_data_from_numpy(np.array([7], dtype=np.int32), binary_data=binary)
        outputs = [
            httpclient.InferRequestedOutput("item_id", binary_data=binary),
            httpclient.InferRequestedOutput("score", binary_data=binary),
        ]
        result = client.infer("scenerec", inputs, outputs=outputs)
        response = result.get_response()
        scores, ids = result.as_numpy("score"), result.as_numpy("item_id")
    finally:
        client.close()
    for output in response["outputs"]:  # binary outputs carry their size, JSON ones their data
        assert ("binary_data_size" in (output.get("parameters") or {})) is binary
        assert ("data" in output) is not binary
    assert scores.shape == (1, 7) and np.all(np.diff(scores[0]) <= 0)
    assert decoded(ids[0]) == v1_items(server, user, 7)


def test_http_binary_data_output_applies_to_every_output(
    server: Server, served_model: tuple[Path, Path, Path]
) -> None:
    """The request-wide `binary_data_output` parameter (Triton's client sets it when no output is
    named), with no per-output choice."""
    import tritonclient.http as httpclient

    user, _ = known_user(served_model)
    client = httpclient.InferenceServerClient(server.http.removeprefix("http://"))
    try:
        inputs = [httpclient.InferInput("user_id", [1], "BYTES")]
        inputs[0].set_data_from_numpy(np.array([user], dtype=object), binary_data=False)
        result = client.infer("scenerec", inputs)
        response = result.get_response()
        assert all("binary_data_size" in o["parameters"] for o in response["outputs"])
        assert decoded(result.as_numpy("item_id")[0]) == v1_items(server, user, 10)
    finally:
        client.close()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "inputs: Field required"),
        ({"inputs": "user_id"}, "inputs:"),
        ({"inputs": [{"name": "user_id", "shape": [1], "data": ["u1"]}]}, "inputs[0].datatype: Field"),
        ({"inputs": [{"name": "u", "datatype": "BYTES", "shape": "1", "data": ["u"]}]}, "inputs[0].shape"),
        ({"inputs": [{"name": "k", "datatype": "INT32", "shape": [1], "data": [5]}]}, "user_id"),
    ],
)
def test_every_bad_v2_body_is_a_400_with_one_error_shape(server: Server, body: dict, field: str) -> None:
    """Never FastAPI's 422 with `detail`: the same 400 `{"error": ...}` as every other bad input."""
    import httpx

    response = httpx.post(f"{server.http}/v2/models/scenerec/infer", json=body, timeout=30)
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"error"} and field in response.json()["error"], response.text
