"""Request parsing and validation for V1 (`instances`) and V2 (Open Inference Protocol) payloads.

Every problem raises `kserve.errors.InvalidInput` (KServe answers 400) with a message naming the
field, e.g. `instances[2].k: expected an integer in 1..1000, got 0`. Unknown scenes are not
errors: they fall back to the `default` scene and the answer says so in `fallback`; nor are
filters that leave fewer than k items (or name a category no item has): the answer holds what is
left and says so in `notice`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferRequest

MAX_K = 1000
MAX_INSTANCES = 256
MAX_CANDIDATES = 1000
MAX_ID_LENGTH = 256
MAX_EXCLUDED = 1000
EXPLAINED_HISTORY = 20  # history items an explained answer shows, most recent first
MAX_CATEGORIES = 100
CONTEXT_KEYS = ("device", "timestamp")

# V2 (Open Inference Protocol) tensors: name -> (datatype, required)
V2_INPUTS: dict[str, tuple[str, bool]] = {
    "user_id": ("BYTES", True),
    "scene": ("BYTES", False),
    "k": ("INT32", False),
    "device": ("BYTES", False),
    "timestamp": ("FP64", False),
    "diversity": ("FP64", False),
    # filters: shape [E] applies to every user_id of the call, [B, E] one row per user_id ("" pads)
    "exclude": ("BYTES", False),
    "categories": ("BYTES", False),
}
FILTER_INPUTS = ("exclude", "categories")
V2_OUTPUTS: dict[str, str] = {"item_id": "BYTES", "score": "FP32"}

# The V1 and V2 bodies as JSON Schema, for the OpenAPI document (KServe documents no V1 body and a
# generic V2 one). Built from the limits above; the parsers below stay the authority on validity.
_ID: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH, "pattern": r"\S"}
_K: dict[str, Any] = {"type": "integer", "minimum": 1, "maximum": MAX_K}
_TIMESTAMP: dict[str, Any] = {"type": "number", "minimum": 0}
_DIVERSITY: dict[str, Any] = {"type": "number", "minimum": 0, "maximum": 1}
V1_BODY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["instances"],
    "properties": {
        "instances": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_INSTANCES,
            "items": {
                "type": "object",
                "required": ["user_id"],
                "additionalProperties": False,
                "properties": {
                    "user_id": _ID,
                    "scene": _ID,
                    "context": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {"device": _ID, "timestamp": _TIMESTAMP},
                    },
                    "k": _K,
                    "candidates": {"type": "array", "minItems": 1, "maxItems": MAX_CANDIDATES, "items": _ID},
                    "exclude_seen": {"type": "boolean"},
                    "explain": {"type": "boolean"},
                    "diversity": _DIVERSITY,
                    "exclude": {"type": "array", "maxItems": MAX_EXCLUDED, "items": _ID},
                    "categories": {"type": "array", "minItems": 1, "maxItems": MAX_CATEGORIES, "items": _ID},
                },
            },
        }
    },
}
_V2_VALUES = {
    "user_id": _ID,
    "scene": _ID,
    "k": _K,
    "device": _ID,
    "timestamp": _TIMESTAMP,
    "diversity": _DIVERSITY,
    "exclude": {"type": "string", "maxLength": MAX_ID_LENGTH},
    "categories": {"type": "string", "maxLength": MAX_ID_LENGTH},
}


def _v2_tensor(name: str, datatype: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["name", "shape", "datatype", "data"],
        "properties": {
            "name": {"const": name},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 1}},
            "datatype": {"const": datatype},
            "data": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_EXCLUDED * MAX_INSTANCES if name in FILTER_INPUTS else MAX_INSTANCES,
                "items": _V2_VALUES[name],
            },
        },
    }


V2_BODY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object"},
        "inputs": {
            "type": "array",
            "items": {"oneOf": [_v2_tensor(name, datatype) for name, (datatype, _) in V2_INPUTS.items()]},
            "contains": {"properties": {"name": {"const": "user_id"}}, "required": ["name"]},
        },
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"enum": list(V2_OUTPUTS)}},
            },
        },
    },
}


@dataclass
class Request:
    """One validated recommendation request (ids, not indices)."""

    user_id: str
    scene: str | None = None
    device: str | None = None
    timestamp: float = field(default_factory=time.time)
    k: int = 10
    candidates: list[str] | None = None
    exclude_seen: bool = True
    explain: bool = False
    diversity: float = 0.0  # 0: by relevance; up to 1: spread over categories and item vectors
    exclude: list[str] = field(default_factory=list)  # never answer these item ids
    categories: list[str] | None = None  # answer only items of these categories


def parse_v1(payload: Any) -> list[Request]:
    """`{"instances": [{"user_id": ..., ...}]}` -> requests.

    KServe hands over raw bytes when the Content-Type is not JSON (curl's default form type):
    those are decoded here rather than refused for a header.
    """
    if isinstance(payload, bytes | str):
        try:
            payload = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as e:
            raise InvalidInput(f"body: not valid JSON ({e})") from e
    if not isinstance(payload, dict):
        raise InvalidInput("body: expected a JSON object with an 'instances' list")
    instances = payload.get("instances")
    if not isinstance(instances, list) or not instances:
        raise InvalidInput("instances: expected a non-empty list of request objects")
    if len(instances) > MAX_INSTANCES:
        raise InvalidInput(f"instances: at most {MAX_INSTANCES} per request, got {len(instances)}")
    return [_parse_instance(item, f"instances[{n}]") for n, item in enumerate(instances)]


def _parse_instance(item: Any, where: str) -> Request:
    if not isinstance(item, dict):
        raise InvalidInput(f"{where}: expected an object, got {type(item).__name__}")
    known = {
        "user_id",
        "scene",
        "context",
        "k",
        "candidates",
        "exclude_seen",
        "explain",
        "diversity",
        "exclude",
        "categories",
    }
    unknown = sorted(set(item) - known)
    if unknown:
        raise InvalidInput(f"{where}.{unknown[0]}: unknown field (known: {', '.join(sorted(known))})")
    context = item.get("context", {})
    if not isinstance(context, dict):
        raise InvalidInput(f'{where}.context: expected an object such as {{"device": "mobile"}}')
    unknown = sorted(set(context) - set(CONTEXT_KEYS))
    if unknown:
        raise InvalidInput(f"{where}.context.{unknown[0]}: unknown field (known: {', '.join(CONTEXT_KEYS)})")
    return Request(
        user_id=_identifier(item.get("user_id"), f"{where}.user_id", required=True) or "",
        scene=_identifier(item.get("scene"), f"{where}.scene"),
        device=_identifier(context.get("device"), f"{where}.context.device"),
        timestamp=_timestamp(context.get("timestamp"), f"{where}.context.timestamp"),
        k=_k(item.get("k", 10), f"{where}.k"),
        candidates=_candidates(item.get("candidates"), f"{where}.candidates"),
        exclude_seen=_flag(item.get("exclude_seen", True), f"{where}.exclude_seen"),
        explain=_flag(item.get("explain", False), f"{where}.explain"),
        diversity=_diversity(item.get("diversity", 0.0), f"{where}.diversity"),
        exclude=_id_list(item.get("exclude", []), f"{where}.exclude", MAX_EXCLUDED, empty=True) or [],
        categories=_id_list(item.get("categories"), f"{where}.categories", MAX_CATEGORIES),
    )


def parse_v2(request: InferRequest) -> list[Request]:
    """Open Inference Protocol inputs (user_id BYTES [B]; scene, k, device, timestamp optional)."""
    tensors: dict[str, list[Any]] = {}
    shapes: dict[str, list[int]] = {}
    for tensor in request.inputs:
        spec = V2_INPUTS.get(tensor.name)
        if spec is None:
            raise InvalidInput(f"inputs.{tensor.name}: unknown input (known: {', '.join(V2_INPUTS)})")
        if tensor.datatype != spec[0]:
            raise InvalidInput(f"inputs.{tensor.name}: expected datatype {spec[0]}, got {tensor.datatype}")
        try:  # OverflowError: an INT32 value out of its range; UnicodeDecodeError: BYTES that are not UTF-8
            values = np.asarray(tensor.as_numpy()).reshape(-1).tolist()
            tensors[tensor.name] = [v.decode() if isinstance(v, bytes) else v for v in values]
            shapes[tensor.name] = [int(d) for d in tensor.shape]
        except (ValueError, TypeError, OverflowError, UnicodeDecodeError) as e:
            raise InvalidInput(f"inputs.{tensor.name}: cannot decode the data ({e})") from e
    if "user_id" not in tensors or not tensors["user_id"]:
        raise InvalidInput("inputs.user_id: required (BYTES, shape [B])")
    batch = len(tensors["user_id"])
    if batch > MAX_INSTANCES:
        raise InvalidInput(f"inputs.user_id: at most {MAX_INSTANCES} per request, got {batch}")
    filters = {
        name: _v2_filter(tensors.pop(name), shapes[name], batch, name)
        for name in FILTER_INPUTS
        if name in tensors
    }
    for name, values in tensors.items():
        if len(values) not in (1, batch):
            raise InvalidInput(
                f"inputs.{name}: expected 1 or {batch} values (one per user_id), got {len(values)}"
            )

    def value(name: str, row: int) -> Any:
        values = tensors.get(name)
        return None if values is None else values[row if len(values) > 1 else 0]

    return [
        Request(
            user_id=_identifier(value("user_id", row), f"inputs.user_id[{row}]", required=True) or "",
            scene=_identifier(value("scene", row), f"inputs.scene[{row}]"),
            device=_identifier(value("device", row), f"inputs.device[{row}]"),
            timestamp=_timestamp(value("timestamp", row), f"inputs.timestamp[{row}]"),
            k=_k(value("k", row) if "k" in tensors else 10, f"inputs.k[{row}]"),
            diversity=_diversity(
                value("diversity", row) if "diversity" in tensors else 0.0, f"inputs.diversity[{row}]"
            ),
            exclude=filters["exclude"][row] if "exclude" in filters else [],
            categories=(filters["categories"][row] or None) if "categories" in filters else None,
        )
        for row in range(batch)
    ]


def _v2_filter(values: list[Any], shape: list[int], batch: int, name: str) -> list[list[str]]:
    """A BYTES filter tensor as one id list per user_id: shape [E] for all of them, [B, E] per row
    (empty strings pad the shorter rows)."""
    if len(shape) == 2 and shape[0] == batch:
        width = shape[1]
        rows = [values[r * width : (r + 1) * width] for r in range(batch)]
    elif len(shape) == 1:
        rows = [values] * batch
    else:
        raise InvalidInput(
            f"inputs.{name}: expected shape [E] (for every user_id) or [{batch}, E], got {shape}"
        )
    limit = MAX_EXCLUDED if name == "exclude" else MAX_CATEGORIES
    out = []
    for r, row in enumerate(rows):
        kept = [v for v in row if v != ""]
        out.append(_id_list(kept, f"inputs.{name}[{r}]", limit, empty=True) or [])
    return out


def _identifier(value: Any, where: str, required: bool = False) -> str | None:
    if value is None:
        if required:
            raise InvalidInput(f"{where}: required (a non-empty string)")
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{where}: expected a non-empty string, got {value!r}")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidInput(f"{where}: longer than {MAX_ID_LENGTH} characters")
    return value


def _k(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 1 <= int(value) <= MAX_K:
        raise InvalidInput(f"{where}: expected an integer in 1..{MAX_K}, got {value!r}")
    return int(value)


def _diversity(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise InvalidInput(f"{where}: expected a number in [0, 1] (0: by relevance only), got {value!r}")
    return float(value)


def _id_list(value: Any, where: str, limit: int, empty: bool = False) -> list[str] | None:
    """A list of ids (items or categories); None when absent."""
    if value is None:
        return None
    if not isinstance(value, list) or (not value and not empty):
        raise InvalidInput(f"{where}: expected a {'' if empty else 'non-empty '}list of strings")
    if len(value) > limit:
        raise InvalidInput(f"{where}: at most {limit} entries, got {len(value)}")
    return [_identifier(v, f"{where}[{n}]", required=True) or "" for n, v in enumerate(value)]


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"{where}: expected true or false, got {value!r}")
    return value


def _timestamp(value: Any, where: str) -> float:
    if value is None:
        return time.time()
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise InvalidInput(
            f"{where}: expected seconds since the epoch (a non-negative number), got {value!r}"
        )
    return float(value)


def _candidates(value: Any, where: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise InvalidInput(f"{where}: expected a non-empty list of item ids")
    if len(value) > MAX_CANDIDATES:
        raise InvalidInput(f"{where}: at most {MAX_CANDIDATES} candidates, got {len(value)}")
    return [_identifier(v, f"{where}[{n}]", required=True) or "" for n, v in enumerate(value)]
