"""Every kustomization builds, and every object it renders is valid against its schema, offline.

Kubernetes' own kinds are checked against kubernetes-validate's schemas, custom resources against
the CRDs vendored under k8s/upstream/ (tests/k8s/schemas.py); a deliberately broken fixture shows
the validation rejects what it should.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import pytest
from yamllint import linter
from yamllint.config import YamlLintConfig

from tests.k8s import schemas
from tests.k8s.conftest import K8S, KUSTOMIZATIONS, find, kustomize
from tests.k8s.schemas import ROOT, UPSTREAM


@pytest.mark.parametrize("name", list(KUSTOMIZATIONS))
def test_kustomization_renders_objects(name: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered[name]
    assert objects, f"{name}: kubectl kustomize rendered nothing"
    assert all(o.get("metadata", {}).get("name") for o in objects)


@pytest.mark.parametrize("name", list(KUSTOMIZATIONS))
def test_every_rendered_object_is_valid_against_its_schema(
    name: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    errors = list(schemas.validate_all(rendered[name]))
    assert not errors, f"{name}:\n" + "\n".join(errors)


def test_overlays_are_namespaced_and_cover_dev_and_prod(rendered: dict[str, list[dict[str, Any]]]) -> None:
    assert {"dev", "prod"} <= set(KUSTOMIZATIONS)
    for name in ("dev", "prod", "training"):
        namespaces = {o["metadata"].get("namespace") for o in rendered[name]}
        assert len(namespaces) == 1 and None not in namespaces, f"{name}: {namespaces}"


def test_the_broken_fixture_fails_validation_for_each_mistake(kubectl: str) -> None:
    objects = kustomize(kubectl, ROOT / "tests" / "k8s" / "fixtures" / "broken")
    errors = list(schemas.validate_all(objects))
    expected = [
        r"InferenceService/scenerec: spec\.predictor\.minReplicas: 'two' is not of type 'integer'",
        r"InferenceService/scenerec: spec\.predictor\.scaleMetric: 'latency' is not one of",
        r"InferenceService/scenerec: spec\.predictor\.containers\[0\]: .*'readinessProbes' was unexpected",
        r"PodMonitor/scenerec-predictor: spec\.podMetricsEndpoints\[0\]\.portNumber: '8080' is not of type",
        r"PrometheusRule/scenerec-predictor: spec\.groups\[0\]\.rules\[0\]: 'expr' is a required property",
        r"PyTorchJob/scenerec-train: spec: 'pytorchReplicaSpecs' is a required property",
        r"PyTorchJob/scenerec-train: spec\.nprocPerNode: 1 is not of type 'string'",
        r"StatefulSet/scenerec-redis: spec: 'selector' is a required property",
        r"StatefulSet/scenerec-redis: spec\.replicas: 'one' is not of type",
        r"Service/scenerec-redis: metadata\.labels\.broken: True is not of type",
        r"Service/scenerec-redis: spec\.ports\[0\]\.port: 'redis' is not of type 'integer'",
    ]
    missing = [pattern for pattern in expected if not any(re.search(pattern, e) for e in errors)]
    assert not missing, "not reported:\n" + "\n".join(missing) + "\nreported:\n" + "\n".join(errors)
    rejected = {e.split(":", 1)[0] for e in errors}
    assert rejected == {schemas.describe(o) for o in objects}, "every broken object must be rejected"


def test_a_kind_without_a_schema_is_an_error_not_a_pass() -> None:
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    (error,) = schemas.validate(unknown)
    assert "no schema for example.com/v1 Widget" in error
    unserved = {"apiVersion": "kubeflow.org/v1", "kind": "TFJob", "metadata": {"name": "t"}}
    (error,) = schemas.validate(unserved)
    assert "not a served kind" in error


def test_crd_schemas_are_read_as_the_api_server_reads_them() -> None:
    schema = schemas.to_json_schema(
        {
            "type": "object",
            "description": "dropped",
            "properties": {
                "port": {"x-kubernetes-int-or-string": True},
                "note": {"type": "string", "nullable": True},
                "free": {"type": "object", "properties": {"a": {"type": "string"}},
                         "x-kubernetes-preserve-unknown-fields": True},
            },
        }
    )  # fmt: skip
    assert schema["additionalProperties"] is False and "description" not in schema
    assert schema["properties"]["port"]["anyOf"] == [{"type": "integer"}, {"type": "string"}]
    assert schema["properties"]["note"]["type"] == ["string", "null"]
    assert "additionalProperties" not in schema["properties"]["free"]


def test_every_vendored_crd_matches_its_recorded_source() -> None:
    table = (UPSTREAM / "SOURCES.md").read_text()
    # | `file` | owner/repo | `path` | tag | commit | sha256 |
    row = r"^\| `([^`]+)` \| ([\w.-]+/[\w.-]+) \| `([^`]+)` \| (\S+) \| ([0-9a-f]{40}) \| ([0-9a-f]{64}) \|$"
    rows = re.findall(row, table, flags=re.MULTILINE)
    recorded = {row[0]: row for row in rows}
    files = sorted(str(p.relative_to(UPSTREAM)) for p in UPSTREAM.rglob("*.yaml"))
    assert sorted(recorded) == files, "every vendored file needs exactly one row in SOURCES.md"
    for path, (_, _, upstream_path, _, _, sha256) in recorded.items():
        data = (UPSTREAM / path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == sha256, f"{path} differs from {upstream_path} as recorded"
        (crd,) = schemas.load_yaml_documents(data.decode())
        assert crd["kind"] == "CustomResourceDefinition"
    kinds = {kind for _, _, kind in schemas.crd_schemas()}
    assert {"InferenceService", "PodMonitor", "ServiceMonitor", "PrometheusRule", "PyTorchJob"} <= kinds


def test_manifests_pass_yamllint() -> None:
    config = YamlLintConfig(file=str(K8S / ".yamllint.yaml"))
    sources = [p for p in K8S.rglob("*.yaml") if UPSTREAM not in p.parents and p.name != ".yamllint.yaml"]
    sources += list((ROOT / "tests" / "k8s" / "fixtures").rglob("*.yaml"))
    problems = [
        f"{path.relative_to(ROOT)}:{problem.line}:{problem.column}: {problem.message} ({problem.rule})"
        for path in sources
        for problem in linter.run(path.read_text(), config, str(path))
    ]
    assert not problems, "\n".join(problems)


def test_dashboard_is_grafana_json_with_unique_panels(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for overlay in ("dev", "prod"):
        (config_map,) = find(rendered[overlay], "ConfigMap", "scenerec-grafana-dashboard")
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        dashboard = json.loads(config_map["data"]["scenerec.json"])
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(ids) == len(set(ids)) and dashboard["uid"] == "scenerec-predictor"
        assert all(target["expr"] for panel in dashboard["panels"] for target in panel["targets"])
