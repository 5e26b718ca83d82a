"""Importing the MovieLens datasets (ml-100k, ml-1m, ml-latest/-small/-25m) into the data contract.

Each layout is described once (`_LAYOUTS`) and read by one reader, so a malformed line in any layout
is reported the same way: the file, the line number and the field layout GroupLens documents.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from scenerec.data.io import atomic_directory, write_parquet
from scenerec.data.schema import (
    CATEGORY,
    DEFAULT_SCENE,
    EVENT,
    INTERACTIONS,
    ITEM_ID,
    ITEMS,
    LABEL,
    RATING_EVENT,
    SCENE,
    TEXT,
    TIMESTAMP,
    TITLE,
    USER_ID,
    USERS,
)
from scenerec.errors import DataError

# Profile columns of users.parquet (ml-100k and ml-1m ship the same four, in different orders).
AGE, GENDER, OCCUPATION, ZIP_CODE = "age", "gender", "occupation", "zip_code"

GENRES_100K = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
_NO_GENRE = {"", "unknown", "(no genres listed)"}  # MovieLens' own spellings of "no genre"
_MAX_PROBLEMS = 5  # bad lines listed per file: enough to see the pattern, short enough to read


@dataclass(frozen=True)
class _File:
    """One MovieLens file: its separator, our names for its fields, and which must be numbers."""

    name: str
    sep: str  # "," means real CSV: a header line and quoted fields
    columns: tuple[str, ...]
    expected: str  # the documented layout, quoted in error messages (for CSV: the header)
    numbers: tuple[str, ...] = ()
    ids: tuple[str, ...] = ("user", "item")

    @property
    def encoding(self) -> str:
        return "utf-8" if self.sep == "," else "latin-1"  # as GroupLens ships them


@dataclass(frozen=True)
class _Layout:
    name: str
    ratings: _File
    movies: _File
    users: _File | None = None
    tags: _File | None = None


_RATING, _MOVIE = ("user", "item", "rating", "time"), ("item", "title", "genres")
_LAYOUTS = (
    _Layout(
        "ml-latest",
        _File("ratings.csv", ",", _RATING, "userId,movieId,rating,timestamp", ("rating", "time")),
        _File("movies.csv", ",", _MOVIE, "movieId,title,genres", ids=("item",)),
        tags=_File(
            "tags.csv", ",", ("user", "item", "tag", "time"), "userId,movieId,tag,timestamp", ("time",)
        ),
    ),
    _Layout(
        "ml-1m",
        _File("ratings.dat", "::", _RATING, "UserID::MovieID::Rating::Timestamp", ("rating", "time")),
        _File("movies.dat", "::", _MOVIE, "MovieID::Title::Genres", ids=("item",)),
        users=_File(
            "users.dat",
            "::",
            ("user", GENDER, AGE, OCCUPATION, ZIP_CODE),
            "UserID::Gender::Age::Occupation::Zip-code",
            (AGE,),
            ids=("user",),
        ),
    ),
    _Layout(
        "ml-100k",
        _File("u.data", "\t", _RATING, "user id | item id | rating | timestamp", ("rating", "time")),
        _File(
            "u.item",
            "|",
            ("item", "title", "released", "video_released", "url", *GENRES_100K),
            "movie id | title | release date | video release date | IMDb URL | 19 genre flags (0/1)",
            GENRES_100K,
            ids=("item",),
        ),
        users=_File(
            "u.user",
            "|",
            ("user", AGE, GENDER, OCCUPATION, ZIP_CODE),
            "user id | age | gender | occupation | zip code",
            (AGE,),
            ids=("user",),
        ),
    ),
)


def import_movielens(src: Path, out: Path, *, tags: bool = True, max_tags: int = 50) -> dict[str, str | int]:
    """Convert a MovieLens directory into a dataset directory, written atomically to `out`.

    The layout is detected from the files present. Interactions are explicit ratings (`event` "rate",
    `label` the rating, `scene` "default": MovieLens has no scenes). Every movie stays in the
    catalogue, rated or not, so cold items can be ranked by their text: the title, " Genres: " and
    the genres, and with `tags` (ml-latest layouts) " Tags: " and the item's distinct tags, most
    applied first, at most `max_tags` (ml-25m has items with thousands; encoders truncate anyway).

    Tags are written over the whole collection period, so some postdate an item's test interactions:
    a known, mild leakage into item text that the field accepts for MovieLens. `tags=False` avoids it.

    Returns:
        A summary: `layout`, `users`, `items`, `interactions`.

    Raises:
        DataError: the layout is unrecognised, or a file is malformed (named with the line and the
            expected layout); `out` is then left as it was.
    """
    src, out = Path(src), Path(out)
    if out.resolve() == src.resolve() or out.resolve() in src.resolve().parents:
        raise DataError(f"{out}: would replace the MovieLens source {src} (expected another directory)")
    layout = _detect_layout(src)
    ratings = _read(src / layout.ratings.name, layout.ratings)
    movies = _read(src / layout.movies.name, layout.movies)
    _check_references(layout, ratings, movies)
    tag_text = None
    if tags and layout.tags is not None and (src / layout.tags.name).is_file():
        tag_text = _tag_text(_read(src / layout.tags.name, layout.tags), max_tags)
    micros = (ratings["time"] * 1_000_000).round().astype("int64")  # exact, unlike float seconds x 1e9
    interactions = pd.DataFrame(
        {
            USER_ID: ratings["user"],  # arrow-backed from the fast path: no copy to Python strings
            ITEM_ID: ratings["item"],
            TIMESTAMP: pd.to_datetime(micros, unit="us", utc=True),
            SCENE: DEFAULT_SCENE,
            EVENT: RATING_EVENT,
            LABEL: ratings["rating"].astype("float64"),
        }
    )
    items = _items(layout, movies, tag_text)
    users = None
    if layout.users is not None and (src / layout.users.name).is_file():
        users = _read(src / layout.users.name, layout.users).rename(columns={"user": USER_ID})
        users[AGE] = users[AGE].astype("int64")
    with atomic_directory(out) as staging:
        write_parquet(interactions, staging / f"{INTERACTIONS.name}.parquet")
        write_parquet(items, staging / f"{ITEMS.name}.parquet")
        if users is not None:
            write_parquet(users, staging / f"{USERS.name}.parquet")
    return {
        "layout": layout.name,
        "users": int(interactions[USER_ID].nunique()),
        "items": len(items),
        "interactions": len(interactions),
    }


def _detect_layout(src: Path) -> _Layout:
    """The layout whose ratings and movies files are both in `src`, or DataError listing them all."""
    for layout in _LAYOUTS:
        if (src / layout.ratings.name).is_file() and (src / layout.movies.name).is_file():
            return layout
    expected = "; ".join(f"{lay.name}: {lay.ratings.name} + {lay.movies.name}" for lay in _LAYOUTS)
    # The usual slip: pointing at the folder the zip was extracted into.
    ratings_files = {lay.ratings.name for lay in _LAYOUTS}
    nested = sorted({p.parent.name for p in src.glob("*/*") if p.name in ratings_files})
    hint = f" (a subdirectory holds one: {', '.join(nested)})" if nested else ""
    what = "not a recognised MovieLens directory" if src.is_dir() else "no such directory"
    raise DataError(f"{src}: {what} (expected {expected}){hint}")


def _read(path: Path, spec: _File) -> pd.DataFrame:
    """The file's rows (numbers as floats, ids stripped), or DataError naming its bad lines."""
    # The big CSVs (ml-25m: 25M ratings) go through pandas' C parser first. It notices a short row
    # only when the last field is a number (an empty one fails to convert); others read by lines.
    if spec.sep == "," and spec.columns[-1] in spec.numbers:
        frame = _read_csv_fast(path, spec)
        if frame is not None:
            return frame
    n = len(spec.columns)
    rows: list[list[str]] = []
    lines: list[int] = []  # the line number of each row, for messages
    problems: list[tuple[int, str]] = []  # (line, what): the first few of each kind, sorted at the end
    found = 0
    try:
        for number, fields in _lines(path, spec):
            if len(fields) == n:
                rows.append(fields)
                lines.append(number)
                continue
            found += 1
            if found <= _MAX_PROBLEMS:
                what = f"expected {n} fields separated by {spec.sep!r} ({spec.expected}), found {len(fields)}"
                problems.append((number, what))
    except OSError as e:
        raise DataError(f"{spec.name}: cannot be read ({e})") from e
    # Ids and numbers are checked by column, not per line: ml-1m has a million lines.
    frame = pd.DataFrame(rows, columns=list(spec.columns), dtype=object)
    for column in spec.ids:
        frame[column] = frame[column].str.strip()
        bad = np.flatnonzero((frame[column] == "").to_numpy())
        found += len(bad)
        problems += [(lines[i], f"empty {column} id (expected {spec.expected})") for i in bad[:_MAX_PROBLEMS]]
    for column in spec.numbers:
        values = pd.to_numeric(frame[column], errors="coerce").astype("float64")
        bad = np.flatnonzero(~np.isfinite(values.to_numpy()))
        found += len(bad)
        for i in bad[:_MAX_PROBLEMS]:
            value = frame[column].iat[i]
            problems.append((lines[i], f"{column} {value!r} is not a number (expected {spec.expected})"))
        frame[column] = values
    if problems:
        shown = [f"{spec.name}: line {line}: {what}" for line, what in sorted(problems)[:_MAX_PROBLEMS]]
        more = found - len(shown)
        raise DataError(shown + ([f"{spec.name}: and {more} more problems"] if more > 0 else []))
    if frame.empty:
        raise DataError(f"{spec.name}: no rows (expected lines of {spec.expected})")
    return frame


def _read_csv_fast(path: Path, spec: _File) -> pd.DataFrame | None:
    """The CSV read by pandas, or None when anything is off (the line reader then names it)."""
    header = spec.expected.split(",")
    # Arrow-backed strings: 50M ids as Python objects would need several GB.
    kinds = ["float64" if c in spec.numbers else "string[pyarrow]" for c in spec.columns]
    dtypes = dict(zip(header, kinds, strict=True))
    try:
        frame = pd.read_csv(path, dtype=dtypes, na_filter=False, encoding=spec.encoding)
    except (ValueError, OSError):  # ParserError, EmptyDataError and UnicodeDecodeError are ValueErrors
        return None
    if list(frame.columns) != header or frame.empty:
        return None
    frame.columns = list(spec.columns)
    for column in spec.ids:
        frame[column] = frame[column].str.strip()
        if (frame[column] == "").any():
            return None
    return frame


def _lines(path: Path, spec: _File) -> Iterator[tuple[int, list[str]]]:
    """Non-blank rows with their line numbers; a CSV header is checked, not yielded."""
    with path.open("rb") as handle:
        decoded = (_decode(raw, number, spec) for number, raw in enumerate(handle, 1))
        if spec.sep == ",":
            reader = csv.reader(decoded)
            rows: Iterator[tuple[int, list[str]]] = ((reader.line_num, row) for row in reader)
        else:
            rows = ((n, line.rstrip("\r\n").split(spec.sep)) for n, line in enumerate(decoded, 1))
        header_seen = spec.sep != ","
        for number, fields in rows:
            if not "".join(fields).strip():
                continue
            if not header_seen:
                header_seen = True
                if ",".join(f.strip() for f in fields) != spec.expected:
                    raise DataError(
                        f"{spec.name}: line {number}: header {','.join(fields)!r} "
                        f"(expected {spec.expected!r})"
                    )
                continue
            yield number, fields


def _decode(raw: bytes, number: int, spec: _File) -> str:
    try:
        return raw.decode(spec.encoding)
    except UnicodeDecodeError as e:
        raise DataError(f"{spec.name}: line {number}: not valid {spec.encoding} text ({e.reason})") from e


def _check_references(layout: _Layout, ratings: pd.DataFrame, movies: pd.DataFrame) -> None:
    """Catch what the contract would reject, but named in MovieLens' own files."""
    repeated = movies["item"][movies["item"].duplicated()]
    if not repeated.empty:
        raise DataError(
            f"{layout.movies.name}: {len(repeated)} repeated movie ids, first "
            f"{repeated.iloc[0]!r} (expected each movie once)"
        )
    unknown = ratings["item"][~ratings["item"].isin(movies["item"])]
    if not unknown.empty:
        raise DataError(
            f"{layout.ratings.name}: {len(unknown)} ratings of movies missing from "
            f"{layout.movies.name}, first {unknown.iloc[0]!r} (expected every rated movie there)"
        )


def _tag_text(tags: pd.DataFrame, max_tags: int) -> pd.Series:
    """Each item's distinct tags (case-folded), most applied first then alphabetical, comma-joined."""
    tag = tags["tag"].astype(str).str.split().str.join(" ").str.lower()
    frame = pd.DataFrame({"item": tags["item"].astype(str), "tag": tag})
    counts = frame[frame["tag"] != ""].value_counts().rename("n").reset_index()
    counts = counts.sort_values(["item", "n", "tag"], ascending=[True, False, True], kind="stable")
    return counts.groupby("item").head(max_tags).groupby("item")["tag"].agg(", ".join)


def _items(layout: _Layout, movies: pd.DataFrame, tag_text: pd.Series | None) -> pd.DataFrame:
    """The catalogue: every movie with its text and its first genre as category."""
    if layout.name == "ml-100k":
        flags = movies[list(GENRES_100K)].to_numpy() == 1
        genres = [[g for g, on in zip(GENRES_100K, row, strict=True) if on] for row in flags]
    else:
        genres = [str(g).split("|") for g in movies["genres"]]
    genres = [[g.strip() for g in gs if g.strip() not in _NO_GENRE] for gs in genres]
    item_ids = movies["item"].astype(str).tolist()
    titles = movies["title"].astype(str).str.strip().tolist()
    tag_of = {} if tag_text is None else {str(k): str(v) for k, v in tag_text.items()}
    texts = []
    for item, title, gs in zip(item_ids, titles, genres, strict=True):
        text = title + (f" Genres: {', '.join(gs)}" if gs else "")
        texts.append(text + (f" Tags: {tag_of[item]}" if item in tag_of else ""))
    return pd.DataFrame(
        {
            ITEM_ID: item_ids,
            TITLE: titles,
            TEXT: texts,
            CATEGORY: [gs[0] if gs else str(ITEMS.column(CATEGORY).default) for gs in genres],
        }
    )
