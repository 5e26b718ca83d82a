"""Deploying a model directory: the KServe InferenceService that serves it, and applying it.

`render_inference_service` is pure: manifest + storage URIs in, the InferenceService as a dict out.
The predictor is scenerec's own image (serving/Dockerfile, ENTRYPOINT `python -m serving`); KServe's
storage initializer downloads the model directory and the published feature repo into the pod
(`storageUris`, one mount each), so serving reads nothing else from training.

`apply_inference_service` talks to a cluster only when asked: it uses the pod's service account
inside Kubernetes, else the kubeconfig, and refuses with one clear line when neither exists or the
API server does not answer. A model in a local directory cannot be pulled by a cluster, so applying
one is refused too. A new service is created as rendered; an existing one (e.g. from k8s/, which
owns resources, probes and scaling) only gets what a release changes: the storage URIs and the
model-version annotation (`release_onto`). That needs create, get and update, nothing more
(k8s/base/rbac/deployer.yaml).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from scenerec.data.io import write_text
from scenerec.errors import ScenerecError

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
MODEL_MOUNT = "/mnt/models/model"
FEATURES_MOUNT = "/mnt/models/features"
HTTP_PORT = 8080
VERSION_ANNOTATION = "scenerec/model-version"
# URI schemes KServe's storage initializer can fetch from (a local path is not among them).
REMOTE_SCHEMES = frozenset({"gs", "s3", "pvc", "hdfs", "webhdfs", "http", "https", "hf", "oci"})
_SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class DeployError(ScenerecError):
    """The InferenceService cannot be applied: no cluster, no answer, or a location it cannot pull."""


def storage_uri(artifact_uri: str) -> str:
    """The KServe storage URI of a pipeline artifact (KFP's default MinIO store speaks S3)."""
    if artifact_uri.startswith("minio://"):
        return "s3://" + artifact_uri.removeprefix("minio://")
    return artifact_uri


def is_remote(uri: str) -> bool:
    """Whether a cluster could fetch `uri` (object storage, a PVC, HTTP), unlike a local path."""
    return urlparse(uri).scheme in REMOTE_SCHEMES


def render_inference_service(
    manifest: dict[str, Any],
    model_uri: str,
    features_uri: str,
    image: str,
    namespace: str | None = None,
) -> dict[str, Any]:
    """The InferenceService serving the model `manifest` describes.

    Args:
        manifest: The model directory's manifest.json (name and version are read from it).
        model_uri: Where the model directory is stored (becomes a storage URI; minio:// -> s3://).
        features_uri: Where the published Feast repo is stored.
        image: The predictor image (its ENTRYPOINT is `python -m serving`).
        namespace: Target namespace; None leaves it to the applier.
    """
    name = str(manifest["model_name"])
    metadata: dict[str, Any] = {
        "name": name,
        "labels": {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "scenerec"},
        "annotations": {VERSION_ANNOTATION: str(manifest["model_version"])},
    }
    if namespace:
        metadata["namespace"] = namespace
    args = ["--model_name", name, "--model_dir", MODEL_MOUNT, "--feature_repo", FEATURES_MOUNT]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceService",
        "metadata": metadata,
        "spec": {
            "predictor": {
                "storageUris": [
                    {"uri": storage_uri(model_uri), "mountPath": MODEL_MOUNT},
                    {"uri": storage_uri(features_uri), "mountPath": FEATURES_MOUNT},
                ],
                "containers": [
                    {
                        "name": "kserve-container",
                        "image": image,
                        "args": [*args, "--http_port", str(HTTP_PORT)],
                        "ports": [{"containerPort": HTTP_PORT, "protocol": "TCP"}],
                        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": HTTP_PORT}},
                    }
                ],
            }
        },
    }


def write_inference_service(isvc: dict[str, Any], path: Path) -> Path:
    """Write the InferenceService as YAML (what `kubectl apply -f` takes)."""
    write_text(yaml.safe_dump(isvc, sort_keys=False), Path(path))
    return Path(path)


def release_onto(current: dict[str, Any], rendered: dict[str, Any]) -> dict[str, Any]:
    """`current` (as read from the cluster) with the release fields of `rendered`: storage URIs and
    the model-version annotation. Everything else (image, resources, probes, scaling) is kept."""
    updated = copy.deepcopy(current)
    updated["spec"]["predictor"]["storageUris"] = copy.deepcopy(rendered["spec"]["predictor"]["storageUris"])
    annotations = updated["metadata"].setdefault("annotations", {})
    annotations[VERSION_ANNOTATION] = rendered["metadata"]["annotations"][VERSION_ANNOTATION]
    return updated


def apply_inference_service(isvc: dict[str, Any], timeout: float = 30.0) -> str:
    """Create `isvc`, or release its model onto the existing one; returns what was done.

    Raises:
        DeployError: No cluster is configured, the API server does not answer or refuses, or the
            storage URIs are local paths a cluster cannot pull.
    """
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    where = _load_cluster_config()
    predictor = isvc["spec"]["predictor"]
    local = [entry["uri"] for entry in predictor["storageUris"] if not is_remote(entry["uri"])]
    if local:
        raise DeployError(
            f"cannot deploy: storage URI {local[0]!r} is a local path, which a cluster cannot pull "
            f"(expected one of {', '.join(sorted(REMOTE_SCHEMES))}://); run the pipeline on Kubeflow, "
            "where artifacts live in object storage"
        )
    body = copy.deepcopy(isvc)
    namespace = body["metadata"].setdefault("namespace", _current_namespace(where))
    name = body["metadata"]["name"]
    api = client.CustomObjectsApi()
    try:
        try:
            api.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, body, _request_timeout=timeout
            )
            return f"created {namespace}/{name}"
        except ApiException as e:
            if e.status != 409:  # 409: it exists; update it at the version just read
                raise
        current = api.get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, _request_timeout=timeout
        )
        api.replace_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, release_onto(current, body), _request_timeout=timeout
        )
        return f"updated {namespace}/{name} to model {body['metadata']['annotations'][VERSION_ANNOTATION]}"
    except ApiException as e:
        raise DeployError(
            f"the Kubernetes API ({where}) refused InferenceService {namespace}/{name}: "
            f"{e.status} {e.reason} (is KServe installed, may this account create inferenceservices?)"
        ) from e
    except (HTTPError, OSError) as e:
        raise DeployError(f"cannot reach the Kubernetes API ({where}, timeout {timeout:g} s): {e}") from e


def _load_cluster_config() -> str:
    """Configure the kubernetes client; which credentials were found, or `DeployError`."""
    from kubernetes import config
    from kubernetes.config.config_exception import ConfigException

    try:
        config.load_incluster_config()
        return "in-cluster service account"
    except ConfigException:
        pass
    try:  # read $KUBECONFIG now: the client's own default was fixed when it was first imported
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or "~/.kube/config")
    except (ConfigException, OSError) as e:
        raise DeployError(
            "cannot deploy: no Kubernetes cluster is configured here (not inside a pod with a service "
            f"account, and no usable kubeconfig at $KUBECONFIG or ~/.kube/config: {e}); without deploy "
            "the InferenceService is only rendered"
        ) from e
    return "kubeconfig"


def _current_namespace(where: str) -> str:
    """The pod's own namespace in a cluster, else the kubeconfig context's, else "default"."""
    if where.startswith("in-cluster") and _SERVICE_ACCOUNT_NAMESPACE.is_file():
        return _SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    from kubernetes import config

    _, active = config.list_kube_config_contexts(os.environ.get("KUBECONFIG") or "~/.kube/config")
    return str(active.get("context", {}).get("namespace") or "default")


# ---- Distributed training: the PyTorchJob of k8s/training ------------------------------------------
# Appended with the Kubernetes manifests (k8s/): a pure render, for a pipeline step that launches
# `scenerec train` on several pods. tests/k8s checks that with its defaults it equals the job that
# `kubectl kustomize k8s/training` renders, so the two cannot drift apart.

TRAINING_GROUP, TRAINING_VERSION, TRAINING_PLURAL = "kubeflow.org", "v1", "pytorchjobs"
TRAINING_CLAIM = "scenerec-training"  # a ReadWriteMany PersistentVolumeClaim (k8s/training)
TRAINING_MOUNT = "/workspace"
# torchrun's rendezvous from the variables the Training Operator sets on every pod.
_TORCHRUN = [
    "--nnodes=$(PET_NNODES)",
    "--nproc-per-node=$(PET_NPROC_PER_NODE)",
    "--node-rank=$(PET_NODE_RANK)",
    "--master-addr=$(PET_MASTER_ADDR)",
    "--master-port=$(PET_MASTER_PORT)",
]


def render_pytorchjob(
    image: str,
    data: str,
    out: str,
    name: str = "scenerec-train",
    workers: int = 3,
    cpu: str = "4",
    memory: str = "16Gi",
    overrides: tuple[str, ...] = (),
    claim: str = TRAINING_CLAIM,
    namespace: str | None = None,
) -> dict[str, Any]:
    """The PyTorchJob running `torchrun -m scenerec.cli train` on a master and `workers` workers.

    One process per pod (CPU, DistributedDataParallel); rank 0 writes the model directory.

    Args:
        image: The components image (components/Dockerfile: scenerec, torch, torchrun).
        data: The dataset directory, a path on the shared volume (under /workspace).
        out: The model directory to write, on the shared volume.
        name: The job's name (one per run).
        workers: Worker pods besides the master; the world size is `workers + 1`.
        cpu: CPU per pod (a Kubernetes quantity); OMP_NUM_THREADS follows it.
        memory: Memory per pod (request and limit).
        overrides: `key=value` configuration overrides, passed as `--set` to `scenerec train`.
        claim: The PersistentVolumeClaim mounted at /workspace.
        namespace: Target namespace; None leaves it to the applier.

    Raises:
        DeployError: `data` or `out` is not on the shared volume, or `workers` is negative.
    """
    for flag, path in (("data", data), ("out", out)):
        if not path.startswith(TRAINING_MOUNT + "/"):
            raise DeployError(f"{flag}: {path!r} is not on the shared volume (expected {TRAINING_MOUNT}/...)")
    if workers < 0:
        raise DeployError(f"workers: expected 0 or more, got {workers}")
    threads = max(1, int(cpu[:-1]) // 1000 if cpu.endswith("m") else int(float(cpu)))
    train = ["-m", "scenerec.cli", "train", "--data", data, "--out", out, "--cache", "/cache/scenerec"]
    train += [arg for item in overrides for arg in ("--set", item)]
    container = {
        "name": "pytorch",  # the Training Operator looks for this container name
        "image": image,
        "command": ["torchrun"],
        "args": [*_TORCHRUN, *train],
        "env": [{"name": "HOME", "value": "/tmp"}, {"name": "OMP_NUM_THREADS", "value": str(threads)}],
        "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": memory}},
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [
            {"name": "workspace", "mountPath": TRAINING_MOUNT},
            {"name": "cache", "mountPath": "/cache"},
            {"name": "dshm", "mountPath": "/dev/shm"},
        ],
    }
    pod = {
        "metadata": {"annotations": {"sidecar.istio.io/inject": "false"}},
        "spec": {
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "runAsGroup": 10001,
                "fsGroup": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [container],
            "volumes": [
                {"name": "workspace", "persistentVolumeClaim": {"claimName": claim}},
                {"name": "cache", "emptyDir": {}},
                {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}},
            ],
        },
    }
    replicas = {"Master": 1, "Worker": workers} if workers else {"Master": 1}
    metadata: dict[str, Any] = {
        "name": name,
        "labels": {
            "app.kubernetes.io/name": "scenerec-train",
            "app.kubernetes.io/component": "training",
            "app.kubernetes.io/part-of": "scenerec",
        },
    }
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": f"{TRAINING_GROUP}/{TRAINING_VERSION}",
        "kind": "PyTorchJob",
        "metadata": metadata,
        "spec": {
            "nprocPerNode": "1",
            "runPolicy": {"cleanPodPolicy": "Running", "backoffLimit": 2, "ttlSecondsAfterFinished": 86400},
            "pytorchReplicaSpecs": {
                role: {"replicas": count, "restartPolicy": "OnFailure", "template": copy.deepcopy(pod)}
                for role, count in replicas.items()
            },
        },
    }
