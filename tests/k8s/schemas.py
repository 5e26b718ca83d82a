"""Offline schema validation of rendered Kubernetes objects.

- Kubernetes' own kinds: `kubernetes-validate`'s copy of the API server's schemas, strict (an
  unknown field is an error, as with `kubectl apply --validate=strict`).
- Custom resources: the `openAPIV3Schema` of the CRDs vendored under k8s/upstream/ (SOURCES.md
  says where each comes from), turned into JSON Schema the way the API server reads it: `nullable`
  admits null, int-or-string fields take either, and an object that lists its properties rejects
  any other (unless it says `x-kubernetes-preserve-unknown-fields`). `metadata` is checked against
  Kubernetes' ObjectMeta. CEL rules (`x-kubernetes-validations`) are not evaluated.

A kind with no schema in either place is an error, never a silent pass.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from referencing import Registry, Resource

ROOT = Path(__file__).resolve().parents[2]
UPSTREAM = ROOT / "k8s" / "upstream"
# The API version the manifests are checked against: the oldest a supported cluster runs
# (kubectl here is v1.32; KServe 0.20 supports 1.32 and newer).
KUBERNETES_VERSION = "1.32.0"
_OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
_KEEP = {
    "type",
    "properties",
    "items",
    "additionalProperties",
    "required",
    "enum",
    "pattern",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
    "anyOf",
    "allOf",
    "oneOf",
    "not",
    "multipleOf",
}


def load_yaml_documents(text: str) -> list[dict[str, Any]]:
    """The non-empty documents of a multi-document YAML stream (libyaml's loader when available)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return [doc for doc in yaml.load_all(text, Loader=loader) if doc]


def to_json_schema(node: Any) -> Any:
    """A CRD's structural OpenAPI v3 schema as a JSON Schema (draft 4) the API server would agree with."""
    if isinstance(node, list):
        return [to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key not in _KEEP:
            continue  # descriptions, formats, x-kubernetes-* markers, defaults
        if key == "properties":
            out[key] = {name: to_json_schema(sub) for name, sub in value.items()}
        elif key in ("items", "not", "anyOf", "allOf", "oneOf", "additionalProperties"):
            out[key] = to_json_schema(value)  # a schema (or, for additionalProperties, a boolean)
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string") and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    # The API server prunes (and strict field validation rejects) fields a schema does not list.
    closed = out.get("type") == "object" and "properties" in out and "additionalProperties" not in out
    if closed and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


@functools.cache
def crd_schemas() -> dict[tuple[str, str, str], dict[str, Any]]:
    """(group, version, kind) -> JSON Schema, for every served version of every vendored CRD."""
    schemas: dict[tuple[str, str, str], dict[str, Any]] = {}
    for path in sorted(UPSTREAM.rglob("*.yaml")):
        for crd in load_yaml_documents(path.read_text()):
            if crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            for version in spec["versions"]:
                if not version.get("served", False):
                    continue
                schema = to_json_schema(version["schema"]["openAPIV3Schema"])
                schema["properties"]["metadata"] = {"type": "object"}  # checked as ObjectMeta apart
                schemas[(spec["group"], version["name"], spec["names"]["kind"])] = schema
    return schemas


@functools.cache
def _crd_validator(key: tuple[str, str, str]) -> jsonschema.Draft4Validator:
    return jsonschema.Draft4Validator(crd_schemas()[key])


def _core_schema_file(name: str) -> Any:
    """A file of kubernetes-validate's strict schemas for KUBERNETES_VERSION."""
    folder = f"kubernetes-json-schema/v{KUBERNETES_VERSION}-local-strict"
    return json.loads(resources.files(kubernetes_validate).joinpath(folder, name).read_text())


@functools.cache
def _definitions() -> Resource:
    return Resource.from_contents(_core_schema_file("_definitions.json"))


@functools.cache
def _object_meta_validator() -> jsonschema.Draft202012Validator:
    """Kubernetes' ObjectMeta schema, from kubernetes-validate's strict definitions."""
    registry: Registry = _definitions() @ Registry()
    ref = f"{_definitions().id()}#/$defs/{_OBJECT_META}"
    return jsonschema.Draft202012Validator({"$ref": ref}, registry=registry)


@functools.cache
def _core_validator(api_version: str, kind: str) -> jsonschema.Draft202012Validator | None:
    """The validator of a Kubernetes kind (None if Kubernetes has no such kind and version).

    The file naming is kubernetes-validate's own: `apps/v1` -> `apps-v1`, `rbac.authorization.k8s.io/v1`
    -> `rbac-v1`, `v1` -> `v1`.
    """
    api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    try:
        schema = _core_schema_file(f"{kind.lower()}-{api}.json")
    except FileNotFoundError:
        return None
    registry: Registry = Resource.from_contents(schema) @ (_definitions() @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _group_version(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


def describe(obj: dict[str, Any]) -> str:
    """`Kind/name` of an object, for messages."""
    return f"{obj.get('kind', '?')}/{(obj.get('metadata') or {}).get('name', '?')}"


def _sorted(errors: Iterable[jsonschema.ValidationError]) -> list[jsonschema.ValidationError]:
    return sorted(errors, key=lambda e: [str(p) for p in e.absolute_path])


def _format(error: jsonschema.ValidationError) -> str:
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    message = error.message if len(error.message) < 300 else error.message[:297] + "..."
    return f"{where.lstrip('.') or '(top level)'}: {message}"


def validate(obj: dict[str, Any]) -> list[str]:
    """Every schema violation of one object, as `Kind/name: path: message` lines (empty if valid)."""
    name = describe(obj)
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return [f"{name}: apiVersion and kind are required"]
    group, version = _group_version(api_version)
    key = (group, version, kind)
    if key in crd_schemas():
        errors = _sorted(_crd_validator(key).iter_errors(obj))
        meta = _sorted(_object_meta_validator().iter_errors(obj.get("metadata") or {}))
        return [f"{name}: {_format(e)}" for e in errors] + [f"{name}: metadata.{_format(e)}" for e in meta]
    if group and any(g == group for g, _, _ in crd_schemas()):
        return [f"{name}: {api_version} {kind} is not a served kind of the vendored CRDs of {group}"]
    core = _core_validator(api_version, kind)
    if core is None:
        where = f"neither Kubernetes {KUBERNETES_VERSION} nor k8s/upstream/"
        return [f"{name}: no schema for {api_version} {kind} ({where})"]
    return [f"{name}: {_format(e)}" for e in _sorted(core.iter_errors(obj))]


def validate_all(objects: Iterable[dict[str, Any]]) -> Iterator[str]:
    """Every violation of every object."""
    for obj in objects:
        yield from validate(obj)
