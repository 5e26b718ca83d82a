"""Serving latency and throughput: the scenerec predictor next to a trivial KServe model and the raw cost.

Measured in one run, side by side (issue "The KServe predictor"):
- raw: one request's in-process cost (Feast read + ONNX runs + top-k), no server;
- trivial: a `kserve.Model` that returns a constant, on the same ModelServer settings;
- scenerec: the predictor (`python -m serving`), Feast read included, top-10.
Each sequentially, open loop at 50 requests/s, and at saturation (4, 8, 16 connections), over V1
REST, V2 REST and V2 gRPC. The server is pinned to core 0, the load generator (another process) to
core 1; every loop is bounded in count and time and targets loopback only.

Usage: python benchmarks/serving.py [--model DIR --data DIR --repo DIR] [--quick]
Without --model it builds the default synthetic world with a 10,000-item catalogue first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import print_table, write_results

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).parent / "out" / "serving"
TRIVIAL = """
import sys
from kserve import Model, ModelServer
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
import numpy as np

class Constant(Model):
    def load(self):
        self.ready = True
        return True

    async def predict(self, payload, headers=None, response_headers=None):
        if isinstance(payload, InferRequest):
            out = [InferOutput("item_id", [1, 10], "BYTES"), InferOutput("score", [1, 10], "FP32")]
            out[0].set_data_from_numpy(np.array([["i1"] * 10], dtype=object), binary_data=False)
            out[1].set_data_from_numpy(np.ones((1, 10), dtype=np.float32), binary_data=False)
            return InferResponse(response_id="", model_name=self.name, infer_outputs=out)
        return {"predictions": [{"items": [{"item_id": "i1", "score": 1.0}] * 10, "fallback": None}]}

model = Constant("scenerec")
model.load()
server = ModelServer(http_port=int(sys.argv[1]), grpc_port=int(sys.argv[2]), enable_latency_logging=False)
server.start([model])
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def world(args: argparse.Namespace) -> tuple[Path, Path, Path]:
    if args.model:
        return Path(args.data), Path(args.model), Path(args.repo)
    data, model, repo = OUT / "data", OUT / "model", OUT / "feature_repo"
    run = [sys.executable, "-m", "scenerec.cli"]
    if not (data / "truth.json").is_file():
        subprocess.run(
            [*run, "data", "synth", "--out", str(data), "--users", "3000", "--items", "10000"], check=True
        )
    if not (model / "manifest.json").is_file():
        subprocess.run(
            [
                *run,
                "train",
                "--data",
                str(data),
                "--out",
                str(model),
                "--set",
                "train.epochs=3",
                "--set",
                "train.ablations=[]",
                "--set",
                "train.cold_start_eval=false",
                "--set",
                "baselines.names=[popularity]",
            ],
            check=True,
        )
    if not (repo / "data" / "online.db").is_file():
        shutil.copytree(
            ROOT / "feature_repo",
            repo,
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns("data", "__pycache__"),
        )
        subprocess.run(
            [*run, "features", "publish", "--data", str(data), "--model", str(model), "--repo", str(repo)],
            check=True,
        )
    return data, model, repo


def start(command: list[str], http: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        ["taskset", "-c", "0", *command], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{http}/v2/health/ready", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"server did not become ready: {command}")


def raw_cost(model: Path, repo: Path, users: list[str], n: int) -> dict[str, float]:
    """One request's in-process cost through the predictor's own `recommend` (no HTTP)."""
    sys.path.insert(0, str(ROOT))  # the package `serving`, not this script (benchmarks/serving.py)
    from serving.predictor import ScenerecModel
    from serving.requests import Request

    predictor = ScenerecModel("scenerec", model, feature_repo=repo, device="cpu", batching=False)
    predictor.load()
    times = []
    for k in range(n):
        started = time.perf_counter()
        predictor.recommend([Request(user_id=users[k % len(users)], scene="home", k=10)])
        times.append(time.perf_counter() - started)
    return summarise(np.array(times))


def summarise(seconds: np.ndarray) -> dict[str, float]:
    return {
        "p50_ms": float(np.percentile(seconds, 50) * 1000),
        "p99_ms": float(np.percentile(seconds, 99) * 1000),
        "n": len(seconds),
    }


def load_command(
    protocol: str, mode: str, port: int, grpc: int, users: list[str], n: int, rate: float, connections: int
) -> dict[str, Any]:
    """Run the load generator in another process pinned to core 1 (it reports JSON on stdout)."""
    payload = json.dumps(
        {
            "protocol": protocol,
            "mode": mode,
            "http": port,
            "grpc": grpc,
            "users": users[:200],
            "n": n,
            "rate": rate,
            "connections": connections,
        }
    )
    result = subprocess.run(
        ["taskset", "-c", "1", sys.executable, __file__, "--generate", payload],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


async def generate(spec: dict[str, Any]) -> dict[str, Any]:
    """Sequential, open-loop (fixed rate) or closed-loop (N connections) load; bounded count and time."""
    protocol, users = spec["protocol"], spec["users"]
    deadline = time.monotonic() + 60
    if protocol == "grpc":
        from kserve import InferenceGRPCClient, InferInput, InferRequest

        client: Any = InferenceGRPCClient(f"127.0.0.1:{spec['grpc']}", timeout=10)

        async def call(k: int) -> None:
            inputs = [InferInput("user_id", [1], "BYTES"), InferInput("k", [1], "INT32")]
            inputs[0].set_data_from_numpy(np.array([users[k % len(users)]], dtype=object))
            inputs[1].set_data_from_numpy(np.array([10], dtype=np.int32))
            await client.infer(InferRequest(model_name="scenerec", infer_inputs=inputs))
    else:
        http = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{spec['http']}",
            timeout=10,
            limits=httpx.Limits(max_connections=max(1, spec["connections"])),
        )

        async def call(k: int) -> None:
            user = users[k % len(users)]
            if protocol == "v1":
                body = {"instances": [{"user_id": user, "scene": "home", "k": 10}]}
                response = await http.post("/v1/models/scenerec:predict", json=body)
            else:
                body = {
                    "inputs": [
                        {"name": "user_id", "shape": [1], "datatype": "BYTES", "data": [user]},
                        {"name": "k", "shape": [1], "datatype": "INT32", "data": [10]},
                    ]
                }
                response = await http.post("/v2/models/scenerec/infer", json=body)
            response.raise_for_status()

    for k in range(20):  # warm connections and caches
        await call(k)
    latencies: list[float] = []
    errors = 0

    async def timed(k: int) -> None:
        nonlocal errors
        started = time.perf_counter()
        try:
            await call(k)
            latencies.append(time.perf_counter() - started)
        except Exception:
            errors += 1

    started = time.perf_counter()
    if spec["mode"] == "sequential":
        for k in range(spec["n"]):
            if time.monotonic() > deadline:
                break
            await timed(k)
    elif spec["mode"] == "rate":
        tasks = []
        for k in range(spec["n"]):
            await asyncio.sleep(max(0.0, started + k / spec["rate"] - time.perf_counter()))
            if time.monotonic() > deadline:
                break
            tasks.append(asyncio.create_task(timed(k)))
        await asyncio.gather(*tasks)
    else:
        counter = iter(range(spec["n"]))

        async def worker() -> None:
            for k in counter:
                if time.monotonic() > deadline:
                    return
                await timed(k)

        await asyncio.gather(*(worker() for _ in range(spec["connections"])))
    elapsed = time.perf_counter() - started
    return {**summarise(np.array(latencies)), "rps": len(latencies) / elapsed, "errors": errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model")
    parser.add_argument("--data")
    parser.add_argument("--repo")
    parser.add_argument("--quick", action="store_true", help="fewer requests per cell (a smoke run)")
    parser.add_argument("--generate", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        print(json.dumps(asyncio.run(generate(json.loads(args.generate)))))
        return
    data, model, repo = world(args)
    import pandas as pd

    users = pd.read_parquet(data / "interactions.parquet")["user_id"].astype(str).unique()[:500].tolist()
    n = 300 if args.quick else 2000
    rows: list[dict[str, Any]] = [
        {
            "system": "raw (in-process)",
            "protocol": "-",
            "load": "sequential",
            **raw_cost(model, repo, users, n),
        }
    ]
    os.environ["OMP_NUM_THREADS"] = "1"
    for system in ("trivial", "scenerec"):
        http, grpc = free_port(), free_port()
        if system == "trivial":
            command = [sys.executable, "-c", TRIVIAL, str(http), str(grpc)]
        else:
            command = [
                sys.executable,
                "-m",
                "serving",
                "--model_name",
                "scenerec",
                "--model_dir",
                str(model),
                "--feature_repo",
                str(repo),
                "--http_port",
                str(http),
                "--grpc_port",
                str(grpc),
                "--device",
                "cpu",
                "--enable_latency_logging",
                "false",
            ]
        server = start(command, http)
        try:
            for protocol in ("v1", "v2", "grpc"):
                cells = [("sequential", 0.0, 1), ("rate", 50.0, 64)] + [
                    ("closed", 0.0, c) for c in (4, 8, 16)
                ]
                for mode, rate, connections in cells:
                    count = min(n, 500) if mode == "rate" else n
                    result = load_command(protocol, mode, http, grpc, users, count, rate, connections)
                    load = {"sequential": "sequential", "rate": "50 req/s"}.get(
                        mode, f"{connections} connections"
                    )
                    rows.append({"system": system, "protocol": protocol, "load": load, **result})
        finally:
            server.terminate()
            server.wait(timeout=60)
    print_table("serving latency (server: 1 process on core 0; load: another process on core 1)", rows)
    path = write_results(
        "serving",
        {
            "rows": rows,
            "catalogue": int(json.loads((model / "manifest.json").read_text())["dims"]["items"]),
            "quick": args.quick,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
