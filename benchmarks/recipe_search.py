"""Choose the small-data recipe on several worlds, not one: the main model under config overrides
against the tuned EASE / ItemKNN baselines, over worlds x generator seeds.

Each variant trains only the main model (no ablations, no cold-item model); baselines are tuned once
per world. Prints mean test NDCG@10 ratio to the best baseline per variant (and per world) and writes
results/recipe_search.json.

Usage: python benchmarks/recipe_search.py --worlds 200x300,400x600 --seeds 7,8,9 \
           --variant base= --variant wd=train.weight_decay=0.05 ...
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import print_table, write_results

from scenerec.baselines.runner import run_baselines
from scenerec.config import load_config
from scenerec.data import schema as c
from scenerec.data.dataset import load_dataset
from scenerec.data.split import leave_last_out
from scenerec.data.synthetic import SyntheticSpec, write_synthetic
from scenerec.evaluate import evaluate
from scenerec.model.fit import fit
from scenerec.model.scorer import TorchScorer
from scenerec.text import TextEncoder, embed_cached, resolve_encoder_dir

OUT = Path(__file__).parent / "out" / "recipe"


def world(size: str, seed: int) -> Path:
    """`USERSxITEMS` or `default` (the demo's world) under the generator's `seed`."""
    if size == "default":
        spec = SyntheticSpec(seed=seed)
    else:
        users, items = (int(v) for v in size.split("x"))
        spec = SyntheticSpec(users=users, items=items, seed=seed)
    path = OUT / "data" / f"{size}-s{seed}"
    if not (path / "interactions.parquet").is_file():
        write_synthetic(path, spec)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", default="200x300,400x600")
    parser.add_argument("--seeds", default="7,8,9")
    parser.add_argument("--variant", action="append", default=[], help="name=key=value[;key=value]")
    parser.add_argument("--name", default="recipe_search")
    args = parser.parse_args()
    variants = {}
    for spec in args.variant or ["base="]:
        name, _, assignments = spec.partition("=")
        variants[name] = [a for a in assignments.split(";") if a]
    base = load_config()
    base = dataclasses.replace(
        base, train=dataclasses.replace(base.train, ablations=(), cold_start_eval=False)
    )
    base = dataclasses.replace(base, baselines=dataclasses.replace(base.baselines, names=("ease", "itemknn")))
    encoder = TextEncoder(resolve_encoder_dir(base.text), base.text.max_length, base.text.batch_size)
    rows = []
    for size in args.worlds.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            path = world(size, seed)
            dataset = load_dataset(path, base.data)
            texts = dataset.items[c.TEXT].fillna("").astype(str).tolist()
            text = torch.as_tensor(embed_cached(encoder, texts, OUT / "cache"))
            split = leave_last_out(dataset)
            valid, test = split.valid_cases(), split.test_cases()
            baselines = run_baselines(dataset, base, split)
            best_name = max(baselines, key=lambda n: baselines[n]["test"]["ndcg@10"])
            best = baselines[best_name]["test"]["ndcg@10"]
            for name, assignments in variants.items():
                config = base.with_overrides(assignments)
                started = time.perf_counter()
                fitted = fit(dataset, split.train, valid, config, text, desc=name)
                result = evaluate(
                    TorchScorer(fitted.model, len(dataset.vocab.devices)),
                    test,
                    dataset.vocab.n_items,
                    config.eval,
                    dataset.item_categories(),
                    desc=f"{name} test",
                )["metrics"]
                rows.append(
                    {
                        "world": f"{size}-s{seed}",
                        "variant": name,
                        "valid": round(fitted.best_valid["ndcg@10"], 4),
                        "test": round(result["ndcg@10"], 4),
                        "baseline": f"{best_name} {best:.4f}",
                        "ratio": round(result["ndcg@10"] / best, 3),
                        "epoch": fitted.best_epoch,
                        "epochs run": len(fitted.epochs),
                        "s": round(time.perf_counter() - started, 1),
                    }
                )
                print(rows[-1], flush=True)
    summary = []
    for name in variants:
        mine = [r for r in rows if r["variant"] == name]
        summary.append(
            {
                "variant": name,
                "mean ratio": round(float(np.mean([r["ratio"] for r in mine])), 3),
                "min ratio": round(float(np.min([r["ratio"] for r in mine])), 3),
                "mean valid": round(float(np.mean([r["valid"] for r in mine])), 4),
                "mean s": round(float(np.mean([r["s"] for r in mine])), 1),
            }
        )
    print_table("runs", rows)
    print_table("variants (ratio to the best tuned baseline)", summary)
    write_results(args.name, {"rows": rows, "summary": summary, "variants": variants})


if __name__ == "__main__":
    main()
