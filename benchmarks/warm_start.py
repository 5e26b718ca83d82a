"""Warm start against training from scratch, on the synthetic world split by time.

The default synthetic world (5,000 users, 2,000 items, 90 days) is cut at 80% of its time span:
- `earlier`: the first 80% of days (and only the items seen in them), trained from scratch: the
  model in production before the new days arrived;
- `scratch`: the whole log, trained from scratch;
- `warm`: the whole log, `scenerec train --warm-start earlier`: the id maps are extended for the
  items that appeared in the last 20% (their rows start from their text), everything else
  continues from the earlier model's weights.
Each run is a real `scenerec train` process (the same config, ablations off, one baseline, one
text-embedding cache, so they differ only in where the weights start and in what a warm start
changes: a smaller learning rate, the starting weights as epoch 0's candidate, no minimum epoch
count; see `train.warm_lr_scale`). Reported: the valid NDCG@10 of the shipped model (the selected
epoch after calibration), epochs run, training seconds (the fit) and the whole command's.

Target (issue "Fresh answers"): warm valid NDCG@10 >= 98% of scratch's in <= 1/3 of its training time.

Usage: python benchmarks/warm_start.py [--users 5000 --items 2000] [--reuse]
Writes benchmarks/results/warm_start.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from common import print_table, write_results

from scenerec.data.io import write_parquet
from scenerec.data.synthetic import SyntheticSpec, write_synthetic

OUT = Path(__file__).parent / "out" / "warm_start"
SETTINGS = ["train.ablations=[]", "train.cold_start_eval=false", "baselines.names=[popularity]"]
QUALITY_SHARE, TIME_SHARE = 0.98, 1 / 3


def time_split(full: Path, earlier: Path, share: float = 0.8) -> dict[str, Any]:
    """Copy of `full` with the interactions before `share` of its time span, and their items."""
    log = pd.read_parquet(full / "interactions.parquet")
    start, end = log["event_timestamp"].min(), log["event_timestamp"].max()
    cut = start + (end - start) * share
    kept = log[log["event_timestamp"] < cut]
    items = pd.read_parquet(full / "items.parquet")
    earlier.mkdir(parents=True, exist_ok=True)
    write_parquet(kept.reset_index(drop=True), earlier / "interactions.parquet")
    write_parquet(
        items[items["item_id"].isin(set(kept["item_id"]))].reset_index(drop=True), earlier / "items.parquet"
    )
    for extra in ("users.parquet",):
        if (full / extra).is_file():
            write_parquet(pd.read_parquet(full / extra), earlier / extra)
    return {
        "cut": cut.isoformat(),
        "interactions": [len(kept), len(log)],
        "items": [int(kept["item_id"].nunique()), int(log["item_id"].nunique())],
    }


def train(
    data: Path, out: Path, cache: Path, warm: Path | None = None, reuse: bool = False
) -> dict[str, Any]:
    wall_file = out.parent / f"{out.name}.wall"
    if reuse and wall_file.is_file() and "best_valid" in (out / "metrics.json").read_text():
        return _row(out, json.loads(wall_file.read_text()))
    command = [sys.executable, "-m", "scenerec.cli", "train", "--data", str(data), "--out", str(out)]
    command += ["--cache", str(cache), *(x for s in SETTINGS for x in ("--set", s))]
    if warm is not None:
        command += ["--warm-start", str(warm)]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    (out.parent / f"{out.name}.wall").write_text(json.dumps(wall))
    return _row(out, wall)


def _row(out: Path, wall: float) -> dict[str, Any]:
    training = json.loads((out / "metrics.json").read_text())["model"]["training"]
    return {
        "valid ndcg@10": training["best_valid"]["ndcg@10"],
        "best epoch": training["best_epoch"],
        "epochs": sum(1 for e in training["epochs"] if e["epoch"] > 0),
        "train s": training["seconds"],
        "command s": wall,
        "warm items kept/new": (
            f"{training['warm_start']['items_kept']}/{training['warm_start']['items_new']}"
            if training.get("warm_start")
            else "-"
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=SyntheticSpec().users)
    parser.add_argument("--items", type=int, default=SyntheticSpec().items)
    parser.add_argument(
        "--reuse", action="store_true", help="keep the earlier and scratch runs found in out/"
    )
    args = parser.parse_args()
    world = OUT / f"{args.users}x{args.items}"
    full, earlier = world / "data", world / "earlier"
    if not (full / "truth.json").is_file():
        write_synthetic(full, SyntheticSpec(users=args.users, items=args.items))
    split = time_split(full, earlier)
    cache = world / "cache"
    runs = {"earlier (80% of days)": train(earlier, world / "model-earlier", cache, reuse=args.reuse)}
    runs["scratch (all days)"] = train(full, world / "model-scratch", cache, reuse=args.reuse)
    runs["warm (all days)"] = train(full, world / "model-warm", cache, warm=world / "model-earlier")
    rows = [{"run": name, **row} for name, row in runs.items()]
    print_table(
        f"warm start vs scratch ({args.users:,} users, {args.items:,} items, cut at {split['cut']})", rows
    )
    scratch, warm = runs["scratch (all days)"], runs["warm (all days)"]
    quality, speed = warm["valid ndcg@10"] / scratch["valid ndcg@10"], warm["train s"] / scratch["train s"]
    targets = [
        {
            "target": "warm valid NDCG@10 >= 98% of scratch's",
            "value": round(quality, 4),
            "met": quality >= QUALITY_SHARE,
        },
        {
            "target": "warm training time <= 1/3 of scratch's",
            "value": round(speed, 3),
            "met": speed <= TIME_SHARE,
        },
    ]
    print_table("targets", targets)
    path = write_results("warm_start", {"split": split, "rows": rows, "targets": targets})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
