"""Every alert evaluated by Prometheus' own rule engine (`promtool test rules`) on series scraped
from a real predictor.

Each case scrapes `/metrics` before and after a workload, and turns the two pages into promtool
input series that keep growing at the rate the workload measured (counters and histograms) or
stay at the scraped value (gauges), as Prometheus would see a steady run. A few cases then change
the real series the way a fault would (slow answers, a 5xx share, an open circuit, a missing pod) to
check that the alert made for it fires, and that no other does. Latency depends on the machine:
wherever a real run's p99 passes 25 ms, the latency alert is expected to fire too. promtool comes
with Debian's `prometheus` package (scripts/ensure_promtool.sh): without it these tests fail under
CI=true and skip elsewhere.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.k8s.conftest import MODEL_NAME, RunningPredictor, find, in_ci

pytestmark = pytest.mark.integration

NAMESPACE = "scenerec-test"  # what the PodMonitor's target labels add to every scraped series
STEADY = 40 * 60  # seconds of steady series: longer than every rule's range + `for`
Series = dict[tuple[str, tuple[tuple[str, str], ...]], tuple[str, float]]  # -> (type, value)


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        message = "promtool is not installed: run scripts/ensure_promtool.sh (make test does)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return path


def scrape(predictor: RunningPredictor) -> Series:
    status, text = predictor.get("/metrics")
    assert status == 200
    series: Series = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            labels = tuple(sorted({**sample.labels, "namespace": NAMESPACE}.items()))
            series[(sample.name, labels)] = (family.type, sample.value)
    return series


def steady_series(before: Series, after: Series, seconds: float) -> tuple[list[dict[str, str]], int]:
    """promtool input series (and their interval in seconds) continuing the measured rates."""
    interval = max(1, math.ceil(seconds))
    steps = STEADY // interval
    out = []
    for (name, labels), (kind, value) in sorted(after.items()):
        selector = name + "{" + ", ".join(f'{k}="{v}"' for k, v in labels) + "}"
        if kind in ("counter", "histogram", "summary"):
            start = before.get((name, labels), (kind, 0.0))[1]
            out.append({"series": selector, "values": f"{start}+{value - start}x{steps}"})
        else:
            out.append({"series": selector, "values": f"{value}x{steps}"})
    return out, interval


def rule_groups(rendered: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Every PrometheusRule group of every overlay (base, and the GPU component's), once."""
    groups: dict[str, dict[str, Any]] = {}
    for objects in rendered.values():
        for rule in find(objects, "PrometheusRule"):
            for group in rule["spec"]["groups"]:
                groups[group["name"]] = group
    return list(groups.values())


def expected_alert(rule: dict[str, Any]) -> dict[str, Any]:
    """The alert promtool must see firing for `rule` (its labels and rendered annotations)."""
    annotations = {
        k: v.replace("{{ $labels.namespace }}", NAMESPACE) for k, v in rule.get("annotations", {}).items()
    }
    labels = dict(rule.get("labels", {}))
    if "namespace" in rule["expr"]:  # every base rule aggregates `by (namespace)`
        labels["namespace"] = NAMESPACE
    return {"exp_labels": labels, "exp_annotations": annotations}


def run_promtool(
    promtool: str,
    tmp_path: Path,
    groups: list[dict[str, Any]],
    series: list[dict[str, str]],
    interval: int,
    firing: set[str],
) -> None:
    """Asserts, at the end of the steady run, that exactly the alerts in `firing` fire."""
    rules = {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}
    assert firing <= set(rules), firing - set(rules)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    test = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": f"{interval}s",
        "tests": [
            {
                "interval": f"{interval}s",
                "input_series": series,
                "alert_rule_test": [
                    {
                        "eval_time": f"{STEADY - 2 * interval}s",
                        "alertname": name,
                        "exp_alerts": [expected_alert(rule)] if name in firing else [],
                    }
                    for name, rule in sorted(rules.items())
                ],
            }
        ],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(test, sort_keys=False))
    result = subprocess.run(
        [promtool, "test", "rules", "test.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]


def workload(predictor: RunningPredictor, calls: list[tuple[dict[str, Any], int]]) -> float:
    """Sends each V1 body and checks its status; returns the seconds it took."""
    path = f"/v1/models/{MODEL_NAME}:predict"
    started = time.perf_counter()
    for body, status in calls:
        got, text = predictor.post(path, json.dumps(body).encode())
        assert got == status, text[:300]
    return time.perf_counter() - started


def known_user(predictor: RunningPredictor) -> str:
    return str(pd.read_parquet(predictor.data / "interactions.parquet")["user_id"].iloc[0])


def p99_above_25ms(before: Series, after: Series) -> bool:
    """What histogram_quantile(0.99, ...) > 0.025 says of 2xx calls: 0.025 is a bucket edge, so
    the quantile is above it exactly when fewer than 99% of the calls fell at or below it."""

    def delta(le: str | None) -> float:
        total = 0.0
        for (name, labels), (_, value) in after.items():
            d = dict(labels)
            if d.get("model") != MODEL_NAME or d.get("code") != "2xx":
                continue
            if (le is None and name == "scenerec_request_seconds_count") or (
                name == "scenerec_request_seconds_bucket" and d.get("le") == le
            ):
                total += value - before.get((name, labels), ("", 0.0))[1]
        return total

    return delta("0.025") < 0.99 * delta(None)


def test_a_healthy_run_fires_nothing(
    predictor: RunningPredictor, rendered: dict[str, list[dict[str, Any]]], promtool: str, tmp_path: Path
) -> None:
    user = known_user(predictor)
    before = scrape(predictor)
    seconds = workload(predictor, [({"instances": [{"user_id": user, "k": 5}]}, 200)] * 60)
    after = scrape(predictor)
    series, interval = steady_series(before, after, seconds)
    slow = {"ScenerecLatencyP99High"} if p99_above_25ms(before, after) else set()
    run_promtool(promtool, tmp_path, rule_groups(rendered), series, interval, slow)


def test_rejected_and_degraded_calls_fire_their_alerts(
    predictor: RunningPredictor, rendered: dict[str, list[dict[str, Any]]], promtool: str, tmp_path: Path
) -> None:
    # the most the default limits admit explained (2,000 items): tens of milliseconds per call
    big = {"instances": [{"user_id": f"new-{n}", "k": 200, "explain": True} for n in range(10)]}
    before = scrape(predictor)
    seconds = workload(predictor, [(big, 200)] * 8 + [({"instances": [{"k": 5}]}, 400)] * 4)
    after = scrape(predictor)
    series, interval = steady_series(before, after, seconds)
    fired = {"ScenerecClientErrorRateHigh", "ScenerecFallbackRateHigh"}
    slow = {"ScenerecLatencyP99High"} if p99_above_25ms(before, after) else set()
    run_promtool(promtool, tmp_path, rule_groups(rendered), series, interval, fired | slow)


def _relabelled(series: list[dict[str, str]], change: Callable[[str], str | None]) -> list[dict[str, str]]:
    out = []
    for entry in series:
        selector = change(entry["series"])
        if selector is not None:
            out.append({**entry, "series": selector})
    return out


@pytest.mark.parametrize(
    ("fault", "fired"),
    [
        ("slow_answers", "ScenerecLatencyP99High"),
        ("server_errors", "ScenerecErrorRateHigh"),
        ("circuit_open", "ScenerecFeatureStoreUnavailable"),
        ("no_ready_pod", "ScenerecPredictorNotReady"),
    ],
)
def test_each_fault_fires_its_alert(
    fault: str,
    fired: str,
    predictor: RunningPredictor,
    rendered: dict[str, list[dict[str, Any]]],
    promtool: str,
    tmp_path: Path,
) -> None:
    user = known_user(predictor)
    before = scrape(predictor)
    seconds = workload(predictor, [({"instances": [{"user_id": user, "k": 5}]}, 200)] * 40)
    after = scrape(predictor)
    series, interval = steady_series(before, after, seconds)
    if fault == "slow_answers":  # every answered call took more than 25 ms: no bucket up to it grows
        for entry in series:
            le = re.search(r'le="([^"]+)"', entry["series"])
            if (
                entry["series"].startswith("scenerec_request_seconds_bucket")
                and 'code="2xx"' in entry["series"]
                and le
                and float(le.group(1)) <= 0.025
            ):
                entry["values"] = re.sub(r"\+[^x]+x", "+0x", entry["values"])
    elif fault == "server_errors":  # as many 5xx as 2xx: the 2xx series copied under code="5xx"
        series += [
            {**e, "series": e["series"].replace('code="2xx"', 'code="5xx"')}
            for e in series
            if e["series"].startswith("scenerec_request_seconds_count") and 'code="2xx"' in e["series"]
        ]
    elif fault == "circuit_open":  # the breaker's gauge as a pod with an open circuit reports it

        def swap(selector: str) -> str | None:
            if not selector.startswith("scenerec_feature_store_circuit"):
                return selector
            return (
                selector.replace('state="open"', 'state="@"')
                .replace('state="closed"', 'state="open"')
                .replace('state="@"', 'state="closed"')
            )

        series = _relabelled(series, swap)
    else:  # no pod reports ready: the series is gone

        def drop(selector: str) -> str | None:
            return None if selector.startswith("scenerec_model_ready") else selector

        series = _relabelled(series, drop)
    slow = {"ScenerecLatencyP99High"} if p99_above_25ms(before, after) or fault == "slow_answers" else set()
    run_promtool(promtool, tmp_path, rule_groups(rendered), series, interval, {fired} | slow)
