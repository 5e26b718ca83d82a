"""The command line end to end: exit codes, messages and files, through the installed console script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from scenerec.cli import main


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `scenerec` as a user would, in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "scenerec.cli", *args], capture_output=True, text=True, timeout=600
    )


def test_validate_exit_codes(small_synthetic: Path, tmp_path: Path) -> None:
    assert main(["data", "validate", str(small_synthetic)]) == 0
    broken = tmp_path / "broken"
    shutil.copytree(small_synthetic, broken)
    items = pd.read_parquet(broken / "items.parquet")
    pd.concat([items, items.head(1)]).to_parquet(broken / "items.parquet")
    (broken / "itmes.csv").write_text("item_id\n")
    result = run("data", "validate", str(broken))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "items.parquet: column 'item_id'" in result.stderr and "duplicate ids" in result.stderr
    assert "itmes.csv: unknown file that looks like a typo" in result.stderr


def test_config_errors_exit_2(small_synthetic: Path, tmp_path: Path) -> None:
    result = run(
        "data", "split", str(small_synthetic), "--out", str(tmp_path / "s"), "--set", "data.min_interaction=3"
    )
    assert result.returncode == 2
    assert "unknown key 'data.min_interaction'" in result.stderr
    assert not (tmp_path / "s").exists()


def test_split_writes_both_protocols(small_synthetic: Path, tmp_path: Path) -> None:
    out = tmp_path / "split"
    assert main(["data", "split", str(small_synthetic), "--out", str(out)]) == 0
    test = pd.read_parquet(out / "test.parquet")
    assert len(test) == 600 and test["user_id"].is_unique
    assert {"user_id", "item_id", "event_timestamp", "scene"} <= set(
        test.columns
    ) and "pos" not in test.columns
    cold_items = set(pd.read_parquet(out / "cold/items.parquet")["item_id"])
    assert cold_items and not cold_items & set(pd.read_parquet(out / "cold/train.parquet")["item_id"])
    assert set(pd.read_parquet(out / "cold/test.parquet")["item_id"]) <= cold_items


def test_synth_refuses_a_bad_spec(tmp_path: Path) -> None:
    result = run("data", "synth", "--out", str(tmp_path / "d"), "--items", "10")
    assert result.returncode == 2 and "items" in result.stderr
    assert not (tmp_path / "d").exists()


@pytest.mark.integration
def test_default_demo_data_ranks_the_baselines_sensibly(tmp_path: Path) -> None:
    """On the default synthetic data (the demo's): oracle > scene_popularity > popularity, CF > popularity."""
    data, metrics_path = tmp_path / "data", tmp_path / "metrics.json"
    assert run("data", "synth", "--out", str(data)).returncode == 0
    result = run("baselines", "--data", str(data), "--out", str(metrics_path))
    assert result.returncode == 0, result.stderr
    metrics = json.loads(metrics_path.read_text())
    truth = json.loads((data / "truth.json").read_text())
    ndcg = {name: r["test"]["ndcg@10"] for name, r in metrics["baselines"].items()}
    assert truth["oracle"]["test"]["ndcg@10"] > max(ndcg.values())
    assert ndcg["scene_popularity"] > ndcg["popularity"]
    for name in ("itemknn", "mf", "ease"):
        assert ndcg[name] > 1.2 * ndcg["popularity"], name
    assert metrics["dataset"]["users"] == 5000
    assert "ndcg@10" in result.stdout and "scene_popularity" in result.stdout
    assert (tmp_path / "report.html").read_text().count("<img") == 1
