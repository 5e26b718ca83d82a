"""Request validation: every bad input names its field; good inputs become typed requests."""

from __future__ import annotations

import numpy as np
import pytest
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferInput, InferRequest

from serving.requests import MAX_CANDIDATES, MAX_INSTANCES, parse_v1, parse_v2


def test_a_full_v1_instance() -> None:
    (r,) = parse_v1(
        {
            "instances": [
                {
                    "user_id": "u1",
                    "scene": "home",
                    "context": {"device": "mobile", "timestamp": 1.7e9},
                    "k": 5,
                    "candidates": ["i1", "i2"],
                    "exclude_seen": False,
                    "explain": True,
                }
            ]
        }
    )
    assert (r.user_id, r.scene, r.device, r.timestamp, r.k) == ("u1", "home", "mobile", 1.7e9, 5)
    assert r.candidates == ["i1", "i2"] and not r.exclude_seen and r.explain


def test_v1_defaults() -> None:
    (r,) = parse_v1({"instances": [{"user_id": "u1"}]})
    assert r.scene is None and r.k == 10 and r.exclude_seen and not r.explain and r.candidates is None


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ([1, 2], "body"),
        ({}, "instances"),
        ({"instances": []}, "instances"),
        ({"instances": "u1"}, "instances"),
        ({"instances": [{"scene": "home"}]}, r"instances\[0\]\.user_id: required"),
        ({"instances": [{"user_id": ""}]}, r"instances\[0\]\.user_id"),
        ({"instances": [{"user_id": 7}]}, r"instances\[0\]\.user_id"),
        (
            {"instances": [{"user_id": "u1"}, {"user_id": "u2", "k": 0}]},
            r"instances\[1\]\.k: expected an integer in 1\.\.1000",
        ),
        ({"instances": [{"user_id": "u1", "k": 1001}]}, r"instances\[0\]\.k"),
        ({"instances": [{"user_id": "u1", "k": "10"}]}, r"instances\[0\]\.k"),
        ({"instances": [{"user_id": "u1", "k": True}]}, r"instances\[0\]\.k"),
        ({"instances": [{"user_id": "u1", "scene": 3}]}, r"instances\[0\]\.scene"),
        ({"instances": [{"user_id": "u1", "context": "mobile"}]}, r"instances\[0\]\.context"),
        (
            {"instances": [{"user_id": "u1", "context": {"hour": 3}}]},
            r"instances\[0\]\.context\.hour: unknown field",
        ),
        ({"instances": [{"user_id": "u1", "context": {"timestamp": -5}}]}, r"context\.timestamp"),
        ({"instances": [{"user_id": "u1", "exclude_seen": "yes"}]}, r"instances\[0\]\.exclude_seen"),
        ({"instances": [{"user_id": "u1", "candidates": []}]}, r"instances\[0\]\.candidates"),
        ({"instances": [{"user_id": "u1", "candidates": ["i1", 2]}]}, r"instances\[0\]\.candidates\[1\]"),
        (
            {"instances": [{"user_id": "u1", "candidates": ["i"] * (MAX_CANDIDATES + 1)}]},
            "at most 1000 candidates",
        ),
        ({"instances": [{"user_id": "u1"}] * (MAX_INSTANCES + 1)}, f"at most {MAX_INSTANCES}"),
        ({"instances": [{"user_id": "u1", "userid": "u2"}]}, r"instances\[0\]\.userid: unknown field"),
    ],
)
def test_bad_v1_input_names_the_field(payload: object, field: str) -> None:
    with pytest.raises(InvalidInput, match=field):
        parse_v1(payload)


def v2(*inputs: InferInput) -> InferRequest:
    return InferRequest(model_name="scenerec", infer_inputs=list(inputs))


def bytes_input(name: str, values: list[str]) -> InferInput:
    tensor = InferInput(name, [len(values)], "BYTES")
    tensor.set_data_from_numpy(np.array(values, dtype=object), binary_data=False)
    return tensor


def test_v2_batch_with_broadcast_scene() -> None:
    k = InferInput("k", [1], "INT32")
    k.set_data_from_numpy(np.array([3], dtype=np.int32), binary_data=False)
    requests = parse_v2(v2(bytes_input("user_id", ["u1", "u2"]), bytes_input("scene", ["search"]), k))
    assert [(r.user_id, r.scene, r.k) for r in requests] == [("u1", "search", 3), ("u2", "search", 3)]


def test_bad_v2_inputs_name_the_tensor() -> None:
    with pytest.raises(InvalidInput, match=r"inputs\.user_id: required"):
        parse_v2(v2(bytes_input("scene", ["home"])))
    k = InferInput("k", [1], "FP32")
    k.set_data_from_numpy(np.array([3.0], dtype=np.float32), binary_data=False)
    with pytest.raises(InvalidInput, match=r"inputs\.k: expected datatype INT32"):
        parse_v2(v2(bytes_input("user_id", ["u1"]), k))
    with pytest.raises(InvalidInput, match=r"inputs\.colour: unknown input"):
        parse_v2(v2(bytes_input("user_id", ["u1"]), bytes_input("colour", ["red"])))
    with pytest.raises(InvalidInput, match=r"inputs.scene: expected 1 or 2 values"):
        parse_v2(v2(bytes_input("user_id", ["u1", "u2"]), bytes_input("scene", ["a", "b", "c"])))
    big = InferInput("k", [1], "INT32")
    big.set_data_from_numpy(np.array([5000], dtype=np.int32), binary_data=False)
    with pytest.raises(InvalidInput, match=r"inputs.k\[0\]: expected an integer in 1\.\.1000"):
        parse_v2(v2(bytes_input("user_id", ["u1"]), big))


@pytest.mark.parametrize(
    ("tensor", "field"),
    [
        pytest.param(
            InferInput("k", [1], "INT32", data=[1 << 40]), r"inputs\.k: cannot", id="int32-overflow"
        ),
        pytest.param(
            InferInput("user_id", [1], "BYTES", data=[b"\xff"]), r"inputs\.user_id: cannot", id="not-utf8"
        ),
    ],
)
def test_v2_data_that_does_not_decode_names_the_tensor(tensor: InferInput, field: str) -> None:
    """Both escaped the parser (OverflowError, UnicodeDecodeError): the first was a 500 over REST."""
    inputs = [tensor] if tensor.name == "user_id" else [bytes_input("user_id", ["u1"]), tensor]
    with pytest.raises(InvalidInput, match=field):
        parse_v2(v2(*inputs))
