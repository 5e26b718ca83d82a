"""Reading what people and programs push: a parquet or CSV file, or a body of JSON lines.

Shared by events (`scenerec.features.events`) and catalogue changes (`scenerec.features.items`);
each checks the rows itself, naming the row (file) or line (body) and the field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from scenerec.errors import DataError


def read_table_file(path: str | Path, what: str) -> pd.DataFrame:
    """A parquet or CSV file (CSV as strings, empty cells kept empty); `what` names it in errors."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} file not found (expected .parquet or .csv)")
    try:
        if path.suffix.lower() == ".parquet":
            return pd.read_parquet(path)
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot be read ({e})") from e
    raise DataError(f"{path}: unknown {what} format {path.suffix!r} (expected .parquet or .csv)")


def read_json_lines(body: bytes, source: str, what: str) -> list[dict[str, Any]]:
    """The objects of a body of JSON lines (a JSON array of objects is taken too), in order.

    Raises UnicodeDecodeError for a body that is not UTF-8 (the routes answer it with a 400)."""
    text = body.decode("utf-8", errors="strict") if body else ""
    stripped = text.strip()
    values: list[Any] = []
    if stripped.startswith("["):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as e:
            raise DataError(f"{source}: not valid JSON ({e.msg} at line {e.lineno})") from e
        values = data if isinstance(data, list) else [data]
    else:
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    values.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise DataError(f"{source}: line {number}: not valid JSON ({e.msg})") from e
    for number, value in enumerate(values, start=1):
        if not isinstance(value, dict):
            raise DataError(f"{source}: line {number}: expected a JSON object of {what} fields")
    return values
