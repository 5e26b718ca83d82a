"""`scenerec train` and `scenerec evaluate` end to end: the real encoder, training, ONNX export and
ONNX Runtime evaluation on a small synthetic dataset."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest

from scenerec.artifact import GRAPHS, ArtifactError, read_manifest

pytestmark = pytest.mark.integration

FAST = [
    "--set",
    "train.epochs=3",
    "--set",
    "train.ablations=[no_text]",
    "--set",
    "model.dim=32",
    "--set",
    "baselines.names=[popularity, scene_popularity, ease]",
    "--set",
    "retrieval.ann=always",  # the export's ANN index on a small catalogue
]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scenerec.cli", *args], capture_output=True, text=True, timeout=900
    )


@pytest.fixture(scope="module")
def trained(small_synthetic: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("train") / "model"
    result = run(
        "train",
        "--data",
        str(small_synthetic),
        "--out",
        str(out),
        "--cache",
        str(out.parent / "cache"),
        *FAST,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "scenerec" in result.stdout and "ease" in result.stdout
    return out


def test_the_model_directory_is_complete_and_self_describing(trained: Path) -> None:
    manifest = read_manifest(trained)  # verifies every listed file's sha256
    for name in GRAPHS:
        assert (trained / f"{name}.onnx").is_file()
        assert manifest["graphs"][name]["inputs"] and manifest["graphs"][name]["outputs"]
    assert {"items.parquet", "id_maps/items.json", "tokenizer/tokenizer.json"} <= set(manifest["files"])
    assert manifest["config"]["model"]["dim"] == 32
    assert manifest["dims"]["items"] == 300 and manifest["feature_service"] == "ranker_v1"
    assert manifest["encoder"]["encoder"] == "all-MiniLM-L6-v2"
    items = pd.read_parquet(trained / "items.parquet")
    assert len(items) == 300 and len(items["vector"].iloc[0]) == manifest["dims"]["query"]
    assert len(items["text_embedding"].iloc[0]) == 384


def test_parity_of_every_graph_is_within_tolerance(trained: Path) -> None:
    parity = json.loads((trained / "parity.json").read_text())
    assert set(parity["graphs"]) == set(GRAPHS)
    for name, result in parity["graphs"].items():
        assert result["max_abs_error"] <= 1e-4, name
        assert 1 in result["batch_sizes"] and max(result["batch_sizes"]) > 1, name


def test_metrics_cover_model_slices_ablations_and_baselines(trained: Path) -> None:
    metrics = json.loads((trained / "metrics.json").read_text())
    model = metrics["model"]
    assert model["scored_with"] == "onnxruntime"
    assert {"scene:home", "scene:search", "scene:detail", "cold_items", "cold_items:among_new"} <= set(
        model["slices"]
    )
    assert 0 < model["test"]["ndcg@10"] <= model["test"]["hr@10"] <= 1
    assert set(model["lambda"]["scene"]) >= {"home", "search", "detail"}
    assert model["tasks"]["conversion_auc"] is not None and 0 <= model["tasks"]["conversion_auc"] <= 1
    assert "no_text" in metrics["ablations"] and "ndcg@10" in metrics["ablations"]["no_text"]["test"]
    assert set(metrics["baselines"]) == {"popularity", "scene_popularity", "ease"}
    manifest = json.loads((trained / "manifest.json").read_text())
    assert manifest["ann"]["file"] == "ann.faiss" and manifest["ann"]["items"] == manifest["dims"]["items"]
    assert "ann.faiss" in manifest["files"]  # hashed like every file
    curve = model["diversity_curve"]
    assert [row["diversity"] for row in curve] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert curve[0]["ndcg@10"] == pytest.approx(model["test"]["ndcg@10"], abs=1e-6)  # d = 0: the ranking
    assert curve[-1]["ild@10"] > curve[0]["ild@10"]
    report = (trained / "report.html").read_text()
    assert report.count("<img") >= 2 and "Diversity at ranking time" in report


def test_evaluate_recomputes_the_same_numbers_from_onnx(
    trained: Path, small_synthetic: Path, tmp_path: Path
) -> None:
    out = tmp_path / "metrics.json"
    result = run("evaluate", "--data", str(small_synthetic), "--model", str(trained), "--out", str(out))
    assert result.returncode == 0, result.stderr
    fresh = json.loads(out.read_text())["model"]["test"]
    trained_with = json.loads((trained / "metrics.json").read_text())["model"]["test"]
    assert fresh == pytest.approx(trained_with, abs=1e-9)


def test_retrieval_graph_excludes_and_ranks_like_a_dot_product(trained: Path) -> None:
    items = np.stack(pd.read_parquet(trained / "items.parquet")["vector"].to_numpy())
    session = ort.InferenceSession(str(trained / "retrieval.onnx"), providers=["CPUExecutionProvider"])
    query = np.random.default_rng(0).normal(size=(2, items.shape[1])).astype(np.float32)
    exclude = np.array([[3, 300], [5, 7]], dtype=np.int64)  # 300 = the pad: excludes nothing
    nothing = np.full((2, 1), 300, dtype=np.int64)  # an empty history: the item-item part adds nothing
    feed = {"query": query, "item_item_weight": np.ones(2, np.float32), "history": nothing}
    scores, top, _ = session.run(None, {**feed, "exclude": exclude, "k": np.array([5])})
    expected = query @ items.T
    expected[0, 3] = expected[1, 5] = expected[1, 7] = -np.inf
    assert np.allclose(scores, expected, atol=1e-4)
    assert top.shape == (2, 5) and np.array_equal(top, np.argsort(-expected, axis=1)[:, :5])
    assert 3 not in top[0] and not {5, 7} & set(top[1])


def test_user_tower_pads_only_to_the_longest_history(trained: Path) -> None:
    """The history axis is dynamic: 3 items alone give what they give left-padded to max_history."""
    manifest = json.loads((trained / "manifest.json").read_text())
    n_items, n_scenes, length = (manifest["dims"][k] for k in ("items", "scenes", "max_history"))
    session = ort.InferenceSession(str(trained / "user_tower.onnx"), providers=["CPUExecutionProvider"])
    context = {n: np.array([1], np.int64) for n in ("scene", "device", "hour", "weekday")}
    short = {"hist_items": np.array([[4, 9, 2]]), "hist_scenes": np.array([[0, 1, 1]]), **context}
    padded = {
        "hist_items": np.concatenate([np.full((1, length - 3), n_items), short["hist_items"]], 1),
        "hist_scenes": np.concatenate([np.full((1, length - 3), n_scenes), short["hist_scenes"]], 1),
        **context,
    }
    for a, b in zip(session.run(None, short), session.run(None, padded), strict=True):
        assert a.shape == b.shape and np.allclose(a, b, atol=1e-5)


def test_a_tampered_graph_is_refused(trained: Path, tmp_path: Path) -> None:
    copy = tmp_path / "model"
    shutil.copytree(trained, copy)
    with (copy / "ranker.onnx").open("r+b") as handle:
        handle.seek(100)
        handle.write(b"\x00\x01\x02")
    with pytest.raises(ArtifactError, match=r"ranker\.onnx: sha256 differs"):
        read_manifest(copy)


def test_bad_config_exits_2_and_writes_nothing(small_synthetic: Path, tmp_path: Path) -> None:
    result = run(
        "train", "--data", str(small_synthetic), "--out", str(tmp_path / "m"), "--set", "model.dimm=8"
    )
    assert result.returncode == 2 and "unknown key 'model.dimm'" in result.stderr
    result = run(
        "train", "--data", str(small_synthetic), "--out", str(tmp_path / "m"), "--set", "train.loss=fast"
    )
    assert result.returncode == 2 and "train.loss" in result.stderr
    assert not (tmp_path / "m").exists()


def test_evaluate_refuses_another_catalogue(trained: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    assert (
        run(
            "data", "synth", "--out", str(other), "--users", "100", "--items", "200", "--seed", "1"
        ).returncode
        == 0
    )
    result = run("evaluate", "--data", str(other), "--model", str(trained))
    assert result.returncode == 2 and "id_maps/items.json" in result.stderr
