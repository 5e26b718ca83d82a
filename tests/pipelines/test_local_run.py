"""`scenerec pipeline run` end to end: the real pipeline under kfp.local on tiny synthetic data.

One full run (gate opened: 2 epochs on 300 users cannot beat EASE, and this run is about the
wiring), a rerun that must come from kfp's cache, and a run whose model is forced to lose at the gate.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scenerec.artifact import GRAPHS, read_manifest
from scenerec.data.synthetic import SyntheticSpec, write_synthetic

pytestmark = pytest.mark.integration

TINY = SyntheticSpec(users=300, items=150, scenes=3, seed=5, mean_events=15, max_events=60)
FAST = [
    "train.epochs=2",
    "train.ablations=[]",
    "train.cold_start_eval=false",
    "baselines.names=[popularity, ease]",
    "model.dim=16",
]
STEP_ROW = re.compile(r"│ ([\w-]+)\s+│ (ran|cached|failed)\s+│\s+([\d.]+) │")


def run(data: Path, root: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    sets = [arg for value in [*FAST, *overrides] for arg in ("--set", value)]
    command = [sys.executable, "-m", "scenerec.cli", "pipeline", "run", "--data", str(data)]
    return subprocess.run(
        [*command, "--pipeline-root", str(root), *sets], capture_output=True, text=True, timeout=600
    )


def steps(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    return {m[1]: m[2] for m in STEP_ROW.finditer(result.stdout)}


def printed(result: subprocess.CompletedProcess[str], label: str) -> Path:
    match = re.search(rf"^{label}:\s+(\S+)$", result.stdout, re.MULTILINE)
    assert match, f"no '{label}' line in:\n{result.stdout[-2000:]}"
    return Path(match[1])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pipeline") / "data"
    write_synthetic(out, TINY)
    return out


@pytest.fixture(scope="module")
def root(tiny: Path) -> Path:
    return tiny.parent / "pipeline_root"


@pytest.fixture(scope="module")
def first(tiny: Path, root: Path) -> subprocess.CompletedProcess[str]:
    result = run(tiny, root, "pipeline.gate_margin=-1.0")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]
    return result


def test_every_step_runs_and_is_timed(first: subprocess.CompletedProcess[str]) -> None:
    assert steps(first) == {
        name: "ran"
        for name in (
            "importer", "ingest-data", "split-data", "fit-baselines", "embed-items", "train-model",
            "evaluate-model", "publish-features", "deploy-model",
        )
    }  # fmt: skip
    assert "total (wall)" in first.stdout


def test_the_model_directory_is_complete(first: subprocess.CompletedProcess[str]) -> None:
    model = printed(first, "model directory")
    manifest = read_manifest(model)  # every file's sha256 checked
    assert all((model / f"{graph}.onnx").is_file() for graph in GRAPHS)
    assert manifest["config"]["model"]["dim"] == 16 and manifest["config"]["pipeline"]["gate_margin"] == -1.0
    metrics = json.loads((model / "metrics.json").read_text())
    assert metrics["model"]["scored_with"] == "onnxruntime" and set(metrics["baselines"]) == {
        "popularity",
        "ease",
    }
    parity = json.loads((model / "parity.json").read_text())["graphs"]
    assert set(parity) == set(GRAPHS) and max(p["max_abs_error"] for p in parity.values()) <= 1e-4


def test_metrics_reports_and_the_gate_are_artifacts(first: subprocess.CompletedProcess[str]) -> None:
    run_dir = printed(first, "model directory").parents[1]
    baselines = json.loads((run_dir / "fit-baselines" / "metrics").read_text())
    assert {"ease.ndcg@10", "popularity.ndcg@10"} <= set(baselines)
    trained = json.loads((run_dir / "train-model" / "metrics").read_text())
    assert 0.0 <= trained["ndcg@10"] <= 1.0 and trained["parity.text_encoder"] <= 1e-4
    assert (run_dir / "train-model" / "report").read_text().lstrip().startswith("<")
    assert "## Release gate: passed" in (run_dir / "evaluate-model" / "summary").read_text()
    outputs = json.loads((run_dir / "evaluate-model" / "executor_output.json").read_text())
    assert "gate.required" in outputs["artifacts"]["metrics"]["artifacts"][0]["metadata"]


def test_the_online_store_is_populated(first: subprocess.CompletedProcess[str], tiny: Path) -> None:
    import pandas as pd

    from scenerec.features.client import FeatureClient

    manifest = read_manifest(printed(first, "model directory"))
    client = FeatureClient.from_repo(printed(first, "feature repo"), manifest)
    user = str(pd.read_parquet(tiny / "interactions.parquet")["user_id"].iloc[0])
    features = client.read(user, manifest["vocab"]["scenes"][-1])
    assert not features.missing and features.values
    items = client.read_items(
        json.loads((printed(first, "model directory") / "id_maps/items.json").read_text())
    )
    assert not any(items.missing.values())


def test_the_inference_service_points_at_the_artifacts(first: subprocess.CompletedProcess[str]) -> None:
    isvc = yaml.safe_load(printed(first, "InferenceService").read_text())
    uris = [entry["uri"] for entry in isvc["spec"]["predictor"]["storageUris"]]
    assert uris == [str(printed(first, "model directory")), str(printed(first, "feature repo"))]


def test_a_rerun_comes_from_the_cache(
    first: subprocess.CompletedProcess[str], tiny: Path, root: Path
) -> None:
    again = run(tiny, root, "pipeline.gate_margin=-1.0")
    assert again.returncode == 0, again.stderr[-3000:]
    status = steps(again)
    cached = ("ingest-data", "split-data", "fit-baselines", "embed-items", "train-model", "evaluate-model")
    assert {name: status[name] for name in cached} == dict.fromkeys(cached, "cached")
    assert status["publish-features"] == status["deploy-model"] == "ran"  # never cached
    assert printed(again, "model directory") == printed(first, "model directory")


def test_a_model_forced_to_lose_stops_the_run_at_the_gate(tiny: Path, root: Path) -> None:
    lost = run(tiny, root, "pipeline.gate_margin=100")  # needs 101x the best baseline: impossible
    assert lost.returncode == 1
    assert "error: step evaluate-model failed: GateError: gate FAILED: model test ndcg@10" in lost.stderr
    assert "not published or deployed" in lost.stderr
    status = steps(lost)
    assert status["evaluate-model"] == "failed"
    assert "publish-features" not in status and "deploy-model" not in status
