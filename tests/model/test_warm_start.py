"""Warm start: a second `scenerec train --warm-start` continues from the first model's weights,
new items start from their text, and a model config that changes shapes is refused by key."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from scenerec.errors import ConfigError
from scenerec.model.warm_start import CHECKPOINT, WarmStart

TRAIN = [
    "train.epochs=1",
    "train.ablations=[]",
    "train.cold_start_eval=false",
    "baselines.names=[popularity]",
]
TRAIN += ["model.dim=16"]


def train(data: Path, out: Path, *extra: str) -> None:
    overrides = [a for s in TRAIN for a in ("--set", s)]
    command = [
        sys.executable,
        "-m",
        "scenerec.cli",
        "train",
        "--data",
        str(data),
        "--out",
        str(out),
        *overrides,
    ]
    result = subprocess.run([*command, *extra], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def test_warm_start_copies_weights_by_id_and_starts_new_items_from_text(
    small_synthetic: Path, tmp_path: Path
) -> None:
    first = tmp_path / "first"
    train(small_synthetic, first)
    assert (first / CHECKPOINT).is_file()
    # a newer catalogue: two items more, with text
    data = tmp_path / "data"
    data.mkdir()
    for name in ("interactions", "users"):
        for path in small_synthetic.glob(f"{name}.*"):
            (data / path.name).write_bytes(path.read_bytes())
    items = pd.read_parquet(small_synthetic / "items.parquet")
    extra = items.head(2).assign(item_id=["zz-new-1", "zz-new-2"])
    pd.concat([items, extra], ignore_index=True).to_parquet(data / "items.parquet", index=False)
    second = tmp_path / "second"
    train(data, second, "--warm-start", str(first))
    metrics = json.loads((second / "metrics.json").read_text())
    warm = metrics["model"]["training"]["warm_start"]
    assert warm["items_kept"] == len(items) and warm["items_new"] == 2
    old = WarmStart.load(first)
    new = WarmStart.load(second)
    assert new.items[-2:] == ["zz-new-1", "zz-new-2"] or set(new.items) - set(old.items) == {
        "zz-new-1",
        "zz-new-2",
    }
    assert torch.isfinite(new.state["items.id_embedding.weight"]).all()
    with pytest.raises(ConfigError, match=r"model\.dim is 32 here and 16"):
        old.check_config({**old.model_config, "dim": 32})
