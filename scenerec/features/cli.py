"""`scenerec features ...`: the Feast commands, registered into scenerec's CLI by `add_commands`.

    scenerec features publish --data DIR --model MODEL_DIR --repo feature_repo [--batch-rows 20000]
                              [--config feature_store.yaml | --online-store sqlite|redis]
    scenerec events push --data EVENTS.parquet|csv --model MODEL_DIR --repo feature_repo
                         [--config feature_store.yaml | --online-store sqlite|redis]
    scenerec items add|hide|show|remove (--data ITEMS.parquet|csv | --ids ID,…) --model MODEL_DIR
                         --repo feature_repo [--config … | --online-store …]

Thin, like `scenerec.cli`: parse, call the library, print. Errors are `ScenerecError`s, which the
main CLI turns into one line each and an exit code (2 for a bad repo, config, model or data).
`python -m scenerec.features.cli ...` runs the same commands on their own.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from scenerec.features.repo import ONLINE_STORE_YAMLS

console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)


def add_commands(commands: Any) -> None:
    """Register `features publish` on the main parser's subcommands (`add_subparsers()` result)."""
    features = commands.add_parser("features", help="publish features to Feast").add_subparsers(
        title="features"
    )
    publish = features.add_parser(
        "publish",
        help="write the offline sources from data + model, then feast apply and materialize",
        description="Idempotent: a rerun changes nothing; a failed run leaves the online store readable.",
    )
    publish.add_argument(
        "--data", type=Path, required=True, help="the dataset directory the model was trained on"
    )
    publish.add_argument(
        "--model", type=Path, required=True, help="the model directory (its manifest names the service)"
    )
    publish.add_argument(
        "--batch-rows",
        type=int,
        default=None,
        help="entities per online write and parquet append (default 20,000): memory holds one batch",
    )
    _store_arguments(publish)
    publish.set_defaults(handler=_publish)


def _store_arguments(parser: argparse.ArgumentParser) -> None:
    """--repo, --config | --online-store and --json: how every command here finds its store."""
    parser.add_argument("--repo", type=Path, required=True, help="the Feast feature repo (feature_repo/)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--config", type=Path, default=None, help="the feature_store yaml (default: by --online-store)"
    )
    which.add_argument(
        "--online-store",
        choices=sorted(ONLINE_STORE_YAMLS),
        default=None,
        help="sqlite: feature_store.yaml (default); redis: feature_store.redis.yaml (needs SCENEREC_REDIS)",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def _state_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where the event and catalogue logs live, as the predictors' --state_dir (default: --repo; "
        "on Kubernetes the shared writable volume, since the repo is a read-only ConfigMap)",
    )


def add_event_commands(commands: Any) -> None:
    """Register `events push` on the main parser's subcommands."""
    events = commands.add_parser("events", help="push fresh events into the feature store").add_subparsers(
        title="events"
    )
    push = events.add_parser(
        "push",
        help="fold new interactions into the users' features (Feast push), and log them",
        description="Idempotent: events already pushed (the same event_id, or the same fields) change "
        "nothing. Bad rows are refused by row and field before anything is written (exit 2); a store "
        "that fails during the push accepts nothing (exit 3: retry).",
    )
    push.add_argument(
        "--data", type=Path, required=True, help="events: parquet or CSV in the interaction columns"
    )
    push.add_argument(
        "--model", type=Path, required=True, help="the served model (its config: history length, conversions)"
    )
    _store_arguments(push)
    _state_argument(push)
    push.set_defaults(handler=_push_events)


_ITEM_ACTIONS = {
    "add": "new items: embedded with the model's text encoder, served by every predictor following "
    "the repo from its next batch",
    "hide": "out of stock: never in an answer until `items show`",
    "show": "hidden items back in answers",
    "remove": "an added item is forgotten; a trained item is hidden (it cannot leave the exported graphs)",
}


def add_item_commands(commands: Any) -> None:
    """Register `items add|hide|show|remove` on the main parser's subcommands."""
    items = commands.add_parser(
        "items", help="add, hide, show or remove catalogue items live"
    ).add_subparsers(title="items")
    for action, help_text in _ITEM_ACTIONS.items():
        parser = items.add_parser(
            action,
            help=help_text,
            description=f"{help_text}. Bad rows are refused by row and field before anything is written "
            "(exit 2); a store that fails accepts nothing (exit 3: retry).",
        )
        which = parser.add_mutually_exclusive_group(required=True)
        columns = "item_id, title, text, category" if action == "add" else "item_id"
        which.add_argument("--data", type=Path, help=f"parquet or CSV with {columns}")
        if action != "add":
            which.add_argument("--ids", help="comma-separated item ids")
        parser.add_argument("--model", type=Path, required=True, help="the served model directory")
        _store_arguments(parser)
        _state_argument(parser)
        parser.set_defaults(handler=_change_items, action=action)


def _change_items(args: argparse.Namespace) -> int:
    from scenerec.artifact import read_manifest
    from scenerec.catalogue import CatalogueLog
    from scenerec.features.items import ItemWriter, check_item_records, parse_item_file
    from scenerec.features.model_ids import ModelIds
    from scenerec.features.repo import open_store, resolve_yaml
    from scenerec.item_encoder import ItemEncoder

    if args.data is not None:  # read and checked before any store is opened
        changes, source, row_label = parse_item_file(args.data, args.action), str(args.data), "row"
    else:
        ids = [{"item_id": i} for i in args.ids.split(",")]
        changes, source, row_label = check_item_records(ids, "--ids", "id", args.action), "--ids", "id"
    manifest = read_manifest(args.model)
    encoder = ItemEncoder(args.model, manifest, threads=None)
    store = open_store(args.repo, resolve_yaml(args.repo, args.config, args.online_store))
    trained = ModelIds.load(args.model, manifest).items
    writer = ItemWriter(
        store,
        CatalogueLog.of_repo(args.state_dir or args.repo),
        encoder,
        trained,
        (args.state_dir or args.repo) / "data",
        offline=True,
    )
    result = writer.apply(changes, source, row_label)
    if args.json:
        console.print_json(json.dumps(result.summary()))
        return 0
    done = ", ".join(f"{k} {v:,}" for k, v in result.summary().items() if k not in ("received", "seconds"))
    console.print(f"{args.action}: {result.received:,} item(s) in {result.seconds:.2f} s ({done})")
    return 0


def _push_events(args: argparse.Namespace) -> int:
    from scenerec.artifact import read_manifest
    from scenerec.config import Config
    from scenerec.features.events import EventLog, EventPusher, parse_event_file
    from scenerec.features.model_ids import ModelIds
    from scenerec.features.repo import open_store, resolve_yaml

    events = parse_event_file(args.data)  # before any store is opened
    manifest = read_manifest(args.model)
    known = set(ModelIds.load(args.model, manifest).items)
    store = open_store(args.repo, resolve_yaml(args.repo, args.config, args.online_store))
    log = EventLog.of_repo(args.state_dir or args.repo)
    pusher = EventPusher(store, log, Config.from_dict(manifest["config"]), known)
    result = pusher.push(events)
    if args.json:
        console.print_json(json.dumps(result.summary()))
        return 0
    console.print(
        f"pushed {result.accepted:,} of {result.received:,} events ({result.duplicates:,} already pushed, "
        f"{result.unknown_items:,} on items the model does not know) for {result.users:,} users "
        f"in {result.seconds:.2f} s"
    )
    return 0


def _publish(args: argparse.Namespace) -> int:
    from scenerec.errors import ConfigError
    from scenerec.features.publish import BATCH_ROWS, publish, summary

    batch_rows = BATCH_ROWS if args.batch_rows is None else args.batch_rows
    if batch_rows < 1:
        raise ConfigError(f"--batch-rows: expected at least 1, got {batch_rows}")
    result = publish(
        args.data,
        args.model,
        args.repo,
        config=args.config,
        online_store=args.online_store,
        batch_rows=batch_rows,
    )
    if args.json:
        console.print_json(json.dumps(summary(result)))
        return 0
    rows = ", ".join(f"{entity}s {count:,}" for entity, count in result.rows.items())
    console.print(
        f"published {result.feature_service} to the {result.online_store} online store of {result.repo}: "
        f"{rows} ({len(result.views)} views) in {result.seconds:.1f} s"
    )
    if result.memory is not None:
        growth = result.memory["growth_bytes"]
        console.print(
            f"redis used_memory {result.memory['used_memory_bytes']:,} B; grew {growth['user']:,} B while "
            f"writing users ({result.memory['bytes_per_user']} B/user; ~0 when rows are overwritten)"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The same commands without the rest of scenerec's CLI (exit codes as in `scenerec.cli`)."""
    from scenerec.errors import run_command

    parser = argparse.ArgumentParser(prog="scenerec")
    commands = parser.add_subparsers(title="commands")
    add_commands(commands)
    add_event_commands(commands)
    add_item_commands(commands)
    args = parser.parse_args(argv)
    return run_command(parser, args)


if __name__ == "__main__":
    sys.exit(main())
