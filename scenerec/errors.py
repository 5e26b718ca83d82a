"""Typed errors that the CLI turns into one clear line each and a non-zero exit.

Each error type maps to one exit code in one place (`scenerec.cli`), so a caller never has to parse
messages to know what went wrong.
"""

from __future__ import annotations

import argparse


class ScenerecError(Exception):
    """Base class for every error scenerec raises on purpose."""

    exit_code = 1


class ConfigError(ScenerecError):
    """A configuration key is unknown, of the wrong type, or out of range."""

    exit_code = 2


class DataError(ScenerecError):
    """Input data breaks the data contract. `problems` holds one human-readable line per problem."""

    exit_code = 2

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


def run_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Run a parsed subcommand's handler: its exit code, or for a ScenerecError one red line per
    problem on stderr and the error's exit code; without a subcommand, the help and exit 2.

    The one dispatch of `scenerec` and of the entry points that carry only part of it.
    """
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except ScenerecError as e:
        from rich.console import Console

        err = Console(stderr=True, soft_wrap=True)
        for line in str(e).splitlines():
            err.print(f"[red]error:[/red] {line}", highlight=False, soft_wrap=True)
        return e.exit_code
