"""`python -m serving --model_name scenerec --model_dir DIR --feature_repo DIR --http_port P --grpc_port Q`.

Thin: parse flags (ours plus KServe's own, strictly: a misspelt flag is an error here, where
KServe alone would ignore it), build the predictor, start KServe's ModelServer.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from serving.breaker import BreakerSettings  # light: no KServe, Feast or ONNX imports

if TYPE_CHECKING:
    from serving.admission import Limits


def _prepare_multiprocess_metrics(argv: list[str]) -> str | None:
    """With several workers, prometheus_client must know its shared directory before it is imported.

    The directory is new for each start (a stale one would add a previous run's counts) and the
    caller removes it at exit; one set from outside (PROMETHEUS_MULTIPROC_DIR) is left alone.
    """
    workers = 1
    for n, arg in enumerate(argv):
        if arg == "--workers" and n + 1 < len(argv):
            workers = int(argv[n + 1]) if argv[n + 1].isdigit() else 1
        elif arg.startswith("--workers="):
            workers = int(arg.split("=", 1)[1]) if arg.split("=", 1)[1].isdigit() else 1
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="scenerec-metrics-")
        return os.environ["PROMETHEUS_MULTIPROC_DIR"]
    return None


def parse_args(argv: list[str]) -> argparse.Namespace:
    from kserve import model_server

    from serving.admission import Limits

    parser = argparse.ArgumentParser(
        prog="python -m serving", parents=[model_server.parser], description=__doc__.splitlines()[0]
    )
    parser.add_argument("--model_dir", required=True, help="a scenerec model directory (manifest.json ...)")
    parser.add_argument("--feature_repo", required=True, help="the Feast repo the model's features live in")
    parser.add_argument(
        "--state_dir",
        default=None,
        help="where pushed events and catalogue changes are logged and followed (default: "
        "--feature_repo); on Kubernetes a volume every replica shares, writable (the repo is a "
        "read-only ConfigMap there); `scenerec events push` / `items add` take it as --state-dir",
    )
    parser.add_argument(
        "--feature_config",
        default=None,
        help="feature_store yaml (default: FEATURE_REPO/feature_store.yaml, the SQLite store)",
    )
    parser.add_argument(
        "--feature_timeout_ms",
        type=float,
        default=50.0,
        help="deadline of one online read, for a whole scoring batch; past it the batch's answers "
        "degrade to defaults (flagged and counted)",
    )
    breaker = parser.add_argument_group("feature store circuit breaker (serving/breaker.py)")
    breaker.add_argument(
        "--breaker_failures",
        type=int,
        default=BreakerSettings.failures,
        help="failed reads within --breaker_window_s that open the circuit (the store is then skipped)",
    )
    breaker.add_argument("--breaker_window_s", type=float, default=BreakerSettings.window_s)
    breaker.add_argument(
        "--breaker_backoff_ms",
        type=float,
        default=BreakerSettings.backoff_s * 1000,
        help="wait before the first probe of an open circuit; doubled after each failed probe",
    )
    breaker.add_argument("--breaker_max_backoff_ms", type=float, default=BreakerSettings.max_backoff_s * 1000)
    parser.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cuda", "cpu"],
        help="ONNX Runtime provider: auto = CUDA when a GPU is present (fallback logged)",
    )
    parser.add_argument("--ort_threads", type=int, default=1, help="ONNX Runtime intra-op threads per graph")
    parser.add_argument("--retrieval_depth", type=int, default=200, help="candidates the ranker re-scores")
    parser.add_argument(
        "--retrieval",
        default="auto",
        choices=["auto", "exact"],
        help="auto: search the model's ANN index when it has one (large catalogues, scenerec/ann.py); "
        "exact: always score the whole catalogue in retrieval.onnx",
    )
    parser.add_argument(
        "--batching",
        default="auto",
        choices=["auto", "on", "off"],
        help="auto: a request that finds the server idle is scored at once on the event loop, requests "
        "under load are batched on one scoring thread; on: always the thread (batches; the loop stays "
        "free); off: always the event loop, one request at a time",
    )
    parser.add_argument(
        "--batching_idle_ms",
        type=float,
        default=1.0,
        help="with --batching auto: idle time after which a lone request is scored on the event loop",
    )
    parser.add_argument(
        "--model_watch_s",
        type=float,
        default=0.0,
        help="check --model_dir's manifest every this many seconds and swap to a new version that passes "
        "its checks, without dropping a request (0: off; POST /v2/repository/models/NAME/load does "
        "the same on demand)",
    )
    parser.add_argument("--max_body_bytes", type=int, default=1 << 20, help="larger request bodies get 413")
    parser.add_argument(
        "--no_ui",
        action="store_true",
        help="do not serve the explorer page (/ui/: a user, a scene -> the ranking and why, through V1)",
    )
    parser.add_argument(
        "--drain_seconds",
        type=float,
        default=20.0,
        help="on SIGTERM: how long to keep answering calls already on the wire (new connections are "
        "refused, answers carry Connection: close, readiness is 503) before what is left is cut; "
        "the pod's terminationGracePeriodSeconds must exceed preStop + this",
    )
    limits = parser.add_argument_group("per-call limits and the large-call lane (serving/admission.py)")
    limits.add_argument(
        "--max_items",
        type=int,
        default=Limits.max_items,
        help="items one call may ask for (instances x k, or its candidates when fewer); past it: 413",
    )
    limits.add_argument(
        "--max_explained_items",
        type=int,
        default=Limits.max_explained_items,
        help="of those, items answered with their score's parts (explain: true); past it: 413",
    )
    limits.add_argument(
        "--max_answer_bytes",
        type=int,
        default=Limits.max_answer_bytes,
        help="the most a call's answer may be (bounded from the longest item id); past it: 413",
    )
    limits.add_argument(
        "--large_items",
        type=int,
        default=Limits.large_items,
        help="calls above this many items (an explained one counts 3) are scored on their own lane, "
        "one at a time, so small calls never queue behind them",
    )
    limits.add_argument(
        "--max_large_queued",
        type=int,
        default=Limits.max_large_queued,
        help="large calls waiting or being scored at once; the next one gets 429 with Retry-After",
    )
    return parser.parse_args(argv)


def call_limits(args: argparse.Namespace) -> Limits:
    """The per-call limit flags, validated (a bad value exits 2 naming the flag)."""
    from serving.admission import Limits

    try:
        return Limits(
            max_items=args.max_items,
            max_explained_items=args.max_explained_items,
            max_answer_bytes=args.max_answer_bytes,
            large_items=args.large_items,
            max_large_queued=args.max_large_queued,
        )
    except ValueError as e:
        print(f"python -m serving: error: --{e}", file=sys.stderr)
        raise SystemExit(2) from e


def breaker_settings(args: argparse.Namespace) -> BreakerSettings:
    """The circuit breaker's flags, validated (a bad value exits 2 naming the flag)."""
    try:
        return BreakerSettings(
            failures=args.breaker_failures,
            window_s=args.breaker_window_s,
            backoff_s=args.breaker_backoff_ms / 1000,
            max_backoff_s=args.breaker_max_backoff_ms / 1000,
        )
    except ValueError as e:
        print(f"python -m serving: error: --breaker_*: {e}", file=sys.stderr)
        raise SystemExit(2) from e


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    metrics_dir = _prepare_multiprocess_metrics(argv)
    try:
        serve(parse_args(argv))
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


DEFAULT_LOG_CONFIG = Path(__file__).with_name("log_config.yaml")


def configure_logging(log_config_file: str | None) -> str:
    """Our quiet default (no line per request) unless `--log_config_file` names another file.

    KServe reads the file from its own module-level flags (parsed from sys.argv at import), in
    ModelServer and again in each `--workers` process: both are pointed at the same file here.
    """
    from kserve import logging as kserve_logging
    from kserve import model_server

    chosen = log_config_file or str(DEFAULT_LOG_CONFIG)
    kserve_logging.configure_logging(chosen)
    model_server.args.log_config_file = chosen
    return chosen


def serve(args: argparse.Namespace) -> None:
    from kserve import ModelServer

    from serving.http import install_http_extras
    from serving.predictor import ScenerecModel
    from serving.repository import LoadedModelsRepository, ServedModels

    configure_logging(args.log_config_file)
    http_extras = functools.partial(
        install_http_extras,
        max_body_bytes=args.max_body_bytes,
        drain_seconds=args.drain_seconds,
        ui=not args.no_ui,
    )
    http_extras()  # here, and again in each --workers process (see ServedModels)
    model = ScenerecModel(
        args.model_name,
        args.model_dir,
        feature_repo=args.feature_repo,
        feature_config=args.feature_config,
        feature_timeout_s=args.feature_timeout_ms / 1000,
        device=args.device,
        retrieval_depth=args.retrieval_depth,
        threads=args.ort_threads,
        batching=args.batching,
        idle_s=args.batching_idle_ms / 1000,
        breaker=breaker_settings(args),
        limits=call_limits(args),
        watch_s=args.model_watch_s,
        retrieval=args.retrieval,
        state_dir=args.state_dir,
    )
    model.load()
    server = ModelServer(
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        workers=args.workers,
        registered_models=ServedModels(worker_setup=http_extras),
        enable_grpc=args.enable_grpc,
        enable_docs_url=args.enable_docs_url,
        enable_latency_logging=args.enable_latency_logging,
        grace_period=max(1, int(args.drain_seconds)),  # gRPC's grace, and uvicorn's after the drain
    )
    server.model_repository_extension = LoadedModelsRepository(server.registered_models)
    server.start([model])


if __name__ == "__main__":
    main()
