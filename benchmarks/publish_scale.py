"""A synthetic world and its Feast publish at scale: wall time and peak RSS per size (issue 15).

For each size N (N users and N items): `scenerec data synth` (the sparse sampler above 5e7
user-item cells), then `publish` of the world's features to a fresh copy of feature_repo/ (SQLite;
also Redis with --redis, whose memory per user is reported), and with --materialize Feast's own
`materialize` of the same sources into the same store, for comparison with the batched writes.
Each phase runs in a fresh child process, which reports its own peak RSS (imports included).

Publishing needs a model directory; training one at 10^5-10^6 items (text embeddings of every item)
is not what is measured here, so the benchmark writes a stand-in: a manifest with the default
config (max_history 50) and items.parquet with random retrieval vectors (64 floats) and text
embeddings (384 floats), the shapes a trained default model publishes.

Usage:
    python benchmarks/publish_scale.py [--max 100000] [--redis HOST:PORT] [--materialize 10000]
    python benchmarks/publish_scale.py --max 1000000   # 10^6: ~1 h and several GB; not on a shared machine
--redis names a scratch Redis: each publish there starts with FLUSHDB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from common import peak_rss_gib, print_table, write_results

REPO = Path(__file__).resolve().parents[1] / "feature_repo"
SIZES = (10_000, 100_000, 1_000_000)


def _synth(n: int, out: Path) -> dict[str, Any]:
    from scenerec.data.synthetic import SyntheticSpec, sampler_for, write_synthetic

    spec = SyntheticSpec(users=n, items=n)
    started = time.perf_counter()
    truth = write_synthetic(out, spec)
    seconds = time.perf_counter() - started
    import pyarrow.parquet as pq

    rows = pq.ParquetFile(out / "interactions.parquet").metadata.num_rows
    return {
        "seconds": seconds,
        "interactions": rows,
        "sampler": sampler_for(spec),
        "oracle_ndcg@10": truth["oracle"]["test"]["ndcg@10"],
    }


def _stand_in_model(data: Path, out: Path) -> None:
    """A model directory publish accepts: manifest (default config) + items.parquet of random vectors."""
    import numpy as np
    import pandas as pd

    from scenerec.artifact import FORMAT_VERSION, file_hashes
    from scenerec.config import Config
    from scenerec.data.io import write_json

    items = pd.read_parquet(data / "items.parquet", columns=["item_id", "title", "category"])
    items = items.sort_values("item_id").reset_index(drop=True)
    rng = np.random.default_rng(0)
    n = len(items)
    out.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(
        {
            "item_id": items["item_id"],
            "index": np.arange(n),
            "title": items["title"],
            "category": items["category"],
            "vector": list(rng.standard_normal((n, 64), dtype=np.float32)),
            "text_embedding": list(rng.standard_normal((n, 384), dtype=np.float32)),
            "train_count": rng.integers(0, 100, size=n),
            "popularity_bucket": rng.integers(0, 10, size=n),
            "cold": np.zeros(n, dtype=bool),
        }
    )
    table.to_parquet(out / "items.parquet", index=False)
    manifest = {
        "format_version": FORMAT_VERSION,
        "config": Config().to_dict(),
        "created": datetime.now(UTC).isoformat(),
        "feature_service": "ranker_v1",
        "dims": {"items": n, "query": 64, "text": 384},
        "files": file_hashes(out),
    }
    write_json(manifest, out / "manifest.json")


def _fresh_repo(root: Path) -> Path:
    repo = root / "feature_repo"
    shutil.rmtree(repo, ignore_errors=True)
    shutil.copytree(REPO, repo, ignore=shutil.ignore_patterns("data", "__pycache__"))
    return repo


def _publish(data: Path, model: Path, root: Path, store: str) -> dict[str, Any]:
    from scenerec.features.publish import publish, summary

    if store == "redis":
        import redis

        host, port = os.environ["SCENEREC_REDIS"].split(":")
        redis.Redis(host=host, port=int(port), socket_timeout=10).flushdb()
    repo = _fresh_repo(root / store)
    started = time.perf_counter()
    result = publish(data, model, repo, online_store=store)
    return {"seconds": time.perf_counter() - started, **summary(result)}


def _materialize(root: Path) -> dict[str, Any]:
    """Feast's `materialize` of the published sources into the published (SQLite) store, again."""
    from scenerec.features.repo import open_store

    repo = root / "sqlite" / "feature_repo"
    store = open_store(repo)
    views = [v.name for v in store.list_feature_views() if v.online]
    started = time.perf_counter()
    store.materialize(datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC), feature_views=views)
    return {"seconds": time.perf_counter() - started}


def _child(phase: str, n: int, root: Path, store: str = "sqlite") -> dict[str, Any]:
    """Run one phase in a fresh process (its own peak RSS, no state carried over)."""
    command = [
        sys.executable,
        __file__,
        "--phase",
        phase,
        "--n",
        str(n),
        "--root",
        str(root),
        "--store",
        store,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{phase} at {n:,} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _run_phase(args: argparse.Namespace) -> None:
    root = Path(args.root)
    if args.phase == "synth":
        out = _synth(args.n, root / "data")
        _stand_in_model(root / "data", root / "model")  # after the timing: not part of synth
    elif args.phase == "publish":
        out = _publish(root / "data", root / "model", root, args.store)
    else:
        out = _materialize(root)
    print(json.dumps({**out, "peak_rss_gib": peak_rss_gib()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max", type=int, default=100_000, help="largest size (10^6: --max 1000000)")
    parser.add_argument("--redis", default=None, help="HOST:PORT of a scratch Redis (flushed per publish)")
    parser.add_argument(
        "--materialize",
        type=int,
        default=0,
        metavar="N",
        help="also time Feast's materialize at sizes up to N (it is ~2x slower than publish's batches)",
    )
    parser.add_argument("--phase", choices=["synth", "publish", "materialize"], help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--store", default="sqlite", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        _run_phase(args)
        return
    if args.redis:
        os.environ["SCENEREC_REDIS"] = args.redis
    rows, details = [], []
    for n in (s for s in SIZES if s <= args.max):
        with tempfile.TemporaryDirectory(prefix=f"publish-scale-{n}-") as tmp:
            root = Path(tmp)
            synth = _child("synth", n, root)
            publishes = {
                store: _child("publish", n, root, store)
                for store in ["sqlite"] + ["redis"] * bool(args.redis)
            }
            materialize = _child("materialize", n, root) if n <= args.materialize else None
        sqlite = publishes["sqlite"]
        row: dict[str, Any] = {
            "users = items": f"{n:,}",
            "interactions": f"{synth['interactions']:,}",
            "synth s": synth["seconds"],
            "synth peak GiB": synth["peak_rss_gib"],
            "publish sqlite s": sqlite["seconds"],
            "of which writes s": sqlite["steps_seconds"]["write"],
            "publish peak GiB": sqlite["peak_rss_gib"],
        }
        if args.materialize:  # every row has every column ("-": not run at this size)
            row["feast materialize s"] = materialize["seconds"] if materialize else "-"
            row["materialize peak GiB"] = materialize["peak_rss_gib"] if materialize else "-"
        if "redis" in publishes:
            redis_run = publishes["redis"]
            row["publish redis s"] = redis_run["seconds"]
            row["redis B/user"] = redis_run["redis_memory"]["bytes_per_user"]
        rows.append(row)
        details.append({"n": n, "synth": synth, "publish": publishes, "materialize": materialize})
        print_table("synthetic world + Feast publish at scale", rows)
    path = write_results(
        "publish_scale",
        {"rows": rows, "details": details, "load_average": os.getloadavg(), "note": "shared machine"},
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
