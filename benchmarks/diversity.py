"""The relevance / diversity trade-off of the predictor's `diversity` knob on the synthetic test split.

Trains the main model on the default synthetic world (no ablations, no cold-item protocol: the
curve is the main model's), or reads `--from-model DIR`'s metrics.json, and prints the curve that
training wrote (`scenerec/diversity_curve.py`): NDCG@10, HR@10, intra-list diversity@10 and
coverage@10 of the test lists re-ranked by MMR at each knob value, beside EASE's NDCG@10. What the
knob costs in serving time is in `benchmarks/serving.py`.

Usage: python benchmarks/diversity.py [--data DIR] [--set key=value ...] [--from-model MODEL_DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import print_table, write_results

from scenerec.config import load_config
from scenerec.data.synthetic import SyntheticSpec, write_synthetic
from scenerec.train import train

OUT = Path(__file__).parent / "out"
SETTINGS = ["train.ablations=[]", "train.cold_start_eval=false", "baselines.names=[ease]"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="a data folder (default: synthetic)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--from-model", type=Path, default=None, help="tabulate this model's metrics.json")
    args = parser.parse_args()
    data = args.data or OUT / "synthetic-diversity"
    if args.data is None and not (data / "truth.json").is_file():
        write_synthetic(data, SyntheticSpec())
    started = time.perf_counter()
    if args.from_model:
        metrics = json.loads((args.from_model / "metrics.json").read_text())
    else:
        config = load_config(None, [*SETTINGS, *args.overrides])
        metrics = train(data, OUT / f"model-diversity-{data.name}", config, cache_dir=OUT / "cache")
    curve = metrics["model"]["diversity_curve"]
    ease = metrics.get("baselines", {}).get("ease", {}).get("test", {}).get("ndcg@10")
    rows = [
        {
            "diversity": row["diversity"],
            "ndcg@10": row["ndcg@10"],
            "vs d=0": row["ndcg@10"] / curve[0]["ndcg@10"] if curve[0]["ndcg@10"] else float("nan"),
            "vs EASE": row["ndcg@10"] / ease if ease else float("nan"),
            "hr@10": row["hr@10"],
            "ild@10": row["ild@10"],
            "coverage@10": row["coverage@10"],
        }
        for row in curve
    ]
    print_table(f"diversity curve ({data.name}, test split, full ranking then MMR)", rows)
    path = write_results(
        "diversity" if args.data is None else f"diversity-{data.name}",
        {
            "data": str(data),
            "overrides": args.overrides,
            "curve": curve,
            "ease_ndcg@10": ease,
            "pool": metrics.get("config", {}).get("ranking", {}).get("diversity_pool"),
            "seconds": round(time.perf_counter() - started, 1),
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
