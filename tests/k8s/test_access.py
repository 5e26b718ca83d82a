"""The properties of the rendered manifests that matter, overlay by overlay (2 of 2: access).

The Feast online store (configs consistent with feature_repo/, Redis reachable only from inside,
no committed password), least-privilege RBAC consistent with scenerec/deploy.py, names and mounts
consistent with what deploy.py renders, non-root workloads, and a predictor pod Knative admits.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from scenerec import deploy
from tests.k8s.conftest import (
    MODEL_NAME,
    OVERLAYS,
    arg,
    find,
    gpu_overlays,
    pod_specs,
    predictor_container,
    shared_state_overlays,
)
from tests.k8s.schemas import ROOT

Objects = dict[str, list[dict[str, Any]]]


# ---- the Feast online store -----------------------------------------------------------------------


def _store_config(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (config_map,) = [
        c for c in find(objects, "ConfigMap") if c["metadata"]["name"].startswith("scenerec-feature-store-")
    ]
    return dict(yaml.safe_load(config_map["data"]["feature_store.yaml"]))


@pytest.mark.parametrize(
    ("overlay", "repo_file"), [("dev", "feature_store.yaml"), ("prod", "feature_store.redis.yaml")]
)
def test_mounted_feast_config_matches_the_repo_but_for_absolute_paths(
    overlay: str, repo_file: str, rendered: Objects
) -> None:
    mounted = _store_config(rendered[overlay])
    repo = yaml.safe_load((ROOT / "feature_repo" / repo_file).read_text())
    published = "/mnt/models/features/"  # where the published feature repo is mounted (deploy.py)
    assert published == deploy.FEATURES_MOUNT + "/"
    assert mounted["registry"]["path"] == published + repo["registry"]["path"]
    if "path" in repo["online_store"]:
        assert mounted["online_store"]["path"] == published + repo["online_store"]["path"]
    for config in (mounted, repo):
        config["registry"].pop("path")
        config["online_store"].pop("path", None)
    assert mounted == repo


def test_mounted_feast_configs_load_with_feast(
    rendered: Objects, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scenerec.features.repo import load_repo_config

    monkeypatch.setenv("SCENEREC_REDIS", "scenerec-redis:6379,password=x")
    for overlay, store in (("dev", "sqlite"), ("prod", "redis")):
        path = tmp_path / overlay / "feature_store.yaml"
        path.parent.mkdir()
        path.write_text(yaml.safe_dump(_store_config(rendered[overlay])))
        assert load_repo_config(path.parent, path).online_store.type == store


def test_predictor_mounts_the_generated_feast_config(rendered: Objects) -> None:
    for overlay in OVERLAYS:
        (isvc,) = find(rendered[overlay], "InferenceService", MODEL_NAME)
        container = predictor_container(rendered[overlay])
        volumes = {v["name"]: v for v in isvc["spec"]["predictor"]["volumes"]}
        (mount,) = [
            m for m in container["volumeMounts"] if m["mountPath"] == arg(container, "--feature_repo")
        ]
        name = volumes[mount["name"]]["configMap"]["name"]
        assert find(rendered[overlay], "ConfigMap", name), f"{overlay}: {name} (hash suffix) not rendered"


def test_redis_is_private_and_its_password_never_committed(rendered: Objects) -> None:
    objects = rendered["prod"]
    assert not find(objects, "Ingress") and not find(objects, "Route")
    for service in find(objects, "Service"):
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP" and not service["spec"].get(
            "externalIPs"
        )
    (policy,) = find(objects, "NetworkPolicy", "scenerec-redis")
    (redis,) = find(objects, "StatefulSet", "scenerec-redis")
    assert policy["spec"]["podSelector"]["matchLabels"] == redis["spec"]["selector"]["matchLabels"]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert [p["port"] for p in rule["ports"]] == [6379]
    assert {"serving.kserve.io/inferenceservice": MODEL_NAME} in [
        f["podSelector"]["matchLabels"] for f in rule["from"]
    ]
    assert all("namespaceSelector" not in f and "ipBlock" not in f for f in rule["from"])
    assert not find(objects, "Secret"), "the Redis password Secret is created out of band"
    env = predictor_container(objects)["env"]
    names = [e["name"] for e in env]
    assert names.index("REDIS_PASSWORD") < names.index("SCENEREC_REDIS")
    assert "$(REDIS_PASSWORD)" in env[names.index("SCENEREC_REDIS")]["value"]
    assert env[names.index("REDIS_PASSWORD")]["valueFrom"]["secretKeyRef"]["name"] == "scenerec-redis"


# ---- RBAC and identity -----------------------------------------------------------------------------

# What each kubernetes-client call of scenerec/deploy.py needs.
_VERBS = {
    "create": "create",
    "get": "get",
    "replace": "update",
    "patch": "patch",
    "delete": "delete",
    "list": "list",
}


def test_deployer_role_allows_exactly_what_deploy_py_calls(rendered: Objects) -> None:
    source = Path(deploy.__file__).read_text()
    calls = set(re.findall(r"\.(create|get|replace|patch|delete|list)_namespaced_custom_object\(", source))
    needed = {_VERBS[c] for c in calls}
    assert needed, "scenerec/deploy.py makes no InferenceService call any more?"
    for overlay in OVERLAYS:
        objects = rendered[overlay]
        assert not find(objects, "ClusterRole") and not find(objects, "ClusterRoleBinding")
        (role,) = find(objects, "Role", "scenerec-deployer")
        granted = set()
        for rule in role["rules"]:
            assert rule["apiGroups"] == [deploy.GROUP] and rule["resources"] == [deploy.PLURAL], rule
            if set(rule["verbs"]) - {"create"}:
                assert rule.get("resourceNames") == [MODEL_NAME], (
                    f"{overlay}: {rule} is not limited to the name"
                )
            granted |= set(rule["verbs"])
        assert granted == needed, (
            f"{overlay}: the Role grants {sorted(granted)}, deploy.py needs {sorted(needed)}"
        )
        (binding,) = find(objects, "RoleBinding", "scenerec-deployer")
        (subject,) = binding["subjects"]
        assert (
            find(objects, "ServiceAccount", subject["name"])
            and subject["namespace"] == role["metadata"]["namespace"]
        )


def test_names_and_layout_match_what_deploy_py_renders(rendered: Objects) -> None:
    manifest = {"model_name": MODEL_NAME, "model_version": "v1"}
    ours = deploy.render_inference_service(manifest, "s3://b/model", "s3://b/features", "image")
    their_container = ours["spec"]["predictor"]["containers"][0]
    for overlay in OVERLAYS:
        (isvc,) = find(rendered[overlay], "InferenceService")
        container = predictor_container(rendered[overlay])
        assert isvc["metadata"]["name"] == ours["metadata"]["name"] == arg(container, "--model_name")
        assert container["name"] == their_container["name"]
        mounts = [u["mountPath"] for u in isvc["spec"]["predictor"]["storageUris"]]
        assert mounts == [u["mountPath"] for u in ours["spec"]["predictor"]["storageUris"]]
        assert arg(container, "--model_dir") == arg(their_container, "--model_dir") == deploy.MODEL_MOUNT
        assert int(arg(container, "--http_port")) == deploy.HTTP_PORT
        assert container["readinessProbe"]["httpGet"] == their_container["readinessProbe"]["httpGet"]


@pytest.mark.parametrize("name", [*OVERLAYS, "training"])
def test_workloads_run_as_non_root_without_privileges(name: str, rendered: Objects) -> None:
    for obj in rendered[name]:
        for spec in pod_specs(obj):
            for container in spec["containers"]:
                # The container's securityContext overrides the pod's, field by field.
                security = {**spec.get("securityContext", {}), **container.get("securityContext", {})}
                assert security.get("runAsNonRoot") is True and security.get("runAsUser", 0) > 0, obj[
                    "metadata"
                ]
                assert security["allowPrivilegeEscalation"] is False
                assert security["capabilities"]["drop"] == ["ALL"]
                assert security["seccompProfile"] == {"type": "RuntimeDefault"}


# Pod fields Knative Serving admits with its default features (config-features), besides KServe's own.
_KNATIVE_POD_FIELDS = {"containers", "volumes", "serviceAccountName", "imagePullSecrets"}
_KSERVE_FIELDS = {"minReplicas", "maxReplicas", "scaleMetric", "scaleTarget", "storageUris", "timeout"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_predictor_pod_uses_only_what_knative_admits(overlay: str, rendered: Objects) -> None:
    """Knative's webhook rejects pod fields behind disabled features; the offline schemas cannot tell."""
    (isvc,) = find(rendered[overlay], "InferenceService", MODEL_NAME)
    predictor = isvc["spec"]["predictor"]
    extra = set(predictor) - _KNATIVE_POD_FIELDS - _KSERVE_FIELDS
    # Tolerations need kubernetes.podspec-tolerations (k8s/README.md), asked for by GPU overlays only.
    allowed = {"tolerations"} if overlay in gpu_overlays() else set()
    assert extra <= allowed, f"{overlay}: {sorted(extra - allowed)} need a Knative feature flag"
    # A PVC needs kubernetes.podspec-persistent-volume-claim (+ -write), asked for by shared-state only.
    kinds = {"configMap", "secret", "emptyDir", "projected"}
    kinds |= {"persistentVolumeClaim"} if overlay in shared_state_overlays() else set()
    for volume in predictor["volumes"]:
        assert set(volume) - {"name"} <= kinds, volume
    (container,) = predictor["containers"]
    assert len(container["ports"]) == 1 and container["ports"][0]["name"] in ("http1", "h2c")
