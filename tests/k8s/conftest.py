"""Fixtures of the Kubernetes tests: every kustomization rendered once, and a running predictor.

Rendering needs `kubectl` (v1.27 or newer bundles kustomize v5): without it these tests fail under
CI=true and skip elsewhere. The predictor fixture (integration) trains a small model, publishes its
features the way the pipeline's publish step does, lays the files out as the InferenceService
mounts them, and starts the image's ENTRYPOINT with the InferenceService's own arguments.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.k8s.schemas import ROOT, load_yaml_documents

K8S = ROOT / "k8s"
# Every kustomization that is applied on its own (components are only built inside overlays).
KUSTOMIZATIONS = {
    "base": K8S / "base",
    **{path.parent.name: path.parent for path in sorted((K8S / "overlays").glob("*/kustomization.yaml"))},
    "training": K8S / "training",
}
OVERLAYS = [name for name in KUSTOMIZATIONS if (K8S / "overlays" / name).is_dir()]
MODEL_NAME = "scenerec"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        message = (
            "kubectl is not installed: tests/k8s render every overlay with `kubectl kustomize` "
            "(kubectl v1.27+ bundles kustomize v5); install kubectl (see k8s/README.md, Tests)"
        )
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return path


def kustomize(kubectl: str, directory: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize DIRECTORY`, parsed; a build error fails with kustomize's own message."""
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {directory} failed:\n{result.stderr.strip()}")
    return load_yaml_documents(result.stdout)


@pytest.fixture(scope="session")
def rendered(kubectl: str) -> dict[str, list[dict[str, Any]]]:
    """Every kustomization of KUSTOMIZATIONS, rendered once per session."""
    return {name: kustomize(kubectl, path) for name, path in KUSTOMIZATIONS.items()}


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    """The objects of one kind (and name)."""
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def predictor_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (isvc,) = find(objects, "InferenceService", MODEL_NAME)
    (container,) = [c for c in isvc["spec"]["predictor"]["containers"] if c["name"] == "kserve-container"]
    return container


def dockerfile_entrypoint(path: Path) -> list[str]:
    """The exec-form ENTRYPOINT of a Dockerfile (the last one wins, as in Docker)."""
    import json

    found = re.findall(r"^ENTRYPOINT\s+(\[.*\])\s*$", path.read_text(), flags=re.MULTILINE)
    assert found, f"{path}: no exec-form ENTRYPOINT"
    return list(json.loads(found[-1]))


def overlay_kustomization(overlay: str) -> dict[str, Any]:
    return yaml.safe_load((K8S / "overlays" / overlay / "kustomization.yaml").read_text())


def gpu_overlays() -> list[str]:
    return [
        o
        for o in OVERLAYS
        if any(c.endswith("components/gpu") for c in overlay_kustomization(o).get("components", []))
    ]


def shared_state_overlays() -> list[str]:
    return [
        o
        for o in OVERLAYS
        if any(c.endswith("components/shared-state") for c in overlay_kustomization(o).get("components", []))
    ]


def arg(container: dict[str, Any], flag: str) -> str:
    args = container["args"]
    return str(args[args.index(flag) + 1])


def pod_specs(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod specs of a workload (InferenceService predictor, PyTorchJob roles, StatefulSet...)."""
    if obj["kind"] == "InferenceService":
        return [obj["spec"]["predictor"]]
    if obj["kind"] == "PyTorchJob":
        return [role["template"]["spec"] for role in obj["spec"]["pytorchReplicaSpecs"].values()]
    template = obj.get("spec", {}).get("template", {})
    return [template["spec"]] if "spec" in template else []


def container_images(objects: list[dict[str, Any]]) -> list[str]:
    return [
        c["image"]
        for obj in objects
        for spec in pod_specs(obj)
        for c in spec.get("containers", []) + spec.get("initContainers", [])
    ]


# ---- a running predictor (integration) -------------------------------------------------------------


@dataclass(frozen=True)
class RunningPredictor:
    url: str
    command: list[str]
    data: Path
    log: Path

    def get(self, path: str, timeout: float = 10.0) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def post(self, path: str, body: bytes, timeout: float = 30.0) -> tuple[int, str]:
        request = urllib.request.Request(
            self.url + path, data=body, headers={"content-type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _run(command: list[str], what: str, env: dict[str, str] | None = None, timeout: float = 900) -> None:
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, check=False, cwd=ROOT, env=env
    )
    assert result.returncode == 0, f"{what} failed ({' '.join(command)}):\n{result.stderr[-4000:]}"


def _mounted_args(args: list[str], mounts: dict[str, Path], ports: dict[str, int]) -> list[str]:
    """The InferenceService's arguments with its mount paths and ports mapped onto this machine."""
    out = []
    for n, arg in enumerate(args):
        flag = args[n - 1] if n else ""
        if flag in ("--http_port", "--grpc_port"):
            arg = str(ports[flag])
        for mount, local in mounts.items():
            if arg == mount or arg.startswith(mount + "/"):
                arg = str(local) + arg[len(mount) :]
        out.append(arg)
    return out


@pytest.fixture(scope="session")
def predictor(
    rendered: dict[str, list[dict[str, Any]]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningPredictor]:
    """`python -m serving` as the dev overlay's InferenceService starts it, on a small model."""
    root = tmp_path_factory.mktemp("k8s-predictor")
    data, model, published = root / "data", root / "model", root / "mnt-models-features"
    cli = [sys.executable, "-m", "scenerec.cli"]
    _run([*cli, "data", "synth", "--out", str(data), "--users", "300", "--items", "200"], "data synth")
    train_settings = [
        "train.epochs=1",
        "train.ablations=[]",
        "train.cold_start_eval=false",
        "model.dim=16",
        "baselines.names=[popularity]",
    ]
    train = [*cli, "train", "--data", str(data), "--out", str(model), "--cache", str(root / "cache")]
    _run([*train, *[a for s in train_settings for a in ("--set", s)]], "scenerec train")
    # The published feature repo, as the pipeline's publish step writes it (SQLite inside it).
    publish = "import sys; from scenerec import steps; steps.publish_features(*sys.argv[1:])"
    env = {k: v for k, v in os.environ.items() if k not in ("SCENEREC_ONLINE_STORE", "SCENEREC_FEATURE_REPO")}
    _run([sys.executable, "-c", publish, str(data), str(model), str(published)], "publish_features", env)

    # /etc/scenerec/feature_repo: the dev ConfigMap's feature_store.yaml, its absolute paths moved.
    objects = rendered["dev"]
    (store_config,) = [
        c for c in find(objects, "ConfigMap") if c["metadata"]["name"].startswith("scenerec-feature-store")
    ]
    config_dir = root / "etc-scenerec-feature-repo"
    config_dir.mkdir()
    (config_dir / "feature_store.yaml").write_text(
        store_config["data"]["feature_store.yaml"].replace("/mnt/models/features", str(published))
    )
    container = predictor_container(objects)
    assert "command" not in container, "the InferenceService must run the image's ENTRYPOINT"
    entrypoint = dockerfile_entrypoint(ROOT / "serving" / "Dockerfile")
    ports = {"--http_port": _free_port(), "--grpc_port": _free_port()}
    mounts = {
        "/mnt/models/model": model,
        "/mnt/models/features": published,
        "/etc/scenerec/feature_repo": config_dir,
    }
    # The image's `python` is this interpreter; the rest of the command is the image's and the ISVC's.
    command = [sys.executable, *entrypoint[1:], *_mounted_args(container["args"], mounts, ports)]
    log = root / "predictor.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            command, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, env={**env, "PYTHONPATH": str(ROOT)}
        )
    running = RunningPredictor(f"http://127.0.0.1:{ports['--http_port']}", command, data, log)
    try:
        _wait_ready(running, process, timeout=300)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _wait_ready(running: RunningPredictor, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"the predictor exited with {process.returncode} before it was ready:\n"
                f"{' '.join(running.command)}\n{running.log.read_text()[-4000:]}"
            )
        try:
            if running.get("/v2/health/ready", timeout=2)[0] == 200:
                return
        except OSError:
            pass  # not listening yet: load() runs before the server starts
        time.sleep(0.5)
    log = running.log.read_text()[-4000:]
    raise AssertionError(f"the predictor was not ready after {timeout:g} s:\n{log}")
