"""Typed errors that the CLI turns into one clear line each and a non-zero exit.

Each error type maps to one exit code in one place (`scenerec.cli`), so a caller never has to parse
messages to know what went wrong.
"""

from __future__ import annotations


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
