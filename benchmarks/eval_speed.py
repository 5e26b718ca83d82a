"""How fast the data layer and full-ranking evaluation are at the sizes users bring.

1. Full-ranking evaluation of 20,000 users x 50,000 items (dot-product scorer, 64 dims, ~50 history
   items masked per user): target <= 60 s and <= 4 GiB peak.
2. `load_dataset` (validate + clean + encode) and both splits with their evaluation cases on
   1,000,000 interactions: target <= 20 s.

Usage: python benchmarks/eval_speed.py [--users 20000 --items 50000 --interactions 1000000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import peak_rss_gib, print_table, write_results

from scenerec.config import DataConfig, EvalConfig
from scenerec.data import schema as c
from scenerec.data.dataset import load_dataset
from scenerec.data.split import EvalCases, cold_item_split, leave_last_out
from scenerec.evaluate import evaluate


class DotProduct:
    """user vector . item vector, the retrieval scorer every model exports."""

    def __init__(self, users: int, items: int, dim: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.user = torch.randn(users, dim, generator=g)
        self.item = torch.randn(items, dim, generator=g)

    def score(self, cases: EvalCases) -> torch.Tensor:
        return self.user[torch.as_tensor(cases.user)] @ self.item.T


def random_cases(users: int, items: int, history: int, rng: np.random.Generator) -> EvalCases:
    lengths = rng.integers(history // 2, history * 3 // 2, size=users)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat = rng.integers(0, items, size=offsets[-1])
    return EvalCases(
        user=np.arange(users),
        target=rng.integers(0, items, size=users),
        scene=rng.integers(0, 3, users),
        device=np.zeros(users, int),
        timestamp=np.zeros(users, int),
        hist_offsets=offsets,
        hist_items=flat,
        hist_scenes=np.zeros(len(flat), int),
        hist_timestamps=np.zeros(len(flat), int),
    )


def bench_eval(users: int, items: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    cases = random_cases(users, items, 50, rng)
    scorer = DotProduct(users, items, 64)
    categories = rng.integers(0, 20, size=items)
    slices = {f"scene:{s}": cases.scene == s for s in range(3)}
    before = peak_rss_gib()
    started = time.perf_counter()
    result = evaluate(scorer, cases, items, EvalConfig(), categories, slices)
    seconds = time.perf_counter() - started
    assert 0.0 <= result["metrics"]["ndcg@10"] <= 1.0
    return {
        "seconds": seconds,
        "peak_rss_gib": peak_rss_gib(),
        "rss_before_gib": before,
        "cases_per_s": users / seconds,
    }


def write_log(directory: Path, n: int, users: int, items: int, rng: np.random.Generator) -> None:
    user = rng.integers(0, users, size=n)
    item = np.minimum(rng.zipf(1.3, size=n) - 1, items - 1)
    seconds = rng.integers(1_600_000_000, 1_700_000_000, size=n)
    frame = pd.DataFrame(
        {
            c.USER_ID: pd.Series(user).map("u{}".format),
            c.ITEM_ID: pd.Series(item).map("i{}".format),
            c.TIMESTAMP: pd.to_datetime(seconds, unit="s", utc=True),
            c.SCENE: np.array(["home", "search", "detail"])[rng.integers(0, 3, n)],
            c.EVENT: "click",
            c.LABEL: 1.0,
            c.DEVICE: np.array(["mobile", "desktop"])[rng.integers(0, 2, n)],
        }
    )
    frame.to_parquet(directory / "interactions.parquet", index=False)
    ids = [f"i{k}" for k in range(items)]
    pd.DataFrame({c.ITEM_ID: ids, c.TITLE: ids, c.TEXT: ids, c.CATEGORY: "x"}).to_parquet(
        directory / "items.parquet"
    )


def bench_data(n: int) -> dict[str, float]:
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        write_log(directory, n, users=n // 30, items=50_000, rng=rng)
        t0 = time.perf_counter()
        dataset = load_dataset(directory, DataConfig())
        t1 = time.perf_counter()
        split = leave_last_out(dataset)
        cases = split.test_cases()
        cold = cold_item_split(dataset, DataConfig()).test_cases()
        t2 = time.perf_counter()
    return {
        "interactions": n,
        "rows_after_cleaning": len(dataset.interactions),
        "validate_load_s": t1 - t0,
        "split_and_cases_s": t2 - t1,
        "total_s": t2 - t0,
        "test_cases": len(cases),
        "cold_cases": len(cold),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--interactions", type=int, default=1_000_000)
    args = parser.parse_args()
    data = bench_data(args.interactions)
    evaluation = bench_eval(args.users, args.items)
    print_table("validate + split", [{**data, "target_s": 20.0}])
    print_table(
        f"full-ranking evaluation, {args.users:,} users x {args.items:,} items",
        [{**evaluation, "target_s": 60.0, "target_gib": 4.0}],
    )
    path = write_results(
        "eval_speed", {"data": data, "evaluation": {"users": args.users, "items": args.items, **evaluation}}
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
