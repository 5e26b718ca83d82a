"""The predictor under the faults production brings (issue 18), each against a real predictor on
loopback under a bounded open-loop load of 50 small V1 requests/s:

- baseline: no fault, the reference latency;
- redis_killed: the online store (redis-server) is killed for 10 s, then restarted from its dump;
- redis_hung: the store is stopped (SIGSTOP: connections accepted, nothing answered) for 10 s;
- maximal: three waves of 4 maximal calls at once (10,000 items each, 2,000 of them explained: the
  default per-call limits) among the small ones;
- sigterm: 24 keep-alive clients fetching large answers (1,000 items each), then SIGTERM.

Targets: 0 5xx and 0 connection resets in every case; small-request p99 <= 30 ms during a hung or
killed store and during the maximal calls; predictor RSS growth <= 100 MB after them. The
predictor is pinned to core 0; this process (load, faults) and Redis to core 1.

Usage: python benchmarks/faults.py [--model DIR --data DIR] [--quick]
Without --model it uses the world of benchmarks/serving.py (3,000 users, 10,000 items), building
it first if needed. Writes benchmarks/results/faults.json and faults.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS_DIR, print_table, serving_world, write_results

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from serving.launch import free_port, predictor_command, predictor_env, wait_until_ready  # noqa: E402

OUT = Path(__file__).parent / "out" / "faults"
RATE = 50.0
PATH = "/v1/models/scenerec:predict"
# The largest call the default limits admit (serving/admission.py): 10,000 items, 2,000 explained.
MAXIMAL = [{"k": 1000, "explain": True}] * 2 + [{"k": 1000}] * 8
# What a keep-alive client of the sigterm case asks for: 1,000 items, about 45 KB of JSON.
LARGE_ANSWER = [{"k": 250}] * 4


# ---- the world ------------------------------------------------------------------------------------
def world(args: argparse.Namespace) -> tuple[Path, Path]:
    """(data, model): the given ones, or the serving benchmark's world (built once, shared)."""
    if args.model:
        return Path(args.data), Path(args.model)
    return serving_world()


class Redis:
    """A private redis-server on core 1 that keeps its data across a kill (a dump in its directory)."""

    def __init__(self, directory: Path) -> None:
        self.directory, self.port = directory, free_port()
        directory.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            sys.exit("redis-server is not installed: run scripts/ensure_redis.sh")
        self.process = subprocess.Popen(
            [
                "taskset",
                "-c",
                "1",
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--dbfilename",
                "dump.rdb",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port)
        for _ in range(400):
            try:
                if client.ping():
                    break
            except (redis.exceptions.ConnectionError, redis.exceptions.BusyLoadingError):
                time.sleep(0.05)
        client.close()

    def save(self) -> None:
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port)
        client.save()
        client.close()

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)
        if sig == signal.SIGKILL:
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait()


def publish(data: Path, model: Path, redis: Redis) -> Path:
    repo = OUT / "feature_repo"
    if repo.exists():
        shutil.rmtree(repo)
    shutil.copytree(ROOT / "feature_repo", repo, ignore=shutil.ignore_patterns("data", "__pycache__"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "scenerec.cli",
            "features",
            "publish",
            "--data",
            str(data),
            "--model",
            str(model),
            "--repo",
            str(repo),
            "--online-store",
            "redis",
        ],
        check=True,
        env={**os.environ, "SCENEREC_REDIS": f"127.0.0.1:{redis.port}"},
    )
    redis.save()  # a killed and restarted store comes back with its rows
    return repo


# ---- the load -------------------------------------------------------------------------------------
@dataclass
class Outcome:
    """One call: when it was sent (s since the case started), how long it took, what came back."""

    kind: str  # small, maximal, large
    sent: float
    seconds: float
    status: int  # HTTP status; 0 when no answer came back
    error: str = ""  # reset, refused, timeout, other: why no answer came back
    fallback: bool = False


class Connections:
    """A minimal HTTP/1.1 keep-alive client (as benchmarks/serving.py's) that honours
    `Connection: close`, so a connection the server closes on purpose is never reused."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(self, body: bytes, timeout: float = 30.0) -> tuple[int, bytes]:
        reader, writer = (
            self.idle.pop() if self.idle else await asyncio.open_connection("127.0.0.1", self.port)
        )
        try:
            head = (
                f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            writer.write(head.encode() + body)
            raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
            headers = raw.decode("latin-1").lower()
            status = int(headers.split(" ", 2)[1])
            length = int(re.search(r"content-length:\s*(\d+)", headers).group(1))  # type: ignore[union-attr]
            answer = await asyncio.wait_for(reader.readexactly(length), timeout)
        except BaseException:
            writer.close()
            raise
        if "connection: close" in headers:
            writer.close()
        else:
            self.idle.append((reader, writer))
        return status, answer

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle = []


def classify(error: BaseException) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "refused"
    if isinstance(error, (ConnectionResetError, BrokenPipeError, asyncio.IncompleteReadError)):
        return "reset"
    if isinstance(error, (asyncio.TimeoutError, TimeoutError)):
        return "timeout"
    return f"other: {type(error).__name__}"


async def call(pool: Connections, kind: str, instances: list[dict[str, Any]], started: float) -> Outcome:
    sent = time.perf_counter()
    body = json.dumps({"instances": instances}).encode()
    try:
        status, answer = await pool.post(body)
    except Exception as e:  # every failure is counted, by kind
        return Outcome(kind, sent - started, time.perf_counter() - sent, 0, classify(e))
    seconds = time.perf_counter() - sent
    fallback = status == 200 and b"feature_store_unavailable" in answer
    return Outcome(kind, sent - started, seconds, status, "", fallback)


async def small_load(port: int, users: list[str], seconds: float, started: float) -> list[Outcome]:
    """Open loop: one small call (k=10) every 1/RATE s, whatever the earlier ones are doing."""
    pool = Connections(port)
    tasks = []
    for n in range(int(seconds * RATE)):
        await asyncio.sleep(max(0.0, started + n / RATE - time.perf_counter()))
        instance = {"user_id": users[n % len(users)], "scene": "home", "k": 10}
        tasks.append(asyncio.create_task(call(pool, "small", [instance], started)))
    out = list(await asyncio.gather(*tasks))
    pool.close()
    return out


# ---- the predictor --------------------------------------------------------------------------------
def start_predictor(model: Path, repo: Path, redis: Redis, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    http, grpc = free_port(), free_port()
    command = predictor_command(
        model, repo, http, grpc, "--device", "cpu", "--feature_config", str(repo / "feature_store.redis.yaml")
    )
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**predictor_env(), "SCENEREC_REDIS": f"127.0.0.1:{redis.port}"}
    with log.open("wb") as handle:
        process = subprocess.Popen(
            ["taskset", "-c", "0", *command], cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, env=env
        )
    wait_until_ready(process, http, log)
    return process, http


def rss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", text).group(1)) / 1024  # type: ignore[union-attr]


async def warm(port: int, users: list[str]) -> None:
    pool = Connections(port)
    for user in users[:100]:
        await pool.post(json.dumps({"instances": [{"user_id": user, "k": 10}]}).encode())
    await pool.post(json.dumps({"instances": [{"user_id": users[0], **i} for i in MAXIMAL]}).encode())
    pool.close()


@dataclass
class Case:
    name: str
    outcomes: list[Outcome] = field(default_factory=list)
    window: tuple[float, float] = (0.0, 1e9)  # when the fault was on (s since the start)
    rss_before: float = 0.0
    rss_after: float = 0.0
    exit_code: int | None = None
    drained_s: float | None = None


async def run_case(name: str, port: int, pid: int, redis: Redis, users: list[str], quick: bool) -> Case:
    case = Case(name, rss_before=rss_mb(pid))
    seconds = 10.0 if quick else 20.0
    started = time.perf_counter()
    load = asyncio.create_task(small_load(port, users, seconds, started))
    extra: list[asyncio.Task[Outcome]] = []
    on, off = 3.0, 3.0 + (5.0 if quick else 10.0)
    if name in ("redis_killed", "redis_hung"):
        await asyncio.sleep(on)
        redis.signal(signal.SIGKILL if name == "redis_killed" else signal.SIGSTOP)
        await asyncio.sleep(off - on)
        if name == "redis_killed":
            await asyncio.get_running_loop().run_in_executor(None, redis.start)  # the load goes on
        else:
            redis.signal(signal.SIGCONT)
        case.window = (on, off)
    elif name == "maximal":
        pool = Connections(port)
        waves = 2 if quick else 3
        for wave in range(waves):
            await asyncio.sleep(max(0.0, started + on + 4.0 * wave - time.perf_counter()))
            instances = [{"user_id": users[(wave * 10 + n) % len(users)], **i} for n, i in enumerate(MAXIMAL)]
            extra += [asyncio.create_task(call(pool, "maximal", instances, started)) for _ in range(4)]
        case.window = (on, on + 4.0 * waves)
    case.outcomes = list(await load) + list(await asyncio.gather(*extra))
    await asyncio.sleep(1.0)
    case.rss_after = rss_mb(pid)
    return case


async def sigterm_case(process: subprocess.Popen[bytes], port: int, users: list[str]) -> Case:
    """24 keep-alive clients looping over large answers plus the small load; SIGTERM at 3 s."""
    case = Case("sigterm", rss_before=rss_mb(process.pid))
    started = time.perf_counter()
    stop_at = started + 3.0
    outcomes: list[Outcome] = []

    async def client(n: int) -> None:
        pool = Connections(port)
        while time.perf_counter() < started + 30:
            instances = [{"user_id": users[(n + j) % len(users)], **i} for j, i in enumerate(LARGE_ANSWER)]
            outcome = await call(pool, "large", instances, started)
            outcomes.append(outcome)
            if outcome.status == 0:  # the server is gone, or refused: this client stops
                break
        pool.close()

    clients = [asyncio.create_task(client(n)) for n in range(24)]
    small = asyncio.create_task(small_load(port, users, 6.0, started))
    await asyncio.sleep(max(0.0, stop_at - time.perf_counter()))
    process.send_signal(signal.SIGTERM)
    signalled = time.perf_counter()
    await asyncio.gather(*clients)
    outcomes += await small
    loop = asyncio.get_running_loop()
    case.exit_code = await loop.run_in_executor(None, process.wait, 60)
    case.drained_s = time.perf_counter() - signalled
    case.outcomes, case.window = outcomes, (stop_at - started, 1e9)
    return case


# ---- the report -----------------------------------------------------------------------------------
def summary(case: Case) -> dict[str, Any]:
    small = [o for o in case.outcomes if o.kind == "small"]
    during = [
        o.seconds * 1000 for o in small if case.window[0] <= o.sent <= case.window[1] and o.status == 200
    ]
    answered = [o.seconds * 1000 for o in small if o.status == 200]
    statuses = [o.status for o in case.outcomes]
    errors = [o.error for o in case.outcomes if o.error]
    return {
        "case": case.name,
        "calls": len(case.outcomes),
        "2xx": sum(200 <= s < 300 for s in statuses),
        "4xx": sum(400 <= s < 500 for s in statuses),
        "5xx": sum(s >= 500 for s in statuses),
        "resets": errors.count("reset"),
        "resets_large": sum(o.error == "reset" and o.kind == "large" for o in case.outcomes),
        "refused": errors.count("refused"),
        "timeouts": errors.count("timeout"),
        "other_errors": sum(e.startswith("other") for e in errors),
        "degraded": sum(o.fallback for o in case.outcomes),
        "small_p50_ms": float(np.percentile(answered, 50)) if answered else float("nan"),
        "small_p99_ms": float(np.percentile(answered, 99)) if answered else float("nan"),
        "small_p99_fault_ms": float(np.percentile(during, 99)) if during else float("nan"),
        "small_max_fault_ms": float(np.max(during)) if during else float("nan"),
        "rss_growth_mb": round(case.rss_after - case.rss_before, 1) if case.rss_after else float("nan"),
        "exit_code": case.exit_code if case.exit_code is not None else "-",
        "drained_s": round(case.drained_s, 2) if case.drained_s is not None else "-",
    }


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        out.append({"target": f"{row['case']}: 0 5xx", "value": row["5xx"], "met": row["5xx"] == 0})
        out.append(
            {
                "target": f"{row['case']}: 0 connection resets",
                "value": row["resets"],
                "met": row["resets"] == 0,
            }
        )
        if row["case"] in ("redis_killed", "redis_hung", "maximal"):
            p99 = row["small_p99_fault_ms"]
            out.append(
                {
                    "target": f"{row['case']}: small p99 <= 30 ms during the fault",
                    "value": p99,
                    "met": p99 <= 30,
                }
            )
        if row["case"] == "maximal":
            growth = row["rss_growth_mb"]
            out.append({"target": "maximal: RSS growth <= 100 MB", "value": growth, "met": growth <= 100})
        if row["case"] == "sigterm":
            out.append(
                {"target": "sigterm: exit code 0", "value": row["exit_code"], "met": row["exit_code"] == 0}
            )
    return out


def plot(cases: list[Case], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(cases), 1, figsize=(10, 2.4 * len(cases)), sharex=True)
    for ax, case in zip(np.atleast_1d(axes), cases, strict=True):
        for kind, colour in (("small", "tab:blue"), ("maximal", "tab:red"), ("large", "tab:orange")):
            ok = [o for o in case.outcomes if o.kind == kind and o.status]
            if ok:
                ax.scatter([o.sent for o in ok], [o.seconds * 1000 for o in ok], s=4, c=colour, label=kind)
        failed = [o for o in case.outcomes if not o.status]
        if failed:
            ax.scatter(
                [o.sent for o in failed], [1] * len(failed), s=12, c="black", marker="x", label="no answer"
            )
        if case.window[1] < 1e8:
            ax.axvspan(*case.window, color="grey", alpha=0.15, label="fault")
        elif case.window[0] > 0:
            ax.axvline(case.window[0], color="grey", linestyle="--", label="SIGTERM")
        ax.axhline(30, color="tab:green", linewidth=0.8, linestyle=":", label="30 ms")
        ax.set_yscale("log")
        ax.set_ylabel("ms")
        ax.set_title(case.name, fontsize=9, loc="left")
        ax.legend(fontsize=7, loc="upper right")
    np.atleast_1d(axes)[-1].set_xlabel("seconds since the case started (small calls at 50/s)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model")
    parser.add_argument("--data")
    parser.add_argument("--quick", action="store_true", help="shorter cases (a smoke run)")
    parser.add_argument("--cases", default="baseline,redis_killed,redis_hung,maximal,sigterm")
    args = parser.parse_args()
    data, model = world(args)
    import pandas as pd

    users = pd.read_parquet(data / "interactions.parquet")["user_id"].astype(str).unique()[:500].tolist()
    os.sched_setaffinity(0, {1})
    redis = Redis(OUT / "redis")
    redis.start()
    cases: list[Case] = []
    try:
        repo = publish(data, model, redis)
        process, port = start_predictor(model, repo, redis, OUT / "logs" / "predictor.log")
        try:
            asyncio.run(warm(port, users))
            for name in args.cases.split(","):
                if name == "sigterm":
                    continue
                print(f"case {name} ...", flush=True)
                cases.append(asyncio.run(run_case(name, port, process.pid, redis, users, args.quick)))
                time.sleep(6.0)  # the breaker's probe closes the circuit; the next case starts clean
            if "sigterm" in args.cases.split(","):
                print("case sigterm ...", flush=True)
                cases.append(asyncio.run(sigterm_case(process, port, users)))
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    finally:
        redis.stop()
    rows = [summary(case) for case in cases]
    print_table("faults at 50 small req/s (predictor on core 0; load, faults and Redis on core 1)", rows)
    checked = targets(rows)
    print_table("targets (issue 18)", checked)
    picture = RESULTS_DIR / "faults.png"
    RESULTS_DIR.mkdir(exist_ok=True)
    plot(cases, picture)
    path = write_results("faults", {"rows": rows, "targets": checked, "quick": args.quick})
    print(f"wrote {path} and {picture}")


if __name__ == "__main__":
    main()
