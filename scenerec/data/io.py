"""Reading the contract's tables and writing outputs so that nothing is ever half-written.

Writers go to a temporary sibling and rename into place: a crash or a bad input leaves what was
there before intact.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from scenerec.data.schema import FORMATS, TableSpec
from scenerec.errors import DataError


def find_table(directory: Path, spec: TableSpec) -> Path | None:
    """The file holding `spec` in `directory` (parquet preferred over CSV), or None."""
    for suffix in FORMATS:
        candidate = directory / f"{spec.name}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def read_raw_table(path: Path, dictionary: Iterable[str] = ()) -> pd.DataFrame:
    """Read a table without coercing types, so validation sees what the file really holds.

    CSV columns are all read as text (empty cells as ""), so a value such as "007" keeps its form
    and type checks can name the offending rows. Parquet text columns named in `dictionary` come
    back as pandas categoricals (one Python string per distinct value, int32 codes per row): an
    interaction log of 3 x 10^7 rows holds its user, item, scene, device and event ids in about
    0.6 GB instead of ~10 GB of Python strings.
    """
    try:
        if path.suffix == ".parquet":
            schema = pq.read_schema(path)
            wanted = set(dictionary)
            as_dictionary = [
                f.name
                for f in schema
                if f.name in wanted and (pa.types.is_string(f.type) or pa.types.is_large_string(f.type))
            ]
            table = pq.read_table(path, read_dictionary=as_dictionary or None)
            return table.to_pandas(types_mapper=_keep_arrow_strings)
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except (OSError, ValueError, pa.ArrowException, pd.errors.ParserError) as e:
        raise DataError(f"{path.name}: cannot be read as {path.suffix[1:]} ({e})") from e


def _keep_arrow_strings(arrow_type: pa.DataType) -> Any:
    return (
        pd.StringDtype() if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) else None
    )


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """Write a parquet file atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with _temporary_sibling(path) as tmp:
        frame.to_parquet(tmp, index=False)


def write_parquet_stream(frames: Iterable[pd.DataFrame], path: Path, min_rows: int = 1 << 18) -> int:
    """Write frames with one schema as one parquet file, row groups of at least `min_rows` rows
    (frames are buffered up to that), atomically: the file appears under `path` only once the last
    frame is written. Memory holds one row group, not the table. Returns the number of rows.

    The schema is the first frame's (pandas metadata included, as `write_parquet` writes it); a
    later frame must have the same columns, cast to it. No frame at all is an error.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    rows, buffered, pending = 0, 0, []
    writer: pq.ParquetWriter | None = None
    with _temporary_sibling(path) as tmp:
        try:
            for frame in frames:
                schema = writer.schema if writer else None
                table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema)
                pending.append(table)
                buffered += len(table)
                if buffered >= min_rows:
                    writer.write_table(pa.concat_tables(pending).combine_chunks())
                    rows, buffered, pending = rows + buffered, 0, []
            if writer is None:
                raise DataError(f"{path.name}: nothing to write (no frames)")
            if pending:
                writer.write_table(pa.concat_tables(pending).combine_chunks())
                rows += buffered
        finally:
            if writer is not None:
                writer.close()
    return rows


def write_json(data: Any, path: Path) -> None:
    """Write JSON atomically, sorted and indented so diffs stay readable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with _temporary_sibling(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n")


def write_text(text: str, path: Path) -> None:
    """Write a text file atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with _temporary_sibling(path) as tmp:
        tmp.write_text(text)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


@contextlib.contextmanager
def _temporary_sibling(path: Path) -> Iterator[Path]:
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600: readers in other containers need more
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield a fresh temporary directory that replaces `target` only if the block succeeds.

    The old `target` (if any) is moved aside and removed only after the new one is in place; if the
    swap itself fails, the old directory is put back.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield staging
        os.chmod(staging, 0o777 & ~_UMASK)  # mkdtemp makes 0700
        backup = None
        if target.exists():
            backup = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, backup / "old")
        try:
            os.replace(staging, target)
        except OSError:
            if backup is not None:
                os.replace(backup / "old", target)
            raise
        finally:
            if backup is not None:
                shutil.rmtree(backup, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (created if absent) across processes, held for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
