"""`scenerec pipeline run`: the Kubeflow training pipeline on this machine (kfp.local, no Docker).

The library never imports kfp: this module only declares the command. Its handler imports
`pipelines.local_run`, which lives beside `scenerec/` in the source checkout, when the command runs.
`scenerec.cli` adds the command with `pipeline_cli.add_commands(commands)`; `python -m
scenerec.pipeline_cli run ...` runs it on its own.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from rich.console import Console
from rich.table import Table

from scenerec.errors import ScenerecError, run_command

DEFAULT_ROOT = Path("build/pipeline_root")  # the same default as pipelines.local_run
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)


def add_commands(commands: Any) -> None:
    """Add `pipeline run` to the `scenerec` sub-command parsers."""
    pipeline = commands.add_parser("pipeline", help="the Kubeflow training pipeline").add_subparsers(
        title="pipeline"
    )
    run = pipeline.add_parser(
        "run", help="run the whole pipeline locally with kfp's SubprocessRunner (cached steps are reused)"
    )
    run.add_argument(
        "--data", type=Path, default=None, help="dataset directory (default: the synthetic dataset)"
    )
    run.add_argument(
        "--pipeline-root",
        type=Path,
        default=DEFAULT_ROOT,
        help=f"where artifacts go (default: {DEFAULT_ROOT})",
    )
    run.add_argument("--no-cache", action="store_true", help="run every step even if kfp has its outputs")
    run.add_argument(
        "--deploy", action="store_true", help="apply the InferenceService to the kubeconfig's cluster"
    )
    run.add_argument("--config", type=Path, default=None, help="YAML config file")
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config value, e.g. --set train.epochs=5",
    )
    run.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from scenerec.config import load_config

    config = load_config(args.config, args.overrides)
    local_run = _local_run_module()
    data = args.data if args.data is not None else local_run.synthetic_data(args.pipeline_root)
    try:
        result = local_run.run_local(
            data, config, args.pipeline_root, cache=not args.no_cache, deploy=args.deploy
        )
    except local_run.PipelineRunError as e:
        console.print(steps_table(e.steps))
        raise
    console.print(steps_table(result.steps, result.seconds))
    console.print(f"model directory: {result.model_dir}")
    console.print(f"feature repo:    {result.feature_repo}")
    console.print(f"InferenceService: {result.inference_service}")
    return 0


def steps_table(steps: Sequence[Any], total: float | None = None) -> Table:
    """Each step's status and wall time (subprocess start-up included)."""
    table = Table(title="pipeline steps", title_justify="left")
    table.add_column("step", style="bold")
    table.add_column("status")
    table.add_column("seconds", justify="right")
    colours = {"ran": "green", "cached": "cyan", "failed": "red"}
    for step in steps:
        colour = colours.get(step.status, "white")
        table.add_row(step.name, f"[{colour}]{step.status}[/{colour}]", f"{step.seconds:.1f}")
    if total is not None:
        table.add_row("total (wall)", "", f"{total:.1f}")
    return table


def _local_run_module() -> ModuleType:
    """`pipelines.local_run`, from the checkout this scenerec was imported from if not on sys.path."""
    try:
        return importlib.import_module("pipelines.local_run")
    except ModuleNotFoundError as e:
        if e.name not in ("pipelines", "pipelines.local_run"):
            raise
    checkout = Path(__file__).resolve().parents[1]
    if not (checkout / "pipelines" / "local_run.py").is_file():
        raise ScenerecError(
            f"scenerec pipeline run needs the source checkout (pipelines/ and components/ beside "
            f"scenerec/), not found in {checkout}"
        )
    sys.path.insert(0, str(checkout))  # the console script's sys.path holds the venv, not the checkout
    return importlib.import_module("pipelines.local_run")


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m scenerec.pipeline_cli run ...`: the command without the rest of `scenerec`."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    parser = argparse.ArgumentParser(prog="scenerec")
    add_commands(parser.add_subparsers(title="commands"))
    args = parser.parse_args(["pipeline", *(sys.argv[1:] if argv is None else argv)])
    return run_command(parser, args)


if __name__ == "__main__":
    sys.exit(main())
