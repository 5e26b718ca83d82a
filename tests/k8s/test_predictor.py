"""The manifests against a running predictor: probes, scrape path, and the metrics the alerts use.

The predictor is started exactly as the dev overlay's InferenceService starts it (the image's
ENTRYPOINT with the InferenceService's arguments, mount paths mapped to a temporary directory), on a
small model trained and published here (tests/k8s/conftest.py).
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.k8s import promql
from tests.k8s.conftest import MODEL_NAME, OVERLAYS, RunningPredictor, find, predictor_container

pytestmark = pytest.mark.integration

PROBES = ("startupProbe", "livenessProbe", "readinessProbe")
# Labels Prometheus adds to every scraped series (PodMonitor target labels): not on /metrics.
TARGET_LABELS = frozenset({"namespace", "pod", "container", "job", "instance", "endpoint", "service"})


def test_every_probe_answers_200_on_the_running_predictor(
    predictor: RunningPredictor, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    checked = set()
    for overlay in OVERLAYS:
        container = predictor_container(rendered[overlay])
        for probe in PROBES:
            path = container[probe]["httpGet"]["path"]
            status, body = predictor.get(path)
            assert status == 200, f"{overlay}: {probe} {path} -> {status} {body[:200]}"
            checked.add(path)
    assert {"/v2/health/live", "/v2/health/ready"} <= checked


def test_pod_monitor_path_serves_prometheus_metrics(
    predictor: RunningPredictor, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    for overlay in OVERLAYS:
        (monitor,) = find(rendered[overlay], "PodMonitor")
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            status, text = predictor.get(endpoint["path"])
            assert status == 200, f"{overlay}: {endpoint['path']} -> {status}"
            names = {family.name for family in text_string_to_metric_families(text)}
            assert "scenerec_model_ready" in names


def _exercise(predictor: RunningPredictor) -> None:
    """A known user's request, an unknown user's (a fallback) and a bad one, so labels have samples."""
    interactions = pd.read_parquet(predictor.data / "interactions.parquet")
    user, scene = str(interactions["user_id"].iloc[0]), str(interactions["scene"].iloc[0])
    path = f"/v1/models/{MODEL_NAME}:predict"
    for instance in ({"user_id": user, "scene": scene, "k": 5}, {"user_id": "nobody-here", "k": 5}):
        status, body = predictor.post(path, json.dumps({"instances": [instance]}).encode())
        assert status == 200, body[:300]
    status, _ = predictor.post(path, json.dumps({"instances": [{"k": 5}]}).encode())
    assert status == 400


_SUFFIXES = {"histogram": ("_bucket", "_count", "_sum"), "counter": ("_total",)}


def _series(text: str) -> dict[str, set[str]]:
    """Sample name -> label names seen, plus every declared family's sample names (even unsampled)."""
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for suffix in _SUFFIXES.get(family.type, ("",)):
            series.setdefault(family.name + suffix, set())
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


def test_every_metric_and_label_the_alerts_and_dashboard_read_is_on_metrics(
    predictor: RunningPredictor, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    _exercise(predictor)
    status, text = predictor.get("/metrics")
    assert status == 200
    series = _series(text)
    expressions: dict[str, str] = {}
    for overlay in OVERLAYS:
        expressions.update(promql.rule_expressions(rendered[overlay]))
        for config_map in find(rendered[overlay], "ConfigMap", "scenerec-grafana-dashboard"):
            for name, dashboard in config_map["data"].items():
                found = promql.dashboard_expressions(json.loads(dashboard))
                expressions.update({f"{name} {where}": expr for where, expr in found.items()})
    assert any("ScenerecErrorRateHigh" in where for where in expressions)
    problems = []
    for where, expr in expressions.items():
        for selector in promql.selectors(expr):
            if selector.metric not in series:
                problems.append(f"{where}: {selector.metric} is not on the predictor's /metrics")
                continue
            if not series[selector.metric]:
                problems.append(f"{where}: {selector.metric} is declared but has no sample after requests")
                continue
            for label, op, value in selector.matchers:
                if label in TARGET_LABELS:
                    continue
                if label not in series[selector.metric]:
                    problems.append(f"{where}: {selector.metric} has no label {label!r}")
                elif label in ("model", "model_name") and op == "=" and value != MODEL_NAME:
                    problems.append(f"{where}: {selector.metric}{{{label}={value!r}}}: not the served model")
    assert not problems, "\n".join(problems)


def _count(text: str, sample: str, label: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == sample and s.labels.get(label) == MODEL_NAME
    )


def test_each_call_is_counted_once_by_protocol_and_status(predictor: RunningPredictor) -> None:
    """What the error-rate alerts divide: one observation per call, a 400 as a 4xx, a batch of
    instances as one call (the old batch histogram counted scoring batches, not calls)."""

    def calls(code: str) -> float:
        text = predictor.get("/metrics")[1]
        return sum(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "scenerec_request_seconds_count"
            and s.labels == {"model": MODEL_NAME, "protocol": "v1", "code": code}
        )

    path = f"/v1/models/{MODEL_NAME}:predict"
    ok, bad = calls("2xx"), calls("4xx")
    body = json.dumps({"instances": [{"user_id": "u", "k": 3}] * 5}).encode()
    assert predictor.post(path, body)[0] == 200
    assert (calls("2xx"), calls("4xx")) == (ok + 1, bad)
    assert predictor.post(path, json.dumps({"instances": [{"k": 3}]}).encode())[0] == 400
    assert (calls("2xx"), calls("4xx")) == (ok + 1, bad + 1)
    assert predictor.post("/v1/models/no-such-model:predict", body)[0] == 404  # label "other"
    text = predictor.get("/metrics")[1]
    assert 'scenerec_responses_total{model="other",protocol="v1",status="404"}' in text
    assert "no-such-model" not in text
    assert "feast_" not in text  # Feast's own families (always zero here) are left out
