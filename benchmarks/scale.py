"""What each part costs at 10^4, 10^5 and 10^6 items and users, and how it grows (issue 15).

Per size N (N users, N items, ~30 N interactions), each phase in a fresh child process that reports
its own peak RSS (imports included):
1. synth: `write_synthetic` (as benchmarks/publish_scale.py);
2. train: `scenerec.train.train` with the text embeddings of every item (real encoder, cached in
   --cache so a rerun does not embed again), no ablations, no cold-start model, the popularity
   baseline only (the tuned ones build dense N x N matrices above 10^4), `retrieval.ann=always` (so
   every size has its index and both retrieval paths are compared), `eval.max_users=20000` and, from
   --budget-from items, a step budget (`train.steps_per_epoch` x `train.epochs`, `--train-steps`,
   `--train-epochs`): at budgeted sizes training time is the cost of a fixed number of steps, not of
   convergence. Its steps (load, embed, fit, export, index, evaluation) are timed by wrapping the
   functions `scenerec.train` calls, in the child only;
3. publish: `publish` of the world and the model to a fresh feature repo (SQLite);
4. quality, offline, through the predictor's own scoring core (`serving.runtime.Runtime`: user
   tower, exact graph or ANN index, ranker) on a seeded sample of the test cases (history as
   context and excluded): recall@100 of the ANN's retrieved 100 against the exact graph's, and
   NDCG@10 / HR@10 of both answers (k=10 from the default 200 candidates);
5. serve: the predictor (`python -m serving`, one process pinned to core 0, the load generator of
   benchmarks/serving.py on core 1) twice, `--retrieval exact` and the ANN index: V1 REST
   sequential p50/p99, open loop at 50 req/s p50/p99, and the most req/s over 8 connections.
A failed phase is recorded (its log's tail) and the phases that do not need it still run; the JSON
(results/scale.json, results/scale-quick.json with --quick) is rewritten after every phase, and the
growth between sizes is named from the log-log slope (1 = linear). Worlds, models, feature repos
and logs stay in --root/n<N>/ (out/scale, out/scale-quick with --quick); --reuse takes each phase's
result from there when it succeeded with the same parameters (to resume a long run, or to rerun
only some --phases).

Usage:
    python benchmarks/scale.py --sizes 10000 --quick   # smoke run: ~8 min, + ~2 min the first time
    python benchmarks/scale.py --sizes 10000           # early-stopped training at 10^4: ~20-35 min
    python benchmarks/scale.py --max 1000000           # the issue's table (10^4, 10^5, 10^6)

Where the time goes at 10^4 (measured, 2 cores): embedding 10^4 texts ~2 min (first run only), the
item-item part's EASE fits ~4 min of `fit` (on up to model.item_item_max_items = 20,000 items, off
above), an epoch ~50 s; the rest is seconds. Expected above it (extrapolated, not yet run): the
first embedding of 10^5 texts ~20 min and of 10^6 ~3.5 h (about 80 texts/s: cache them once), synth
~20 s / ~3 min, publish ~2 min / ~15 min; training 400 x 2 steps is minutes at either size; the
evaluation ranks 20,000 users against the whole catalogue, twice (metrics and diversity curve).
10^6 needs ~12 GiB and hours: not next to other work on this machine.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import itertools
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
from common import peak_rss_gib, print_table, write_results  # noqa: E402
from publish_scale import _publish, _synth  # noqa: E402

sys.path.insert(0, str(ROOT))  # ahead of benchmarks/: `serving` is the package, not benchmarks/serving.py

SIZES = (10_000, 100_000, 1_000_000)
PHASES = ("synth", "train", "publish", "quality", "serve")
NEEDS = {
    "synth": (),
    "train": ("synth",),
    "publish": ("train",),
    "quality": ("train",),
    "serve": ("publish",),
}
SCALE_SETTINGS = [
    "train.ablations=[]",
    "train.cold_start_eval=false",
    "baselines.names=[popularity]",
    "retrieval.ann=always",
    "eval.max_users=20000",
]
# what `scenerec.train.train` calls, timed in the train child (a name the library no longer has is skipped)
TRAIN_STEPS = (
    "load_dataset",
    "embed_cached",
    "leave_last_out",
    "fit",
    "export_model_graphs",
    "build_index",
    "export_text_encoder_onnx",
    "_write_tables",
    "_manifest",
    "_evaluate_shipped",
    "diversity_curve",
    "_conversion_auc",
    "_baselines",
    "write_report",
)
EXPORT_STEPS = ("export_model_graphs", "export_text_encoder_onnx", "_write_tables", "_manifest")
EVAL_STEPS = ("_evaluate_shipped", "diversity_curve", "_conversion_auc")
CELLS = (
    ("sequential", "sequential", 0.0, 1),
    ("50 req/s", "rate", 50.0, 64),
    ("8 connections", "closed", 0.0, 8),
)


def train_overrides(n: int, args: argparse.Namespace) -> list[str]:
    """The config of the size: the scale settings, and the step budget from --budget-from items."""
    if n < args.budget_from or not args.train_steps:
        return list(SCALE_SETTINGS)
    budget = [f"train.steps_per_epoch={args.train_steps}", f"train.epochs={args.train_epochs}"]
    return [*SCALE_SETTINGS, *budget, "train.min_epochs=1"]


# ---- the phases' children --------------------------------------------------------------------------


def _instrument(module: Any, names: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Replace `module.<name>` by a wrapper that adds up its seconds and notes the peak RSS after it."""
    steps: dict[str, dict[str, Any]] = {}

    def wrap(name: str, inner: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(inner)
        def timed(*args: Any, **kwargs: Any) -> Any:
            step = steps.setdefault(name, {"seconds": 0.0, "calls": 0})
            started = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                step["seconds"] += time.perf_counter() - started
                step["calls"] += 1
                step["peak_rss_gib_after"] = peak_rss_gib()

        return timed

    for name in names:
        if callable(getattr(module, name, None)):
            setattr(module, name, wrap(name, getattr(module, name)))
    return steps


def _count_embedded() -> list[int]:
    """A counter of the texts the encoder embeds (the cache's misses), by wrapping `TextEncoder.embed`."""
    from scenerec.text import TextEncoder

    count, inner = [0], TextEncoder.embed

    @functools.wraps(inner)
    def embed(self: Any, texts: list[str], *args: Any, **kwargs: Any) -> Any:
        count[0] += len(texts)
        return inner(self, texts, *args, **kwargs)

    TextEncoder.embed = embed  # type: ignore[method-assign]
    return count


def _stand_in_text(training: Any) -> None:
    """Seeded random unit vectors in place of the encoder's (`--stand-in-text-from`): every other step of
    training runs at full size while the catalogue's text is not embedded (~80 min a 10^6 catalogue
    on 2 cores). The text part then carries nothing: quality figures of such a run are not the model's."""
    import numpy as np

    def stand_in(encoder: Any, texts: list[str], cache_dir: Any = None, progress: bool = True) -> Any:
        vectors = np.random.default_rng(0).standard_normal((len(texts), encoder.dim), dtype=np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    training.embed_cached = stand_in


def _files(directory: Path) -> dict[str, int]:
    return {
        str(p.relative_to(directory)): p.stat().st_size for p in sorted(directory.rglob("*")) if p.is_file()
    }


def _train(data: Path, model: Path, overrides: list[str], cache: Path, stand_in: bool) -> dict[str, Any]:
    import scenerec.train as training
    from scenerec.config import load_config

    config = load_config(None, overrides)
    if stand_in:
        _stand_in_text(training)
    steps = _instrument(training, TRAIN_STEPS)
    embedded = _count_embedded()
    started = time.perf_counter()
    training.train(data, model, config, cache_dir=cache)
    seconds = time.perf_counter() - started
    metrics = json.loads((model / "metrics.json").read_text())
    manifest = json.loads((model / "manifest.json").read_text())
    files = _files(model)
    return {
        "seconds": seconds,
        "steps": steps,
        "embedded_texts": embedded[0],  # 0: every text came from the cache (or was a stand-in)
        "stand_in_text": stand_in,
        "training": metrics["model"]["training"],
        "test": metrics["model"]["test"],
        "baselines": {k: v["test"] for k, v in metrics["baselines"].items()},
        "dataset": metrics["dataset"],
        "ann": manifest.get("ann"),
        "dims": manifest["dims"],
        "files": files,
        "bytes": sum(files.values()),
    }


def _index_seconds(model: Path) -> float:
    """`build_index` timed on items.parquet's retrieval vectors (when the train child could not time it)."""
    import tempfile

    import numpy as np
    import pyarrow.parquet as pq

    from scenerec.ann import build_index
    from scenerec.config import Config

    manifest = json.loads((model / "manifest.json").read_text())
    column = pq.read_table(model / "items.parquet", columns=["vector"]).column("vector").combine_chunks()
    vectors = column.values.to_numpy().reshape(len(column), -1).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        build_index(vectors, Config.from_dict(manifest["config"]).retrieval, Path(tmp) / "ann.faiss")
        return time.perf_counter() - started


def _quality(data: Path, model: Path, users: int, time_index: bool, batch: int = 32) -> dict[str, Any]:
    """ANN against exact through the predictor's scoring core, on a seeded sample of test cases."""
    import numpy as np

    from scenerec.artifact import read_manifest
    from scenerec.config import Config
    from scenerec.data.dataset import load_dataset
    from scenerec.data.split import leave_last_out
    from scenerec.metrics import metrics_from_ranks
    from serving.runtime import Query, Runtime

    config = Config.from_dict(read_manifest(model)["config"])
    dataset = load_dataset(data, config.data)
    cases = leave_last_out(dataset, config.eval.max_users, config.data.seed).test_cases()
    del dataset
    pick = np.sort(np.random.default_rng(0).choice(len(cases), size=min(users, len(cases)), replace=False))
    off = cases.hist_offsets

    def query(b: int, k: int) -> Query:
        history = cases.hist_items[off[b] : off[b + 1]].astype(np.int64)
        return Query(
            history=history,
            history_scenes=cases.hist_scenes[off[b] : off[b + 1]].astype(np.int64),
            scene=int(cases.scene[b]),
            device=int(cases.device[b]),
            timestamp=float(cases.timestamp[b]),
            k=k,
            exclude=history,
        )

    answers: dict[str, dict[str, list[np.ndarray]]] = {}
    seconds: dict[str, dict[str, float]] = {}
    for path, retrieval in (("exact", "exact"), ("ann", "auto")):
        runtime = Runtime.from_model_dir(model, threads=None, retrieval=retrieval)
        if (runtime.ann is not None) != (path == "ann"):
            raise RuntimeError(f"{model}: the {path} runtime did not load the retrieval it was asked for")
        served_depth = runtime.retrieval_depth
        for name, depth, k in (("top100", 100, 100), ("top10", served_depth, 10)):
            runtime.retrieval_depth = depth
            started = time.perf_counter()
            found = []
            for lo in range(0, len(pick), batch):
                ranked = runtime.recommend([query(int(b), k) for b in pick[lo : lo + batch]])
                found.extend(r.items for r in ranked)
            answers.setdefault(path, {})[name] = found
            seconds.setdefault(path, {})[name] = time.perf_counter() - started
        del runtime
    # recall@100: the retrieved 100 (k = depth = 100: the answer is the retrieved set, re-ordered)
    recall = [
        len(np.intersect1d(a, e)) / max(len(e), 1)
        for a, e in zip(answers["ann"]["top100"], answers["exact"]["top100"], strict=True)
    ]
    targets = cases.target[pick]
    out: dict[str, Any] = {"cases": len(pick), "recall@100": float(np.mean(recall)), "seconds": seconds}
    for path in ("exact", "ann"):
        ranks = [  # 0-based rank of the target in the answer; 10 (a miss) when it is not in the top 10
            next(iter(np.flatnonzero(items[:10] == target)), 10)
            for items, target in zip(answers[path]["top10"], targets, strict=True)
        ]
        found = metrics_from_ranks(np.asarray(ranks), (10,))
        out[path] = {"ndcg@10": found["ndcg@10"], "hr@10": found["hr@10"]}
    same = [
        np.array_equal(a[:10], e[:10])
        for a, e in zip(answers["ann"]["top10"], answers["exact"]["top10"], strict=True)
    ]
    out["same_top10"] = float(np.mean(same))
    if time_index:
        out["index_seconds"] = _index_seconds(model)
    return out


def _run_phase(phase: str, spec: dict[str, Any]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = Path(spec["root"])
    if phase == "synth":
        out = _synth(spec["n"], root / "data")
    elif phase == "train":
        out = _train(root / "data", root / "model", spec["overrides"], Path(spec["cache"]), spec["stand_in"])
    elif phase == "publish":
        out = _publish(root / "data", root / "model", root, "sqlite")
    else:
        out = _quality(root / "data", root / "model", spec["users"], spec["time_index"])
    print(json.dumps({**out, "peak_rss_gib": peak_rss_gib()}))


def _child(phase: str, spec: dict[str, Any], log: Path) -> dict[str, Any]:
    """One phase in a fresh process (its own peak RSS), its stderr in `log`."""
    command = [sys.executable, __file__, "--phase", phase, "--spec", json.dumps(spec)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as stderr:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"exit {done.returncode}; {log}:\n{log.read_text(errors='replace')[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# ---- serving ----------------------------------------------------------------------------------------


def _bench_serving() -> Any:
    """benchmarks/serving.py as a module (its name is the predictor package's)."""
    spec = importlib.util.spec_from_file_location("bench_serving", BENCH / "serving.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _serve(root: Path, users: list[str], requests: int, ready_timeout: float) -> dict[str, Any]:
    """The predictor with the exact graph, then with the ANN index; a path that fails is recorded."""
    bench = _bench_serving()
    out: dict[str, Any] = {"users": len(users), "requests_per_cell": requests}
    if not json.loads((root / "model" / "manifest.json").read_text()).get("ann"):
        raise RuntimeError(f"{root / 'model'}: no ANN index in the manifest (the ANN path would serve exact)")
    for path, flags in (("exact", ["--retrieval", "exact"]), ("ann", [])):
        try:
            out[path] = {
                "flags": flags,
                **_serve_one(bench, root, path, flags, users, requests, ready_timeout),
            }
        except Exception as e:  # the other path is still measured
            out[path] = {"flags": flags, "error": f"{type(e).__name__}: {str(e)[-3000:]}"}
    if all("error" in out[p] for p in ("exact", "ann")):
        raise RuntimeError(f"both predictors failed: {out['exact']['error']}")
    return out


def _serve_one(
    bench: Any, root: Path, path: str, flags: list[str], users: list[str], requests: int, ready_timeout: float
) -> dict[str, Any]:
    from serving.launch import free_port, predictor_command, predictor_env, wait_until_ready

    http, grpc = free_port(), free_port()
    repo = root / "sqlite" / "feature_repo"
    command = predictor_command(root / "model", repo, http, grpc, "--device", "cpu", "--workers", "1", *flags)
    env = {**predictor_env(), "OMP_NUM_THREADS": "1"}  # as benchmarks/serving.py: one core, one thread
    log = root / "logs" / f"serve-{path}.log"
    started = time.perf_counter()
    with log.open("wb") as handle:
        server = subprocess.Popen(
            ["taskset", "-c", "0", *command], cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, env=env
        )
    try:
        wait_until_ready(server, http, log, timeout_s=ready_timeout)
        result: dict[str, Any] = {"ready_seconds": time.perf_counter() - started}
        for cell, mode, rate, connections in CELLS:
            load = bench.load_command("v1", mode, http, grpc, users, requests, rate, connections)
            result[cell] = bench.summarise([load])
        result["peak_rss_gib"] = _vm_hwm_gib(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=60)
    return result


def _vm_hwm_gib(pid: int) -> float | None:
    """A running process's peak RSS (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return None


def _some_users(data: Path, count: int) -> list[str]:
    import pyarrow.parquet as pq

    column = pq.ParquetFile(data / "interactions.parquet").read_row_group(0, columns=["user_id"])["user_id"]
    return [str(u) for u in dict.fromkeys(column.to_pylist())][:count]


# ---- the run ----------------------------------------------------------------------------------------


def _params(phase: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    stand_in = n >= args.stand_in_text_from
    return {
        "synth": {"n": n},
        # (stand_in_text only when on: results of runs from before the option keep their parameters)
        "train": {"overrides": train_overrides(n, args), **({"stand_in_text": True} if stand_in else {})},
        "publish": {},
        "quality": {"users": args.quality_users},
        "serve": {"requests": args.requests, "users": args.users},
    }[phase]


def run_size(n: int, args: argparse.Namespace, save: Callable[[], Path], details: dict[str, Any]) -> None:
    """Every phase of one size, each result saved (here and in the JSON) as soon as it is known."""
    root = Path(args.root) / f"n{n}"
    if not args.reuse:
        for name in ("data", "model", "sqlite", "phases"):
            shutil.rmtree(root / name, ignore_errors=True)
    (root / "phases").mkdir(parents=True, exist_ok=True)
    results = details.setdefault(str(n), {"n": n})
    rerun = False  # once a phase runs again, every later one does
    for phase in PHASES:
        params, stored = _params(phase, n, args), root / "phases" / f"{phase}.json"
        previous = json.loads(stored.read_text()) if args.reuse and stored.is_file() else None
        if phase not in args.phases:  # not asked for: an earlier result still counts (as a dependency too)
            if not rerun and previous and previous.get("ok"):
                results[phase] = {**previous, "reused": True}
            continue
        if not rerun and previous and previous.get("ok") and previous.get("params") == params:
            results[phase] = {**previous, "reused": True}
            print(f"[{n:,}] {phase}: reused from {stored}")
            continue
        missing = [need for need in NEEDS[phase] if not results.get(need, {}).get("ok")]
        if missing:
            results[phase] = {"ok": False, "params": params, "error": f"not run: {', '.join(missing)} failed"}
            continue
        rerun = True
        print(f"[{n:,}] {phase} ...", flush=True)
        started = time.perf_counter()
        try:
            if phase == "serve":
                users = _some_users(root / "data", args.users)
                out = _serve(root, users, args.requests, args.ready_timeout)
            else:
                spec = {"n": n, "root": str(root), **params}
                if phase == "train":
                    spec["cache"], spec["stand_in"] = args.cache, params.get("stand_in_text", False)
                if phase == "quality":  # time the index here only when train could not
                    spec["time_index"] = "build_index" not in results.get("train", {}).get("steps", {})
                out = _child(phase, spec, root / "logs" / f"{phase}.log")
            result = {"ok": True, **out}
        except Exception as e:  # a benchmark keeps what the other phases measure; the error is recorded
            result = {"ok": False, "error": f"{type(e).__name__}: {str(e)[-3000:]}"}
        # a shared machine: the load while it ran says how far to trust its times
        result.update(params=params, wall_seconds=time.perf_counter() - started, load_average=os.getloadavg())
        results[phase] = result
        stored.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        last = result.get("error", "").strip().splitlines()[-1:] or [""]
        state = f"{result['wall_seconds']:.0f} s" if result["ok"] else f"FAILED: {last[0][:300]}"
        print(f"[{n:,}] {phase}: {state}", flush=True)
        save()


def _get(tree: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if not isinstance(tree, dict) or key not in tree:
            return "-"
        tree = tree[key]
    return tree


def _step_sum(train: dict[str, Any], names: tuple[str, ...]) -> float | str:
    steps = train.get("steps", {}) if train.get("ok") else {}
    found = [steps[s]["seconds"] for s in names if s in steps]
    return sum(found) if found else "-"


def tables(details: dict[str, Any], args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    cost, serve, quality = [], [], []
    for n_key in sorted(details, key=int):
        d = details[n_key]
        n = int(n_key)
        synth, train, publish = d.get("synth", {}), d.get("train", {}), d.get("publish", {})
        q, s = d.get("quality", {}), d.get("serve", {})
        size = {"users = items": f"{n:,}"}
        used = _get(train, "params", "overrides")  # what the (maybe reused) model was trained with
        settings = dict(o.split("=", 1) for o in (used if used != "-" else train_overrides(n, args)))
        index_s = _get(train, "steps", "build_index", "seconds")
        cost.append(
            {
                **size,
                "interactions": f"{synth['interactions']:,}" if synth.get("ok") else "-",
                "synth s": _get(synth, "seconds"),
                "synth GiB": _get(synth, "peak_rss_gib"),
                "train budget": (
                    f"{settings['train.steps_per_epoch']} steps x {settings['train.epochs']} epochs"
                    if "train.steps_per_epoch" in settings
                    else "early stop"
                ),
                "embed s": "stand-in"
                if train.get("stand_in_text")
                else "cached"
                if train.get("embedded_texts") == 0
                else _get(train, "steps", "embed_cached", "seconds"),
                "fit s": _get(train, "steps", "fit", "seconds"),
                "of which epochs s": _get(train, "training", "seconds"),
                "samples/s": _get(train, "training", "samples_per_second"),
                "train GiB": _get(train, "peak_rss_gib"),
                "export s": _step_sum(train, EXPORT_STEPS),
                "export MB": train["bytes"] / 1e6 if train.get("ok") else "-",
                "index s": index_s if index_s != "-" else _get(q, "index_seconds"),
                "eval s": _step_sum(train, EVAL_STEPS),
                "train total s": _get(train, "seconds"),
                "publish s": _get(publish, "seconds"),
                "publish GiB": _get(publish, "peak_rss_gib"),
            }
        )
        row = dict(size)
        for path in ("exact", "ann"):
            label = path if path == "exact" else "ANN"
            row[f"{label} seq p50"] = _get(s, path, "sequential", "p50_ms")
            row[f"{label} 50/s p50"] = _get(s, path, "50 req/s", "p50_ms")
            row[f"{label} 50/s p99"] = _get(s, path, "50 req/s", "p99_ms")
            row[f"{label} max req/s"] = _get(s, path, "8 connections", "rps")
            row[f"{label} GiB"] = _get(s, path, "peak_rss_gib")
        serve.append(row)
        exact, ann = _get(q, "exact", "ndcg@10"), _get(q, "ann", "ndcg@10")
        quality.append(
            {
                **size,
                "cases": _get(q, "cases"),
                "recall@100": _get(q, "recall@100"),
                "ndcg@10 exact": exact,
                "ndcg@10 ANN": ann,
                "ANN vs exact %": 100 * (ann / exact - 1) if isinstance(ann, float) and exact else "-",
                "same top-10": _get(q, "same_top10"),
                "train test ndcg@10": _get(train, "test", "ndcg@10"),
                "popularity ndcg@10": _get(train, "baselines", "popularity", "ndcg@10"),
                "oracle ndcg@10": _get(synth, "oracle_ndcg@10"),
            }
        )
    return {"cost": cost, "serving": serve, "quality": quality}


def growth(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The log-log slope of every numeric column between consecutive sizes, and its name."""
    out = []
    for a, b in itertools.pairwise(rows):
        na, nb = (int(r["users = items"].replace(",", "")) for r in (a, b))
        row: dict[str, Any] = {"sizes": f"{na:,} -> {nb:,}"}
        for key, va in a.items():
            vb = b.get(key)
            if isinstance(va, int | float) and isinstance(vb, int | float) and va > 0 and vb > 0:
                slope = math.log(vb / va) / math.log(nb / na)
                row[key] = f"{slope:.2f} {_growth_name(slope)}"
        out.append(row)
    return out


def _growth_name(slope: float) -> str:
    if slope <= -0.15:
        return "falls"
    if slope < 0.15:
        return "flat"
    return "sub-linear" if slope < 0.85 else "linear" if slope <= 1.15 else "super-linear"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="users = items per row")
    parser.add_argument("--max", type=int, default=100_000, help="largest size (the issue's table: 1000000)")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: fewer requests and cases, budget always"
    )
    parser.add_argument(
        "--train-steps", type=int, default=400, help="optimizer steps an epoch at budgeted sizes"
    )
    parser.add_argument("--train-epochs", type=int, default=2, help="epochs at budgeted sizes")
    parser.add_argument(
        "--budget-from",
        type=int,
        default=100_000,
        help="sizes from this on train on the step budget (else early stop)",
    )
    parser.add_argument(
        "--stand-in-text-from",
        type=int,
        default=10**12,
        help="sizes from this on train on random text vectors instead of embedding the catalogue",
    )
    parser.add_argument("--quality-users", type=int, default=None, help="test cases of the ANN check (5000)")
    parser.add_argument("--requests", type=int, default=None, help="requests per serving cell (300)")
    parser.add_argument("--users", type=int, default=100, help="distinct users the load generator asks for")
    parser.add_argument(
        "--ready-timeout", type=float, default=1200.0, help="seconds a predictor may take to load"
    )
    parser.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES))
    parser.add_argument("--root", default=None, help="worlds, models, repos, logs (out/scale[-quick])")
    parser.add_argument("--cache", default=str(BENCH / "out" / "scale" / "cache"), help="text embeddings")
    parser.add_argument(
        "--reuse", action="store_true", help="keep phases that succeeded with the same parameters"
    )
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        _run_phase(args.phase, json.loads(args.spec))
        return
    if args.quick:
        args.budget_from = 0
    args.root = args.root or str(BENCH / "out" / ("scale-quick" if args.quick else "scale"))
    args.quality_users = args.quality_users or (1000 if args.quick else 5000)
    args.requests = args.requests or (100 if args.quick else 300)
    args.users = min(args.users, args.requests)
    sizes = sorted(n for n in set(args.sizes) if n <= args.max)
    details: dict[str, Any] = {}
    name = "scale-quick" if args.quick else "scale"

    def save() -> Path:
        found = tables(details, args)
        notes = {
            "baselines": "popularity only: the tuned baselines build dense N x N matrices above 10^4 items",
            "train": f"budget from {args.budget_from:,} items: {args.train_steps} steps x "
            f"{args.train_epochs} epochs (training time is then a fixed number of steps, not convergence)",
            "overrides": SCALE_SETTINGS,
        }
        payload = {**found, "growth": growth(found["cost"]) + growth(found["serving"]), "details": details}
        return write_results(
            name, {**payload, "notes": notes, "quick": args.quick, "load_average": os.getloadavg()}
        )

    for n in sizes:
        run_size(n, args, save, details)
    found = tables(details, args)
    print_table("cost per size (times in s, peak RSS in GiB of each phase's own process)", found["cost"])
    print_table(
        "predictor, V1 REST, 1 process on core 0 (ms; max req/s over 8 connections)", found["serving"]
    )
    print_table("ANN against exact retrieval (test split, seeded sample of cases)", found["quality"])
    if len(found["cost"]) > 1:
        print_table("growth: log-log slope between sizes (1 = linear)", growth(found["cost"]))
        print_table("growth of serving", growth(found["serving"]))
    print(f"wrote {save()}")


if __name__ == "__main__":
    main()
