"""The pipeline as code: the checked-in YAML is what the code compiles to, and its shape is the design."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from pipelines.compile import COMPILED

REPO = Path(__file__).resolve().parents[2]
STEPS = (
    "ingest_data",
    "split_data",
    "fit_baselines",
    "embed_items",
    "train_model",
    "evaluate_model",
    "publish_features",
    "deploy_model",
)


def test_the_checked_in_yaml_is_what_the_pipeline_compiles_to(tmp_path: Path) -> None:
    images = ("SCENEREC_IMAGE", "SCENEREC_PREDICTOR_IMAGE")  # the default images are checked in
    env = {k: v for k, v in os.environ.items() if k not in images}
    out = tmp_path / "training_pipeline.yaml"
    subprocess.run(
        [sys.executable, "-m", "pipelines.compile", "--out", str(out)],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert out.read_text() == COMPILED.read_text(), (
        "pipelines/compiled/training_pipeline.yaml is stale: run `python -m pipelines.compile` and commit it"
    )


def spec() -> dict:
    return yaml.safe_load(COMPILED.read_text())


def test_the_parameters_are_the_data_the_config_the_deploy_switch_and_the_warm_start() -> None:
    parameters = spec()["root"]["inputDefinitions"]["parameters"]
    assert parameters == {
        "data": {"parameterType": "STRING"},
        "config": {"defaultValue": "{}", "isOptional": True, "parameterType": "STRING"},
        "deploy": {"defaultValue": False, "isOptional": True, "parameterType": "BOOLEAN"},
        "warm_start": {"defaultValue": "", "isOptional": True, "parameterType": "STRING"},
    }
    train = spec()["root"]["dag"]["tasks"]["train-model"]["inputs"]["parameters"]
    assert train["warm_start"] == {"componentInputParameter": "warm_start"}


def test_one_component_per_step_all_in_one_image() -> None:
    from components.image import IMAGE

    components = {p.stem for p in (REPO / "components").glob("*.py")} - {"__init__", "image"}
    assert components == set(STEPS)
    executors = spec()["deploymentSpec"]["executors"]
    containers = {name: e["container"] for name, e in executors.items() if "container" in e}
    assert set(containers) == {f"exec-{step.replace('_', '-')}" for step in STEPS}
    assert {c["image"] for c in containers.values()} == {IMAGE}
    for container in containers.values():  # kfp comes with the image: nothing is pip-installed at start
        assert "pip install" not in " ".join(container["command"])


def test_the_dag_runs_the_gate_before_anything_ships() -> None:
    tasks = spec()["root"]["dag"]["tasks"]
    upstream = {name: set(task.get("dependentTasks", [])) for name, task in tasks.items()}
    assert upstream["ingest-data"] == {"importer"}
    assert {"ingest-data", "fit-baselines", "embed-items"} <= upstream["train-model"]
    assert {"train-model", "fit-baselines"} <= upstream["evaluate-model"]
    assert "evaluate-model" in upstream["publish-features"]
    assert {"train-model", "publish-features"} <= upstream["deploy-model"]
    for task in ("publish-features", "deploy-model"):  # they change state the cache cannot see
        assert not tasks[task]["cachingOptions"].get("enableCache", False)
    assert tasks["train-model"]["cachingOptions"]["enableCache"] is True
    for name in ("split-data", "fit-baselines", "embed-items", "train-model", "evaluate-model"):
        assert tasks[name]["inputs"]["parameters"]["config"] == {"componentInputParameter": "config"}
    assert set(spec()["root"]["outputDefinitions"]["artifacts"]) == {
        "model",
        "feature_repo",
        "inference_service",
    }
