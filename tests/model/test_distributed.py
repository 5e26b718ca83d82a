"""`scenerec train` under torchrun: two processes (gloo on CPU), DistributedDataParallel, rank 0 writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scenerec.artifact import read_manifest

pytestmark = pytest.mark.integration

SETTINGS = [
    "--set",
    "train.epochs=20",
    "--set",
    "train.ablations=[]",
    "--set",
    "train.cold_start_eval=false",
    "--set",
    "baselines.names=[popularity]",
    "--set",
    "model.dim=32",
]


def train(command: list[str], data: Path, out: Path) -> float:
    result = subprocess.run(
        [
            *command,
            "train",
            "--data",
            str(data),
            "--out",
            str(out),
            "--cache",
            str(out.parent / "cache"),
            *SETTINGS,
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    read_manifest(out)  # complete and verified
    return float(json.loads((out / "metrics.json").read_text())["model"]["test"]["ndcg@10"])


def test_torchrun_two_processes_matches_one(small_synthetic: Path, tmp_path: Path) -> None:
    torchrun = Path(sys.executable).with_name("torchrun")
    assert torchrun.is_file(), f"{torchrun} is missing (torch installs it)"
    single = train([sys.executable, "-m", "scenerec.cli"], small_synthetic, tmp_path / "single")
    distributed = train(
        [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "scenerec.cli"],
        small_synthetic,
        tmp_path / "ddp",
    )
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "cache",
        "ddp",
        "single",
    ]
    assert abs(distributed - single) <= 0.10 * single, (single, distributed)
