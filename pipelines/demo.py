"""`make demo`: synthetic logs -> the Kubeflow pipeline on this machine -> a served, ranked answer.

1. generate the default synthetic dataset (seeded; reused when it already exists);
2. run the whole training pipeline with kfp.local (validate, split, baselines, embed, train +
   ONNX export, evaluate gate, publish features to Feast, render the InferenceService);
3. start the KServe predictor on a loopback port with the model and the published feature repo;
4. ask it for recommendations in each scene, for a user it has never seen, with explanations;
5. print the metrics against the baselines and the oracle, point to the HTML report and to the
   explorer page (`/ui/`), then stop the server, or keep it up until Ctrl-C with `--keep-serving`.

The ablations and the cold-item protocol (each a further training run) are left to
`benchmarks/quality.py` to keep the demo within a few minutes; pass
`--set train.cold_start_eval=true --set train.ablations=[no_text,no_scene,no_sequence,lambda_zero]`
to include them.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
from rich.console import Console
from rich.table import Table

from pipelines.local_run import DEFAULT_ROOT, run_local, synthetic_data
from scenerec.config import load_config
from scenerec.report import collect_rows
from scenerec.tables import metrics_table
from serving.launch import PredictorNotReady, free_port, predictor_command, predictor_env, wait_until_ready

console = Console(width=None if sys.stdout.isatty() else 160)
DEMO_SETTINGS = ["train.ablations=[]", "train.cold_start_eval=false"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--pipeline-root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument(
        "--keep-serving",
        action="store_true",
        help="keep the predictor up after the demo (open its explorer page) until Ctrl-C",
    )
    parser.add_argument("--port", type=int, default=0, help="the predictor's HTTP port (default: a free one)")
    args = parser.parse_args()
    started = time.perf_counter()
    config = load_config(None, [*DEMO_SETTINGS, *args.overrides])
    console.rule("1. synthetic data")
    data = synthetic_data(args.pipeline_root)
    console.print(f"dataset: {data}")
    console.rule("2. the training pipeline (kfp.local, SubprocessRunner)")
    run = run_local(data, config, args.pipeline_root)
    steps = Table(title="pipeline steps", title_justify="left")
    for column in ("step", "status", "seconds"):
        steps.add_column(column, justify="right" if column == "seconds" else "left")
    for step in run.steps:
        steps.add_row(step.name, step.status, f"{step.seconds:.1f}")
    console.print(steps)
    console.rule("3. the predictor (KServe ModelServer on loopback)")
    port, grpc = args.port or free_port(), free_port()
    server = _serve(run.model_dir, run.feature_repo, port, grpc)
    try:
        console.rule("4. ranked answers")
        _ask(port, data)
        console.rule("5. metrics")
        metrics = json.loads((run.model_dir / "metrics.json").read_text())
        truth = json.loads((data / "truth.json").read_text())
        console.print(metrics_table(collect_rows(metrics, truth)))
        console.print(f"HTML report: {run.model_dir / 'report.html'}")
        console.print(f"model directory: {run.model_dir}\nfeature repo: {run.feature_repo}")
        console.print(f"demo finished in {time.perf_counter() - started:.0f} s")
        if args.keep_serving:
            _keep_serving(server, port)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    return 0


def _keep_serving(server: subprocess.Popen[bytes], port: int) -> None:
    """Until Ctrl-C (or the predictor exits): a person can open the explorer page meanwhile."""
    console.print(f"serving until Ctrl-C: explorer page http://127.0.0.1:{port}/ui/")
    try:
        server.wait()
    except KeyboardInterrupt:
        console.print("stopping the predictor")


def _serve(model_dir: Path, repo: Path, port: int, grpc: int) -> subprocess.Popen[bytes]:
    log = model_dir.parent / "predictor.log"
    with log.open("wb") as handle:
        server = subprocess.Popen(
            predictor_command(model_dir, repo, port, grpc),
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=predictor_env(),
        )
    with console.status(f"starting the predictor on 127.0.0.1:{port} ..."):
        try:
            wait_until_ready(server, port, log)
        except PredictorNotReady as e:
            raise SystemExit(str(e)) from e
    console.print(f"ready: http://127.0.0.1:{port} (gRPC 127.0.0.1:{grpc}), log {log}")
    console.print(f"explorer page: http://127.0.0.1:{port}/ui/")
    return server


def _ask(port: int, data: Path) -> None:
    log = pd.read_parquet(data / "interactions.parquet")
    titles = pd.read_parquet(data / "items.parquet").set_index("item_id")["title"]
    user = str(log["user_id"].value_counts().index[0])
    asks = [
        {"user_id": user, "scene": scene, "context": {"device": "mobile"}, "k": 5, "explain": True}
        for scene in sorted(log["scene"].unique())
    ]
    asks.append({"user_id": "someone-new", "scene": "home", "k": 5, "explain": True})
    response = httpx.post(
        f"http://127.0.0.1:{port}/v1/models/scenerec:predict", json={"instances": asks}, timeout=30
    )
    response.raise_for_status()
    for ask, answer in zip(asks, response.json()["predictions"], strict=True):
        _print_answer(ask, answer, titles)


def _print_answer(ask: dict[str, Any], answer: dict[str, Any], titles: pd.Series) -> None:
    flag = f" — fallback: {answer['fallback']}" if answer["fallback"] else ""
    table = Table(title=f"user {ask['user_id']} in scene '{ask['scene']}'{flag}", title_justify="left")
    for column in (
        "#",
        "item",
        "title",
        "score",
        "collaborative",
        "text",
        "scene",
        "item-item",
        "p(conversion)",
    ):
        table.add_column(column, justify="left" if column in ("item", "title") else "right")
    for rank, item in enumerate(answer["items"], start=1):
        parts = item["parts"]
        table.add_row(
            str(rank),
            item["item_id"],
            str(titles.get(item["item_id"], "")),
            f"{item['score']:.3f}",
            f"{parts['collaborative']:.3f}",
            f"{parts['text']:.3f}",
            f"{parts['scene']:.3f}",
            f"{parts['item_item']:.3f}",
            f"{item['p_conversion']:.2f}",
        )
    console.print(table)


if __name__ == "__main__":
    sys.exit(main())
