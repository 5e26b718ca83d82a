"""Checking a dataset directory against the data contract.

Every problem becomes one line that names the file, the column, the rows (first few) and what was
expected. Checks never raise on bad data: they collect, so a user fixes everything in one pass.
The normalised tables (contract types, defaults filled) come back with the problems, so loading
and validating are one pass over the data.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from scenerec.data.io import find_table, read_raw_table
from scenerec.data.schema import (
    FORMATS,
    INTERACTIONS,
    ITEM_ID,
    ITEMS,
    KNOWN_EXTRA_FILES,
    TABLES,
    TEXT,
    TITLE,
    Column,
    TableSpec,
)
from scenerec.errors import DataError

_SHOWN_ROWS = 5
# An offset after a time of day; a bare date such as 2024-05-01 has none (its "-01" is the day).
_TZ_SUFFIX = re.compile(
    r"[T\s]\d{2}(?::?\d{2}){0,2}(?:[.,]\d+)?\s*(?:Z|[+-]\d{2}(?::?\d{2})?)$", re.IGNORECASE
)
_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")
_NS_RANGE = (pd.Timestamp.min.tz_localize("UTC"), pd.Timestamp.max.tz_localize("UTC"))


@dataclass
class ValidationResult:
    """The problems found, and the tables normalised to the contract's types (when readable)."""

    problems: list[str] = field(default_factory=list)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def validate_dataset(directory: str | Path) -> ValidationResult:
    """Check every file of a dataset directory; never raises for bad data."""
    directory = Path(directory)
    result = ValidationResult()
    if not directory.is_dir():
        result.problems.append(f"{directory}: not a directory (expected a dataset directory)")
        return result
    result.problems.extend(_unknown_files(directory))
    checks: dict[str, _TableCheck] = {}
    for spec in TABLES:
        path = find_table(directory, spec)
        if path is None:
            if spec.required:
                result.problems.append(
                    f"{spec.name}: missing file "
                    f"(expected {spec.name}.parquet or {spec.name}.csv in {directory})"
                )
            continue
        try:
            # the log's text columns as categoricals (its size is the data's; the other tables' is not)
            texts = (
                [c.name for c in spec.columns if c.kind in ("id", "string")] if spec is INTERACTIONS else []
            )
            raw = read_raw_table(path, dictionary=texts)
        except DataError as e:
            result.problems.extend(e.problems)
            continue
        table = checks[spec.name] = _TableCheck(path, spec, raw)
        result.problems.extend(table.problems)
        if table.frame is not None:
            result.tables[spec.name] = table.frame
    result.problems.extend(_references(directory, checks))
    return result


def require_valid(directory: str | Path) -> dict[str, pd.DataFrame]:
    """The normalised tables, or `DataError` listing every problem."""
    result = validate_dataset(directory)
    if result.problems:
        raise DataError(result.problems)
    return result.tables


def _unknown_files(directory: Path) -> list[str]:
    problems = []
    expected = {f"{spec.name}{suffix}" for spec in TABLES for suffix in FORMATS}
    for spec in TABLES:
        present = [s for s in FORMATS if (directory / f"{spec.name}{s}").is_file()]
        if len(present) > 1:
            problems.append(
                f"{spec.name}: both {spec.name}.parquet and {spec.name}.csv exist "
                "(expected exactly one; the parquet file would win, remove the other)"
            )
    for entry in sorted(directory.iterdir()):
        name = entry.name
        if name in expected or name in KNOWN_EXTRA_FILES or name.startswith("."):
            continue
        stem = name.split(".")[0]
        close = difflib.get_close_matches(stem.lower(), [s.name for s in TABLES], n=1, cutoff=0.75)
        if close:
            problems.append(
                f"{name}: unknown file that looks like a typo (expected {close[0]}.parquet or {close[0]}.csv)"
            )
    return problems


class _TableCheck:
    """Checks one table and builds its normalised frame."""

    def __init__(self, path: Path, spec: TableSpec, raw: pd.DataFrame) -> None:
        # A parquet file written from an indexed frame comes back with that column as the index.
        raw = raw.reset_index(drop=all(name is None for name in raw.index.names))
        self.path, self.spec, self.raw = path, spec, raw
        self.is_csv = path.suffix == ".csv"
        self.problems: list[str] = []
        self.bad_columns: set[str] = set()  # wrong type: later checks must not read their values
        self.frame: pd.DataFrame | None = None
        if raw.empty or len(raw.columns) == 0:
            self.problems.append(f"{path.name}: empty table (expected at least one row)")
            return
        missing = [c.name for c in spec.columns if c.required and c.name not in raw.columns]
        for name in missing:
            self.problems.append(
                f"{path.name}: missing column '{name}' (found: {', '.join(map(str, raw.columns))})"
            )
        if missing:
            return
        out = {}
        for column in spec.columns:
            if column.name in raw.columns:
                out[column.name] = self._check(column, raw[column.name])
            elif column.default is not None:
                out[column.name] = pd.Series(column.default, index=raw.index)
        for extra in raw.columns:
            if extra not in out:  # extra columns pass through (item features, user profile)
                out[extra] = raw[extra]
        frame = pd.DataFrame(out)
        if spec.key is not None and spec.key not in self.bad_columns:
            keys = frame[spec.key]
            dup = keys.duplicated(keep=False) & (keys.str.strip() != "")  # empty ids are reported above
            if dup.any():
                self._problem(spec.key, dup, "duplicate ids (expected each id once)", frame[spec.key])
        if spec is ITEMS and TEXT in frame and TITLE in frame and not self.bad_columns & {TEXT, TITLE}:
            # The encoder reads `text`; an item with none falls back to its title.
            frame[TEXT] = frame[TEXT].where(frame[TEXT].str.len() > 0, frame[TITLE])
        self.frame = frame

    def _problem(self, column: str, mask: np.ndarray | pd.Series, what: str, values: pd.Series) -> None:
        self.problems.append(row_problem(self.path.name, self.is_csv, column, mask, what, values))

    def _check(self, column: Column, series: pd.Series) -> pd.Series:
        if column.kind == "id":
            return self._check_id(column, series)
        if column.kind == "string":
            return self._check_string(column, series)
        if column.kind == "number":
            return self._check_number(column, series)
        return self._check_timestamp(column, series)

    def _as_text(self, column: Column, series: pd.Series) -> pd.Series | None:
        """Text values of a column, or None (with a problem) when its type is wrong."""
        if isinstance(series.dtype, pd.CategoricalDtype):  # read as a dictionary: strings by construction
            return series
        if pd.api.types.is_integer_dtype(series) and not pd.api.types.is_bool_dtype(series):
            return series.astype(str).astype(object)
        if pd.api.types.is_string_dtype(series) or series.dtype == object:
            values = series.astype(object)
            bad = ~values.map(lambda v: v is None or isinstance(v, str) or v is pd.NA).astype(bool)
            if bad.any():
                self.bad_columns.add(column.name)
                self._problem(column.name, bad, "wrong type (expected text)", values)
                return None
            return values
        self.bad_columns.add(column.name)
        self.problems.append(
            f"{self.path.name}: column '{column.name}': wrong type {series.dtype} (expected text"
            + (" or integer ids" if column.kind == "id" else "")
            + ")"
        )
        return None

    def _check_id(self, column: Column, series: pd.Series) -> pd.Series:
        values = self._as_text(column, series)
        if values is None:
            return series
        if isinstance(values.dtype, pd.CategoricalDtype):
            blank = _per_row(values, lambda v: v.strip() == "", missing=True)
            if blank.any():
                shown = values.astype(object).fillna("<null>")
                self._problem(column.name, blank, "null or empty id (expected a non-empty id)", shown)
            return _recode(values, lambda v: v, missing="")
        empty = values.isna() | (values.fillna("").astype(str).str.strip() == "")
        if empty.any():
            self._problem(
                column.name, empty, "null or empty id (expected a non-empty id)", values.fillna("<null>")
            )
        return values.fillna("").astype(str)

    def _check_string(self, column: Column, series: pd.Series) -> pd.Series:
        values = self._as_text(column, series)
        if values is None:
            return series
        if isinstance(values.dtype, pd.CategoricalDtype):
            default = column.default

            def fill(v: str) -> str:
                return str(default) if default is not None and v.strip() == "" else v

            return _recode(values, fill, missing=fill(""))
        values = values.fillna("").astype(str)
        if column.default is not None:
            values = values.where(values.str.strip() != "", str(column.default))
        return values

    def _check_number(self, column: Column, series: pd.Series) -> pd.Series:
        if pd.api.types.is_bool_dtype(series):
            self.problems.append(
                f"{self.path.name}: column '{column.name}': wrong type bool (expected a number)"
            )
            return series
        numbers = series if pd.api.types.is_numeric_dtype(series) else pd.to_numeric(series, errors="coerce")
        numbers = numbers.astype("float64")
        bad = ~np.isfinite(numbers.to_numpy())
        if bad.any():
            self._problem(column.name, bad, "not a finite number (expected a number)", series.astype(object))
        return numbers

    def _check_timestamp(self, column: Column, series: pd.Series) -> pd.Series:
        name = self.path.name
        if isinstance(series.dtype, pd.DatetimeTZDtype):
            out = series.dt.tz_convert("UTC")
            null = out.isna().to_numpy()
            if null.any():
                self._problem(
                    column.name, null, "null timestamp (expected a timestamp)", series.astype(object)
                )
        elif pd.api.types.is_datetime64_dtype(series):
            self.problems.append(
                f"{name}: column '{column.name}': naive timestamps with no timezone "
                "(expected timezone-aware UTC timestamps, e.g. pandas .dt.tz_localize('UTC'))"
            )
            return series
        elif pd.api.types.is_string_dtype(series) or series.dtype == object:
            text = series.astype(object).fillna("").astype(str).str.strip()
            out = pd.to_datetime(text.where(text != ""), format="ISO8601", errors="coerce", utc=True)
            unparsed = out.isna().to_numpy()
            if unparsed.any():
                epoch = text[unparsed].str.fullmatch(_NUMBER).any()
                self._problem(
                    column.name,
                    unparsed,
                    "unparseable timestamp (expected ISO-8601 with a UTC offset, "
                    "e.g. 2024-05-01T12:00:00Z"
                    + ("; convert epoch numbers with pd.to_datetime(x, unit='s', utc=True)" if epoch else "")
                    + ")",
                    text,
                )
            naive = ~unparsed & ~text.str.contains(_TZ_SUFFIX).to_numpy()
            if naive.any():
                self._problem(
                    column.name,
                    naive,
                    "naive timestamp with no timezone (expected a UTC offset such as Z or +00:00)",
                    text,
                )
        else:
            self.problems.append(
                f"{name}: column '{column.name}': wrong type {series.dtype} (expected timestamps with a "
                "timezone; convert epoch numbers with pd.to_datetime(x, unit='s', utc=True))"
            )
            return series
        outside = ((out < _NS_RANGE[0]) | (out > _NS_RANGE[1])).to_numpy()
        if outside.any():  # e.g. a 9999-12-31 "never" sentinel: beyond what datetime64[ns] holds
            self._problem(
                column.name,
                outside,
                "timestamp out of range (expected years 1678 to 2261)",
                series.astype(object),
            )
            return out
        return out.astype("datetime64[ns, UTC]")


def _references(directory: Path, checks: dict[str, _TableCheck]) -> list[str]:
    inter_check, items_check = checks.get(INTERACTIONS.name), checks.get(ITEMS.name)
    if inter_check is None or items_check is None or inter_check.frame is None or items_check.frame is None:
        return []
    if ITEM_ID in inter_check.bad_columns | items_check.bad_columns:
        return []  # a wrong type is already reported; comparing its values would flag every row
    interactions, items = inter_check.frame, items_check.frame
    known = pd.Index(items[ITEM_ID])
    ids = interactions[ITEM_ID]
    if isinstance(ids.dtype, pd.CategoricalDtype):  # decided once per distinct id
        names = set(known)
        unknown = _per_row(ids, lambda v: v.strip() != "" and v not in names, missing=False)
    else:
        unknown = (~ids.isin(known) & (ids.str.strip() != "")).to_numpy()  # empty ids are reported already
    if not unknown.any():
        return []
    path = find_table(directory, INTERACTIONS)
    assert path is not None  # the table was read from it
    distinct = interactions[ITEM_ID][unknown].nunique()
    what = f"item not in items ({distinct} distinct unknown items; expected every item_id in items)"
    return [row_problem(path.name, path.suffix == ".csv", ITEM_ID, unknown, what, interactions[ITEM_ID])]


def _per_row(values: pd.Series, test: Callable[[str], bool], missing: bool) -> np.ndarray:
    """[rows] bool: `test` of each row's category (decided once per category); `missing` for nulls."""
    per_category = np.array([test(str(v)) for v in values.cat.categories] + [missing], dtype=bool)
    return per_category[values.cat.codes.to_numpy()]  # code -1 (null) reads the last entry


def _recode(values: pd.Series, change: Callable[[str], str], missing: str) -> pd.Series:
    """A categorical of `change(category)` per row (nulls -> `missing`), its categories plain `str`,
    distinct and sorted, so sorting by the column sorts as its strings would."""
    mapped = [change(str(v)) for v in values.cat.categories] + [missing]
    categories = pd.Index(sorted(set(mapped)), dtype=object)
    position = categories.get_indexer(pd.Index(mapped, dtype=object))
    codes = position[values.cat.codes.to_numpy()].astype(np.int32)
    return pd.Series(
        pd.Categorical.from_codes(codes, categories=categories), index=values.index, name=values.name
    )


def row_problem(
    file: str, is_csv: bool, column: str, mask: np.ndarray | pd.Series, what: str, values: pd.Series
) -> str:
    """One problem line naming the file, the column, the first offending rows and the first value."""
    rows = np.flatnonzero(np.asarray(mask))
    more = f" and {len(rows) - _SHOWN_ROWS} more" if len(rows) > _SHOWN_ROWS else ""
    plural = "s " if len(rows) > 1 else " "
    if is_csv:  # line numbers in the file: the header is line 1
        where = "line" + plural + ", ".join(str(r + 2) for r in rows[:_SHOWN_ROWS]) + more
    else:
        where = "row" + plural + ", ".join(map(str, rows[:_SHOWN_ROWS])) + more + " (0-based)"
    example = values.iloc[rows[0]]
    return f"{file}: column '{column}', {where}: {what}; first value: {example!r}"
