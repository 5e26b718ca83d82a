"""The properties of the rendered manifests that matter, overlay by overlay (1 of 2: serving).

GPU where asked for, pinned images set only through `images:`, probes and scrape paths on the
serving port, alerts on the predictor's own metrics, autoscaling that never reaches zero, and the
PyTorchJob consistent with `scenerec.deploy.render_pytorchjob`. test_access.py has the rest.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from scenerec import deploy
from tests.k8s import promql
from tests.k8s.conftest import (
    K8S,
    MODEL_NAME,
    OVERLAYS,
    arg,
    container_images,
    find,
    gpu_overlays,
    overlay_kustomization,
    pod_specs,
    predictor_container,
)
from tests.k8s.schemas import ROOT

Objects = dict[str, list[dict[str, Any]]]
HEALTH = {"/v2/health/live", "/v2/health/ready", f"/v2/models/{MODEL_NAME}/ready"}


# ---- GPU and images ------------------------------------------------------------------------------


def test_prod_is_the_gpu_overlay_and_dev_is_cpu() -> None:
    assert "prod" in gpu_overlays() and "dev" not in gpu_overlays()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gpu_overlays_request_a_gpu_and_run_the_gpu_image(overlay: str, rendered: Objects) -> None:
    container = predictor_container(rendered[overlay])
    (isvc,) = find(rendered[overlay], "InferenceService", MODEL_NAME)
    limits = container["resources"].get("limits", {})
    image = container["image"]
    if overlay in gpu_overlays():
        assert str(limits.get("nvidia.com/gpu")) == "1", f"{overlay}: no GPU limit"
        assert image.startswith("ghcr.io/scenerec/scenerec-predictor:") and image.endswith("-gpu"), image
        assert arg(container, "--device") == "cuda"
        tolerations = isvc["spec"]["predictor"].get("tolerations", [])
        assert any(t["key"] == "nvidia.com/gpu" for t in tolerations)
        assert find(rendered[overlay], "PrometheusRule", "scenerec-predictor-gpu")
    else:
        assert "nvidia.com/gpu" not in limits and not image.endswith("-gpu")
        assert arg(container, "--device") == "cpu"


@pytest.mark.parametrize("name", [*OVERLAYS, "training"])
def test_every_image_is_pinned_never_latest_or_a_placeholder(name: str, rendered: Objects) -> None:
    images = container_images(rendered[name])
    assert images
    for image in images:
        repository, _, digest = image.partition("@")
        tag = repository.rsplit(":", 1)[1] if ":" in repository.rsplit("/", 1)[-1] else ""
        assert "/" in repository, f"{name}: {image} is a placeholder name (set it with `images:`)"
        assert tag or digest.startswith("sha256:"), f"{name}: {image} has no tag or digest"
        assert tag != "latest" and "latest" not in tag.split("-"), f"{name}: {image} uses latest"


def test_prod_has_no_latest_anywhere(rendered: Objects) -> None:
    text = yaml.safe_dump_all(rendered["prod"])
    assert not re.search(r"image: \S+:latest\b", text)
    for entry in overlay_kustomization("prod").get("images", []):
        assert entry.get("newTag", "") != "latest" and (entry.get("newTag") or entry.get("digest"))


def test_images_are_set_only_through_kustomize_images() -> None:
    """In the source manifests every image is a bare placeholder; overlays and components pin them."""
    sources = [p for p in K8S.rglob("*.yaml") if "upstream" not in p.parts and p.name != "kustomization.yaml"]
    found = []
    for path in sources:
        for doc in yaml.safe_load_all(path.read_text()):
            for spec in pod_specs(doc) if isinstance(doc, dict) and "kind" in doc else []:
                found += [(path, c["image"]) for c in spec.get("containers", []) if "image" in c]
    assert found
    pinned = [
        f"{p.relative_to(ROOT)}: {image}" for p, image in found if not re.fullmatch(r"[a-z0-9-]+", image)
    ]
    assert not pinned, "set these through `images:` in a kustomization:\n" + "\n".join(pinned)


# ---- probes, ports and scraping ------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_point_at_health_endpoints_on_the_serving_port(overlay: str, rendered: Objects) -> None:
    container = predictor_container(rendered[overlay])
    port = int(arg(container, "--http_port"))
    assert [p["containerPort"] for p in container["ports"]] == [port]
    probes = {
        name: container[name]["httpGet"] for name in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    for name, get in probes.items():
        assert get["path"] in HEALTH and int(get["port"]) == port, f"{overlay}: {name} {get}"
    assert probes["livenessProbe"]["path"] == "/v2/health/live"
    assert probes["readinessProbe"]["path"] in ("/v2/health/ready", f"/v2/models/{MODEL_NAME}/ready")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pod_monitor_scrapes_the_predictor_pods(overlay: str, rendered: Objects) -> None:
    (monitor,) = find(rendered[overlay], "PodMonitor")
    (isvc,) = find(rendered[overlay], "InferenceService", MODEL_NAME)
    port = int(arg(predictor_container(rendered[overlay]), "--http_port"))
    # KServe labels the predictor pods with the InferenceService's name.
    assert monitor["spec"]["selector"]["matchLabels"] == {
        "serving.kserve.io/inferenceservice": isvc["metadata"]["name"]
    }
    assert [(e["portNumber"], e["path"]) for e in monitor["spec"]["podMetricsEndpoints"]] == [
        (port, "/metrics")
    ]


def test_alerts_cover_latency_fallbacks_errors_and_readiness(rendered: Objects) -> None:
    rules = promql.rule_expressions(rendered["prod"])
    metrics = {where.split(": ", 1)[1]: {s.metric for s in promql.selectors(e)} for where, e in rules.items()}
    assert "scenerec_request_seconds_bucket" in metrics["ScenerecLatencyP99High"]
    assert "scenerec_requests_total" in metrics["ScenerecFallbackRateHigh"]
    assert metrics["ScenerecErrorRateHigh"] == {"scenerec_request_seconds_count"}
    assert metrics["ScenerecClientErrorRateHigh"] == {"scenerec_request_seconds_count"}
    assert "scenerec_feature_store_circuit" in metrics["ScenerecFeatureStoreUnavailable"]
    assert "scenerec_model_ready" in metrics["ScenerecPredictorNotReady"]


def test_every_metric_the_alerts_and_dashboard_read_is_declared_by_the_predictor(rendered: Objects) -> None:
    """Fast twin of test_predictor.py's check: against the metric declarations, no server needed."""
    import kserve.metrics
    from prometheus_client.metrics import MetricWrapperBase

    import serving.metrics as ours

    declared: dict[str, set[str]] = {}
    for module in (ours, kserve.metrics):
        for metric in vars(module).values():
            for m in metric.values() if isinstance(metric, dict) else [metric]:
                if isinstance(m, MetricWrapperBase):
                    suffixes = {"histogram": ("_bucket", "_count", "_sum"), "counter": ("_total",)}
                    for suffix in suffixes.get(m._type, ("",)):
                        declared[m._name + suffix] = set(m._labelnames) | (
                            {"le"} if suffix == "_bucket" else set()
                        )
    expressions = promql.rule_expressions(rendered["prod"])
    (config_map,) = find(rendered["prod"], "ConfigMap", "scenerec-grafana-dashboard")
    expressions.update(promql.dashboard_expressions(json.loads(config_map["data"]["scenerec.json"])))
    problems = []
    for where, expr in expressions.items():
        for selector in promql.selectors(expr):
            labels = declared.get(selector.metric)
            if labels is None:
                problems.append(f"{where}: {selector.metric} is not declared")
                continue
            unknown = {label for label, _, _ in selector.matchers} - labels - {"namespace", "pod"}
            if unknown:
                problems.append(f"{where}: {selector.metric} has no label(s) {sorted(unknown)}")
    assert not problems, "\n".join(problems)


# ---- scale-out -------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_predictor_autoscales_on_traffic_and_never_to_zero(overlay: str, rendered: Objects) -> None:
    (isvc,) = find(rendered[overlay], "InferenceService", MODEL_NAME)
    predictor = isvc["spec"]["predictor"]
    assert predictor["minReplicas"] >= 1, "scale-to-zero is off by default"
    assert predictor["maxReplicas"] > predictor["minReplicas"]
    assert predictor["scaleMetric"] in ("concurrency", "rps") and predictor["scaleTarget"] > 0
    # KServe scales on concurrency/rps only in Knative mode (Standard mode: cpu, memory).
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"
    if overlay == "prod":
        assert predictor["minReplicas"] >= 2
        (budget,) = find(rendered[overlay], "PodDisruptionBudget")
        assert budget["spec"]["selector"]["matchLabels"] == {"serving.kserve.io/inferenceservice": MODEL_NAME}


def test_training_runs_ddp_on_several_pods_and_matches_render_pytorchjob(rendered: Objects) -> None:
    (job,) = find(rendered["training"], "PyTorchJob")
    roles = job["spec"]["pytorchReplicaSpecs"]
    assert roles["Master"]["replicas"] == 1 and roles["Worker"]["replicas"] >= 1
    assert roles["Master"]["template"] == roles["Worker"]["template"]
    (container,) = roles["Master"]["template"]["spec"]["containers"]
    assert container["name"] == "pytorch" and container["command"] == ["torchrun"]
    args = container["args"]
    assert args[args.index("-m") + 1 : args.index("-m") + 3] == ["scenerec.cli", "train"]
    assert any(a.startswith("--nnodes=") for a in args)
    (claim,) = find(rendered["training"], "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    expected = deploy.render_pytorchjob(
        image=container["image"],
        data=args[args.index("--data") + 1],
        out=args[args.index("--out") + 1],
        namespace=job["metadata"]["namespace"],
    )
    assert job == expected, "k8s/training/pytorchjob.yaml and scenerec.deploy.render_pytorchjob differ"


def test_render_pytorchjob_refuses_paths_off_the_shared_volume() -> None:
    with pytest.raises(deploy.DeployError, match="shared volume"):
        deploy.render_pytorchjob(image="i", data="/data", out="/workspace/m")
    job = deploy.render_pytorchjob(image="i", data="/workspace/d", out="/workspace/m", workers=0, cpu="1500m",
                                   overrides=("train.epochs=3",))  # fmt: skip
    (container,) = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"]
    assert list(job["spec"]["pytorchReplicaSpecs"]) == ["Master"]
    assert container["args"][-2:] == ["--set", "train.epochs=3"]
    assert {"name": "OMP_NUM_THREADS", "value": "1"} in container["env"]


# ---- shutdown ------------------------------------------------------------------------------------

# Knative's preStop hook on the user container waits for its queue-proxy to drain, up to this long.
KNATIVE_DRAIN_S = 30
MARGIN_S = 5


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_knative_grace_covers_its_drain_and_the_predictors(overlay: str, rendered: Objects) -> None:
    """In Knative mode the revision timeout is the pod's terminationGracePeriodSeconds."""
    (isvc,) = find(rendered[overlay], "InferenceService", MODEL_NAME)
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"
    container = predictor_container(rendered[overlay])
    drain = float(arg(container, "--drain_seconds"))
    assert "lifecycle" not in container  # Knative injects its own preStop and rejects ours
    assert isvc["spec"]["predictor"]["timeout"] >= KNATIVE_DRAIN_S + drain + MARGIN_S


def test_standard_mode_sets_a_prestop_and_a_grace_that_covers_it(kubectl: str, tmp_path: Path) -> None:
    """components/standard-mode over the base, rendered as an overlay of it would be."""
    from tests.k8s.conftest import kustomize

    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(K8S / "base", tmp_path)],
        "components": [os.path.relpath(K8S / "components" / "standard-mode", tmp_path)],
    }
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    objects = kustomize(kubectl, tmp_path)
    from tests.k8s import schemas

    assert list(schemas.validate_all(objects)) == []
    (isvc,) = find(objects, "InferenceService", MODEL_NAME)
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    container = predictor_container(objects)
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = float(arg(container, "--drain_seconds"))
    grace = isvc["spec"]["predictor"]["terminationGracePeriodSeconds"]
    assert pre_stop >= 5 and grace >= pre_stop + drain + MARGIN_S
