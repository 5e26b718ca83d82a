"""`scenerec ...`: the command line. Thin: parse flags, call the library, print, exit.

Exit codes: 0 success, 2 bad input (data or config: one line per problem on stderr), 1 anything
else scenerec raised on purpose. Bad data never shows a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.logging import RichHandler

from scenerec.errors import run_command

# Piped output (CI logs, files) gets a wide console so metric tables are not squeezed.
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, soft_wrap=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False)],
    )
    logging.getLogger("scenerec").setLevel(logging.INFO)  # our progress lines; other libraries need -v
    return run_command(parser, args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scenerec", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(title="commands")

    data = commands.add_parser("data", help="create, import, check and split datasets").add_subparsers(
        title="data"
    )
    synth = data.add_parser("synth", help="generate the synthetic dataset with a planted structure")
    synth.add_argument("--out", type=Path, required=True)
    synth.add_argument("--users", type=int, default=None)
    synth.add_argument("--items", type=int, default=None)
    synth.add_argument("--scenes", type=int, default=None)
    synth.add_argument("--seed", type=int, default=None)
    synth.add_argument(
        "--sampler",
        choices=["auto", "dense", "sparse"],
        default="auto",
        help="dense: each event from its full distribution (cost ~ users x items); sparse: the same "
        "distribution by topic then item, for 10^5-10^6 worlds; auto (default): dense up to 5e7 "
        "user-item cells, so the same seed gives the same small world as before",
    )
    synth.add_argument(
        "--chunk-users",
        type=int,
        default=None,
        help="users simulated (and held in memory) together; changes the random sequence "
        "(default: the sampler's own, 20,000 for sparse)",
    )
    synth.set_defaults(handler=_synth)

    imp = data.add_parser("import", help="import a public dataset into the data contract")
    imp.add_argument("format", choices=["movielens"])
    imp.add_argument("--src", type=Path, required=True, help="the unpacked MovieLens directory")
    imp.add_argument("--out", type=Path, required=True)
    imp.set_defaults(handler=_import)

    validate = data.add_parser("validate", help="check a dataset directory against the data contract")
    validate.add_argument("directory", type=Path)
    validate.set_defaults(handler=_validate)

    split = data.add_parser("split", help="write the train/valid/test and cold-item splits")
    split.add_argument("directory", type=Path)
    split.add_argument("--out", type=Path, default=None, help="default: DIRECTORY/split")
    _config_flags(split)
    split.set_defaults(handler=_split)

    baselines = commands.add_parser("baselines", help="tune, fit and evaluate the baselines")
    baselines.add_argument("--data", type=Path, required=True)
    baselines.add_argument(
        "--out", type=Path, required=True, help="metrics.json to write (merged if present)"
    )
    baselines.add_argument("--report", type=Path, default=None, help="HTML report (default: beside --out)")
    _config_flags(baselines)
    baselines.set_defaults(handler=_baselines)

    train = commands.add_parser("train", help="train, evaluate and export the joint model")
    train.add_argument("--data", type=Path, required=True)
    train.add_argument("--out", type=Path, required=True, help="the model directory to write")
    train.add_argument("--baselines", type=Path, default=None, help="reuse this metrics.json's baselines")
    train.add_argument("--cache", type=Path, default=Path(".cache/scenerec"), help="text embedding cache")
    train.add_argument(
        "--warm-start",
        type=Path,
        default=None,
        help="continue from this model directory's weights (new items start from their text)",
    )
    _config_flags(train)
    train.set_defaults(handler=_train)

    evaluate = commands.add_parser("evaluate", help="recompute a model's metrics through ONNX Runtime")
    evaluate.add_argument("--data", type=Path, required=True)
    evaluate.add_argument("--model", type=Path, required=True)
    evaluate.add_argument("--out", type=Path, default=None, help="default: MODEL/metrics.json")
    evaluate.set_defaults(handler=_evaluate)

    from scenerec.features.cli import add_commands as add_feature_commands
    from scenerec.features.cli import add_event_commands, add_item_commands

    add_feature_commands(commands)
    add_event_commands(commands)
    add_item_commands(commands)
    from scenerec.pipeline_cli import add_commands as add_pipeline_commands

    add_pipeline_commands(commands)
    return parser


def _config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, help="YAML config file")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config value, e.g. --set eval.chunk_size=512",
    )


def _synth(args: argparse.Namespace) -> int:
    import dataclasses

    from scenerec.data.synthetic import SyntheticSpec, write_synthetic

    given = {
        k: getattr(args, k) for k in ("users", "items", "scenes", "seed") if getattr(args, k) is not None
    }
    spec = dataclasses.replace(SyntheticSpec(), **given)
    truth = write_synthetic(args.out, spec, sampler=args.sampler, chunk_users=args.chunk_users)
    oracle = truth["oracle"]["test"]
    sampler = truth.get("sampler", {}).get("name", "dense")
    console.print(
        f"wrote {args.out} ({spec.users} users, {spec.items} items, {spec.scenes} scenes, {sampler}); "
        f"oracle test ndcg@10={oracle['ndcg@10']:.4f} hr@10={oracle['hr@10']:.4f}"
    )
    return 0


def _import(args: argparse.Namespace) -> int:
    from scenerec.data.movielens import import_movielens

    summary = import_movielens(args.src, args.out)
    console.print(f"wrote {args.out}: {json.dumps(summary)}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from scenerec.data.validate import validate_dataset

    result = validate_dataset(args.directory)
    if result.problems:
        for line in result.problems:
            err_console.print(f"[red]invalid:[/red] {line}", highlight=False, soft_wrap=True)
        err_console.print(f"{len(result.problems)} problem(s) in {args.directory}")
        return 2
    sizes = ", ".join(f"{name}: {len(frame):,} rows" for name, frame in result.tables.items())
    console.print(f"[green]valid[/green] {args.directory} ({sizes})")
    return 0


def _split(args: argparse.Namespace) -> int:
    from scenerec.config import load_config
    from scenerec.data.dataset import load_dataset
    from scenerec.data.split import write_splits

    config = load_config(args.config, args.overrides)
    dataset = load_dataset(args.directory, config.data)
    out = args.out or args.directory / "split"
    counts = write_splits(dataset, config.data, out)
    console.print(f"wrote {out}: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    return 0


def _baselines(args: argparse.Namespace) -> int:
    from scenerec.baselines.runner import run_baselines
    from scenerec.config import load_config
    from scenerec.data.dataset import load_dataset
    from scenerec.data.io import write_json
    from scenerec.report import collect_rows, write_report
    from scenerec.tables import metrics_table

    config = load_config(args.config, args.overrides)
    started = time.perf_counter()
    dataset = load_dataset(args.data, config.data)
    with console.status("baselines") as status:
        results = run_baselines(dataset, config, on_progress=lambda name: status.update(f"baseline {name}"))
    metrics: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {}
    metrics.update({"baselines": results, "dataset": dataset.summary(), "config": config.to_dict()})
    write_json(metrics, args.out)
    truth_path = args.data / "truth.json"
    truth = json.loads(truth_path.read_text()) if truth_path.is_file() else None
    report = write_report(metrics, args.report or args.out.with_name("report.html"), truth)
    console.print(metrics_table(collect_rows(metrics, truth)))
    console.print(f"wrote {args.out} and {report} in {time.perf_counter() - started:.1f} s")
    return 0


def _train(args: argparse.Namespace) -> int:
    from scenerec.config import load_config
    from scenerec.report import collect_rows
    from scenerec.tables import metrics_table
    from scenerec.train import train

    config = load_config(args.config, args.overrides)
    metrics = train(
        args.data,
        args.out,
        config,
        baselines_from=args.baselines,
        cache_dir=args.cache,
        warm_start=args.warm_start,
    )
    if not metrics:  # a non-zero torchrun rank: rank 0 writes and reports
        return 0
    truth = _truth(args.data)
    console.print(metrics_table(collect_rows(metrics, truth)))
    console.print(f"wrote {args.out} (report: {args.out / 'report.html'}) in {metrics['seconds']:.0f} s")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from scenerec.report import collect_rows
    from scenerec.tables import metrics_table
    from scenerec.train import evaluate_model_dir

    metrics = evaluate_model_dir(args.data, args.model, args.out)
    console.print(metrics_table(collect_rows(metrics, _truth(args.data))))
    return 0


def _truth(data: Path) -> dict[str, Any] | None:
    path = data / "truth.json"
    return json.loads(path.read_text()) if path.is_file() else None


if __name__ == "__main__":
    sys.exit(main())
