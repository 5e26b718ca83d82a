"""Online feature reads: scenerec's FeatureClient against Feast's own `get_online_features`.

Same rows, same run, SQLite and Redis (a private redis-server on 127.0.0.1, stopped afterwards):
1. warm: `--reads` reads of one user + one scene row (random users and scenes), client and Feast
   interleaved in blocks so both see the same machine noise; p50 / p99 / max. The heap holds torch,
   ONNX Runtime and Feast, and `gc.freeze()` runs after loading, as in the predictor.
2. 100 item rows per read (what the predictor must NOT do per request: items belong in memory).
3. first request: fresh processes (`--runs` each). Feast unwarmed: first `get_online_features`
   after `FeatureStore(...)`. Client: first read of an unseen user after `FeatureClient` (warm-up
   included) and `gc.freeze()`, divided by that process's own p50.
Targets: client user + scene p99 <= 1 ms and <= 1.2x Feast's; first read <= 3x p50; no read above
10 ms in `--reads` reads.

The data is a random log in the data contract (fast to make at any size; read latency does not
depend on what the values mean) and a model directory with random vectors of the real shapes
(145-float retrieval vector, 384-float text embedding), published with `scenerec features publish`'s
own code. Usage: python benchmarks/feature_store.py [--users 20000 --items 10000 --reads 10000]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from common import print_table, write_results

ROOT = Path(__file__).resolve().parents[1]
SCENES = ("home", "search", "detail", "cart")


def make_data(out: Path, users: int, items: int, seed: int) -> None:
    """A random log (~30 events per user, Zipf item popularity) and catalogue, in the contract."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(10, 60, size=users)
    n = int(counts.sum())
    item_ids = np.array([f"i{k}" for k in range(items)])
    popularity = 1.0 / np.arange(1, items + 1) ** 0.8
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {
            "user_id": np.repeat([f"u{k}" for k in range(users)], counts),
            "item_id": item_ids[rng.choice(items, size=n, p=popularity / popularity.sum())],
            "event_timestamp": pd.to_datetime(
                1.7e9 + rng.integers(0, 90 * 86400, size=n), unit="s", utc=True
            ),
            "scene": rng.choice(SCENES, size=n),
            "event": rng.choice(["click", "purchase"], size=n, p=[0.9, 0.1]),
            "label": 1.0,
            "device": rng.choice(["mobile", "desktop", "tablet"], size=n),
        }
    ).to_parquet(out / "interactions.parquet", index=False)
    pd.DataFrame(
        {
            "item_id": item_ids,
            "title": item_ids,
            "text": item_ids,
            "category": [f"c{k % 20}" for k in range(items)],
        }
    ).to_parquet(out / "items.parquet", index=False)


def make_model(out: Path, data: Path, seed: int) -> None:
    """A model directory with what publish reads: manifest (files unlisted) and items.parquet."""
    from scenerec.config import Config

    rng = np.random.default_rng(seed)
    items = pd.read_parquet(data / "items.parquet")
    counts = pd.read_parquet(data / "interactions.parquet")["item_id"].value_counts()
    train = counts.reindex(items["item_id"], fill_value=0).to_numpy()
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {
            "item_id": items["item_id"],
            "index": np.arange(len(items)),
            "category": items["category"],
            "vector": list(rng.standard_normal((len(items), 145), dtype=np.float32)),
            "text_embedding": list(rng.standard_normal((len(items), 384), dtype=np.float32)),
            "train_count": train,
            "popularity_bucket": np.minimum(np.log1p(train).astype(int), 3),
            "cold": train == 0,
        }
    ).to_parquet(out / "items.parquet", index=False)
    manifest = {
        "format_version": 1,
        "created": datetime.now(UTC).isoformat(),
        "config": Config().to_dict(),
        "dims": {"max_history": 50, "items": len(items)},
        "feature_service": "ranker_v1",
        "files": {},
    }
    (out / "manifest.json").write_text(json.dumps(manifest))


def start_redis() -> subprocess.Popen[bytes]:
    """A private redis-server on a free loopback port, no persistence; SCENEREC_REDIS points at it."""
    import socket

    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed: run scripts/ensure_redis.sh")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(host="127.0.0.1", port=port)
    for _ in range(200):
        try:
            client.ping()
            break
        except redis.exceptions.ConnectionError:
            time.sleep(0.05)
    client.close()
    os.environ["SCENEREC_REDIS"] = f"127.0.0.1:{port}"
    return server


def timed(fn: Callable[[], Any], n: int) -> np.ndarray:
    out = np.empty(n)
    for k in range(n):
        started = time.perf_counter()
        fn()
        out[k] = time.perf_counter() - started
    return out * 1e3


def stats(ms: np.ndarray) -> dict[str, float]:
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
        "over_10ms": int((ms > 10).sum()),
        "n": len(ms),
    }


def warm_reads(client: Any, users: list[str], reads: int, seed: int) -> dict[str, Any]:
    """Client and Feast on the same random rows, interleaved in blocks of 500."""
    rng = np.random.default_rng(seed)
    rows = [
        (users[u], SCENES[s])
        for u, s in zip(rng.integers(0, len(users), reads), rng.integers(0, 4, reads), strict=True)
    ]
    assert client.read(*rows[0]) == client.read_via_feast(*rows[0])  # the same values, or no figures
    fast, feast = [], []
    for lo in range(0, reads, 500):
        block = iter(rows[lo : lo + 500])
        fast.append(timed(lambda b=block: client.read(*next(b)), len(rows[lo : lo + 500])))
        block = iter(rows[lo : lo + 500])
        feast.append(timed(lambda b=block: client.read_via_feast(*next(b)), len(rows[lo : lo + 500])))
    return {"client": stats(np.concatenate(fast)), "feast": stats(np.concatenate(feast))}


def item_reads(client: Any, item_ids: list[str], reads: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    batches = [[item_ids[k] for k in rng.choice(len(item_ids), 100, replace=False)] for _ in range(reads)]
    assert client.read_items(batches[0]) == client.read_items_via_feast(batches[0])
    fast, feast = iter(batches), iter(batches)
    return {
        "client": stats(timed(lambda: client.read_items(next(fast)), reads)),
        "feast": stats(timed(lambda: client.read_items_via_feast(next(feast)), reads)),
    }


def load_all_items(client: Any, items: list[str]) -> float:
    """Seconds to read every item's features once (what the predictor does at load), best of 3."""
    return float(min(timed(lambda: client.read_items(items), 3))) / 1e3


def first_read(args: argparse.Namespace) -> None:
    """(subprocess) the first reads of a fresh process, printed as JSON."""
    import onnxruntime  # noqa: F401  (the predictor's heap)
    import torch  # noqa: F401

    from scenerec.features.client import FeatureClient
    from scenerec.features.repo import open_store, resolve_yaml

    keys = json.loads(args.keys_json)
    users, items = keys["users"], keys["items"]
    if args.first_read.startswith("feast"):
        # A Feast-based predictor's load: the store and its service; then the first read, unwarmed.
        store = open_store(Path(args.repo), resolve_yaml(Path(args.repo), online_store=args.online_store))
        service = store.get_feature_service("ranker_v1")
        by_key = {"user": [], "scene": [], "item": []}
        for p in service.feature_view_projections:
            by_key[p.name.split("_")[0]] += [f"{p.name}:{f.name}" for f in p.features]
        started = time.perf_counter()
        if args.first_read == "feast-user":
            rows = [{"user_id": users[0], "scene_id": "home"}]
            store.get_online_features(by_key["user"] + by_key["scene"], rows, full_feature_names=True)
        else:
            store.get_online_features(by_key["item"], [{"item_id": i} for i in items[:100]])
        print(json.dumps({"first_ms": (time.perf_counter() - started) * 1e3}))
        return
    manifest = json.loads((Path(args.model) / "manifest.json").read_text())
    client = FeatureClient.from_repo(args.repo, manifest, online_store=args.online_store)
    gc.collect()
    gc.freeze()
    client.warm_up()  # the predictor's load() ends so: collect, freeze, warm up
    started = time.perf_counter()
    client.read(users[0], "home")
    first = (time.perf_counter() - started) * 1e3
    rest = iter(users[1:])
    p50 = float(np.percentile(timed(lambda: client.read(next(rest), "search"), len(users) - 1), 50))
    started = time.perf_counter()
    client.read_items(items[:100])
    first_items = (time.perf_counter() - started) * 1e3
    batches = [items[k : k + 100] for k in range(100, len(items), 100)][:20] or [items[:100]]
    rest_items = iter(batches)
    p50_items = float(np.percentile(timed(lambda: client.read_items(next(rest_items)), len(batches)), 50))
    result = {"first_ms": first, "p50_ms": p50, "ratio": first / p50}
    result |= {
        "items_first_ms": first_items,
        "items_p50_ms": p50_items,
        "items_ratio": first_items / p50_items,
    }
    print(json.dumps(result))


def first_reads(
    args: argparse.Namespace, repo: Path, model: Path, store: str, users: list[str], items: list[str]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for which in ("feast-user", "feast-items", "client"):
        runs = []
        for run in range(args.runs):
            at = run * 2300 % len(items)  # rows no earlier run read, while there are enough
            keys = {"users": users[run * 201 : run * 201 + 201], "items": (items[at:] + items[:at])[:2300]}
            command = [sys.executable, __file__, "--first-read", which, "--repo", str(repo)]
            command += ["--model", str(model), "--online-store", store, "--keys-json", json.dumps(keys)]
            result = subprocess.run(command, capture_output=True, text=True, timeout=300)
            if result.returncode != 0:
                raise RuntimeError(result.stderr[-2000:])
            runs.append(json.loads(result.stdout.strip().splitlines()[-1]))
        out[which] = runs
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20000)
    parser.add_argument("--items", type=int, default=10000)
    parser.add_argument("--reads", type=int, default=10000)
    parser.add_argument("--item-reads", type=int, default=300)
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per first-read figure")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--first-read", choices=["feast-user", "feast-items", "client"], help=argparse.SUPPRESS
    )
    parser.add_argument("--repo", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--online-store", help=argparse.SUPPRESS)
    parser.add_argument("--keys-json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.first_read:
        first_read(args)
        return
    run(args)


def run(args: argparse.Namespace) -> None:
    import onnxruntime  # noqa: F401  (the predictor's heap: torch, ORT and Feast)
    import torch  # noqa: F401

    from scenerec.features.client import FeatureClient
    from scenerec.features.publish import publish

    load = {"before": os.getloadavg()}
    work = Path(tempfile.mkdtemp(prefix="scenerec-fs-bench-"))
    server = start_redis()
    try:
        data, model = work / "data", work / "model"
        make_data(data, args.users, args.items, args.seed)
        make_model(model, data, args.seed)
        results: dict[str, Any] = {"sizes": {"users": args.users, "items": args.items, "reads": args.reads}}
        for store in ("sqlite", "redis"):
            repo = work / f"repo-{store}"
            shutil.copytree(ROOT / "feature_repo", repo, ignore=shutil.ignore_patterns("data", "__pycache__"))
            started = time.perf_counter()
            published = publish(data, model, repo, online_store=store)
            users = pd.read_parquet(repo / "data" / "sources" / "users.parquet")["user_id"].tolist()
            items = pd.read_parquet(repo / "data" / "sources" / "items.parquet")["item_id"].tolist()
            manifest = json.loads((model / "manifest.json").read_text())
            client = FeatureClient.from_repo(repo, manifest, online_store=store)
            gc.collect()
            gc.freeze()
            client.warm_up()
            results[store] = {
                "publish_s": time.perf_counter() - started,
                "rows": published.rows,
                "user_scene": warm_reads(client, users, args.reads, args.seed),
                "items_100": item_reads(client, items, args.item_reads, args.seed),
                "items_all_s": load_all_items(client, items),
                "first_read": first_reads(args, repo, model, store, users[::-1], items[::-1]),
            }
            gc.unfreeze()
            client.close()
        load["after"] = os.getloadavg()
        results["load_average"] = load
        report(results)
        print(f"wrote {write_results('feature_store', results)}")
    finally:
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


def report(results: dict[str, Any]) -> None:
    warm, first = [], []
    for store in ("sqlite", "redis"):
        r = results[store]
        for what in ("user_scene", "items_100"):
            for who in ("client", "feast"):
                warm.append({"store": store, "read": what, "path": who, **r[what][who]})
        runs = r["first_read"]
        for what, feast, key in (("user_scene", "feast-user", ""), ("items_100", "feast-items", "items_")):
            feast_ms = [x["first_ms"] for x in runs[feast]]
            client_ms = [x[f"{key}first_ms"] for x in runs["client"]]
            first.append(
                {
                    "store": store,
                    "read": what,
                    "feast unwarmed median_ms": float(np.median(feast_ms)),
                    "feast worst_ms": max(feast_ms),
                    "client median_ms": float(np.median(client_ms)),
                    "client worst_ms": max(client_ms),
                    "client worst first/p50": max(x[f"{key}ratio"] for x in runs["client"]),
                }
            )
    print_table("warm reads (heap: torch + ORT + Feast, gc.freeze after loading)", warm)
    print_table("first request of a fresh process (client: after its warm-up, gc.freeze, warm-up)", first)
    for store in ("sqlite", "redis"):
        r = results[store]
        print(f"{store}: publish {r['publish_s']:.1f} s; all items at load {r['items_all_s']:.2f} s")


if __name__ == "__main__":
    main()
