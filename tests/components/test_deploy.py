"""The InferenceService rendering, and applying it refusing clearly where there is no cluster."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from scenerec.deploy import (
    DeployError,
    apply_inference_service,
    is_remote,
    release_onto,
    render_inference_service,
    storage_uri,
    write_inference_service,
)

MANIFEST = {"model_name": "scenerec", "model_version": "20261124-010203-abcd1234"}


def render(model: str = "gs://bucket/run/model", features: str = "gs://bucket/run/features") -> dict:
    return render_inference_service(MANIFEST, model, features, "registry.example/scenerec:1", "team-a")


def test_the_service_serves_the_model_directory_with_its_feature_repo() -> None:
    isvc = render("minio://mlpipeline/v2/artifacts/model", "s3://bucket/features")
    assert (isvc["apiVersion"], isvc["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    assert isvc["metadata"]["name"] == "scenerec" and isvc["metadata"]["namespace"] == "team-a"
    assert isvc["metadata"]["annotations"]["scenerec/model-version"] == MANIFEST["model_version"]
    predictor = isvc["spec"]["predictor"]
    assert predictor["storageUris"] == [
        {"uri": "s3://mlpipeline/v2/artifacts/model", "mountPath": "/mnt/models/model"},
        {"uri": "s3://bucket/features", "mountPath": "/mnt/models/features"},
    ]
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container" and container["image"] == "registry.example/scenerec:1"
    assert "command" not in container  # the predictor image's ENTRYPOINT is `python -m serving`
    args = container["args"]
    assert args[args.index("--model_dir") + 1] == "/mnt/models/model"
    assert args[args.index("--feature_repo") + 1] == "/mnt/models/features"
    assert args[args.index("--model_name") + 1] == "scenerec"


def test_without_a_namespace_the_applier_chooses(tmp_path: Path) -> None:
    isvc = render_inference_service(MANIFEST, "gs://b/m", "gs://b/f", "img")
    assert "namespace" not in isvc["metadata"]
    path = write_inference_service(isvc, tmp_path / "isvc.yaml")
    assert yaml.safe_load(path.read_text()) == isvc


@pytest.mark.parametrize(
    ("uri", "expected"),
    [("minio://b/k", "s3://b/k"), ("gs://b/k", "gs://b/k"), ("/tmp/model", "/tmp/model")],
)
def test_storage_uris(uri: str, expected: str) -> None:
    assert storage_uri(uri) == expected


def test_only_what_a_cluster_can_fetch_is_remote() -> None:
    assert is_remote("gs://b/k") and is_remote("s3://b/k") and is_remote("pvc://claim/model")
    assert not is_remote("/tmp/model") and not is_remote("file:///tmp/model")


@pytest.fixture
def no_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside any pod, with no kubeconfig anywhere."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))


@pytest.mark.usefixtures("no_cluster")
def test_applying_without_a_cluster_refuses_clearly() -> None:
    with pytest.raises(DeployError, match="no Kubernetes cluster is configured here") as error:
        apply_inference_service(render())
    assert "without deploy the InferenceService is only rendered" in str(error.value)


def kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "ns"}}],
                "current-context": "x",
            }
        )
    )
    return path


@pytest.mark.usefixtures("no_cluster")
def test_a_cluster_that_does_not_answer_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "config", f"http://127.0.0.1:{port}")))
    with pytest.raises(DeployError, match=r"cannot reach the Kubernetes API \(kubeconfig, timeout 2 s\)"):
        apply_inference_service(render(), timeout=2.0)


@pytest.mark.usefixtures("no_cluster")
def test_a_local_model_directory_is_never_applied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "config", "http://127.0.0.1:9")))
    with pytest.raises(DeployError, match="'/tmp/run/model' is a local path, which a cluster cannot pull"):
        apply_inference_service(render("/tmp/run/model"))


def test_a_release_onto_an_existing_service_changes_only_the_model() -> None:
    current = render("gs://old/model", "gs://old/features")
    current["metadata"]["resourceVersion"] = "41"
    current["spec"]["predictor"]["minReplicas"] = 2
    current["spec"]["predictor"]["containers"][0]["image"] = "pinned-by-k8s:7"
    rendered = render_inference_service(
        {**MANIFEST, "model_version": "v2"}, "gs://new/model", "gs://new/features", "other", "team-a"
    )
    updated = release_onto(current, rendered)
    assert updated["spec"]["predictor"]["storageUris"] == rendered["spec"]["predictor"]["storageUris"]
    assert updated["metadata"]["annotations"]["scenerec/model-version"] == "v2"
    assert updated["metadata"]["resourceVersion"] == "41" and updated["spec"]["predictor"]["minReplicas"] == 2
    assert updated["spec"]["predictor"]["containers"][0]["image"] == "pinned-by-k8s:7"
    assert current["spec"]["predictor"]["storageUris"][0]["uri"] == "gs://old/model"  # not mutated


class FakeApi:
    """The three CustomObjectsApi calls the applier makes, over one in-memory object."""

    stored: dict[str, Any] | None = None

    def create_namespaced_custom_object(self, *args: Any, **kw: Any) -> None:
        from kubernetes.client.exceptions import ApiException

        (group, _version, _namespace, plural, body) = args
        assert kw["_request_timeout"] and (group, plural) == ("serving.kserve.io", "inferenceservices")
        if FakeApi.stored is not None:
            raise ApiException(status=409, reason="AlreadyExists")
        FakeApi.stored = {**body, "metadata": {**body["metadata"], "resourceVersion": "1"}}

    def get_namespaced_custom_object(self, *args: Any, **kw: Any) -> dict[str, Any] | None:
        return FakeApi.stored

    def replace_namespaced_custom_object(self, *args: Any, **kw: Any) -> None:
        body = args[-1]
        assert (
            FakeApi.stored
            and body["metadata"]["resourceVersion"] == FakeApi.stored["metadata"]["resourceVersion"]
        )
        FakeApi.stored = body


@pytest.mark.usefixtures("no_cluster")
def test_apply_creates_then_updates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kubernetes import client

    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "config", "http://127.0.0.1:9")))
    monkeypatch.setattr(client, "CustomObjectsApi", FakeApi)
    FakeApi.stored = None
    isvc = render_inference_service(MANIFEST, "gs://b/m1", "gs://b/f1", "img")  # no namespace: the context's
    assert apply_inference_service(isvc) == "created ns/scenerec"
    again = render_inference_service({**MANIFEST, "model_version": "v2"}, "gs://b/m2", "gs://b/f2", "img")
    assert apply_inference_service(again) == "updated ns/scenerec to model v2"
    assert FakeApi.stored is not None
    assert FakeApi.stored["spec"]["predictor"]["storageUris"][0]["uri"] == "gs://b/m2"
