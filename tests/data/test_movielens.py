"""The MovieLens importer on tiny files written in each layout's exact format."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from scenerec.data import movielens
from scenerec.data.movielens import GENRES_100K, import_movielens
from scenerec.data.schema import CATEGORY, EVENT, ITEM_ID, LABEL, SCENE, TEXT, TIMESTAMP, TITLE, USER_ID
from scenerec.data.validate import require_valid
from scenerec.errors import DataError

# 4 users x 5 rated movies = 20 ratings; movie 6 is never rated but must stay in the catalogue.
# Known answer: user 1 rated movie 3 at unix 1_000_000_000 = 2001-09-09 01:46:40 UTC.
T0 = 1_000_000_000
KNOWN_TIME = pd.Timestamp("2001-09-09 01:46:40", tz="UTC")
RATINGS = [(u, m, float(1 + (u + m) % 5), T0 + 60 * (10 * u + m)) for u in range(1, 5) for m in range(1, 6)]
RATINGS[2] = (1, 3, 4.0, T0)
MOVIES = [  # id, title, genres (in MovieLens' order)
    (1, "Toy Story (1995)", ["Animation", "Children's", "Comedy"]),
    (2, "Jumanji (1995)", ["Adventure", "Children's", "Fantasy"]),
    (3, "American President, The (1995)", ["Comedy", "Drama", "Romance"]),
    (4, "Café au lait (1993)", ["Comedy"]),
    (5, "Heat (1995)", ["Action", "Crime", "Thriller"]),
    (6, "Never Rated (2000)", []),
]
USERS_100K = ["1|24|M|technician|85711", "2|53|F|other|94043", "3|23|M|writer|32067", "4|24|M|other|43537"]
USERS_1M = ["1::F::1::10::48067", "2::M::56::16::70072", "3::M::25::15::55117", "4::M::45::7::02460"]


def _write(path: Path, lines: list[str], encoding: str = "latin-1") -> None:
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))


def write_100k(src: Path) -> Path:
    src.mkdir(parents=True)
    _write(src / "u.data", [f"{u}\t{m}\t{int(r)}\t{t}" for u, m, r, t in RATINGS])
    items = []
    for m, title, genres in MOVIES:
        flags = "|".join("1" if g in genres or (g == "unknown" and not genres) else "0" for g in GENRES_100K)
        items.append(f"{m}|{title}|01-Jan-1995||http://us.imdb.com/M/title-exact?{m}|{flags}")
    _write(src / "u.item", items)
    _write(src / "u.user", USERS_100K)
    return src


def write_1m(src: Path) -> Path:
    src.mkdir(parents=True)
    _write(src / "ratings.dat", [f"{u}::{m}::{int(r)}::{t}" for u, m, r, t in RATINGS])
    _write(src / "movies.dat", [f"{m}::{title}::{'|'.join(g)}" for m, title, g in MOVIES])
    _write(src / "users.dat", USERS_1M)
    return src


def _csv_field(value: str) -> str:
    return f'"{value}"' if "," in value else value


def write_latest(src: Path) -> Path:
    src.mkdir(parents=True)
    ratings = [f"{u},{m},{r - 0.5 if m == 5 else r},{t}" for u, m, r, t in RATINGS]
    _write(src / "ratings.csv", ["userId,movieId,rating,timestamp", *ratings], "utf-8")
    movies = [f"{m},{_csv_field(title)},{'|'.join(g) or '(no genres listed)'}" for m, title, g in MOVIES]
    _write(src / "movies.csv", ["movieId,title,genres", *movies], "utf-8")
    tags = [
        "userId,movieId,tag,timestamp",
        f"1,1,pixar,{T0}",
        f"2,1,Pixar,{T0}",
        f"3,1,  toys ,{T0}",
        f'1,1,"funny, clever",{T0}',
        f"2,6,obscure,{T0}",
    ]
    _write(src / "tags.csv", tags, "utf-8")
    return src


def _row(frame: pd.DataFrame, **where: str) -> pd.Series:
    match = frame
    for column, value in where.items():
        match = match[match[column] == value]
    assert len(match) == 1
    return match.iloc[0]


def _check_common(out: Path, summary: dict[str, str | int], layout: str) -> dict[str, pd.DataFrame]:
    assert summary == {"layout": layout, "users": 4, "items": 6, "interactions": 20}
    tables = require_valid(out)
    interactions, items = tables["interactions"], tables["items"]
    assert len(interactions) == 20 and len(items) == 6
    assert str(interactions[TIMESTAMP].dtype) == "datetime64[ns, UTC]"
    assert set(interactions[SCENE]) == {"default"} and set(interactions[EVENT]) == {"rate"}
    known = _row(interactions, **{USER_ID: "1", ITEM_ID: "3"})
    assert known[LABEL] == 4.0 and known[TIMESTAMP] == KNOWN_TIME
    last = _row(interactions, **{USER_ID: "4", ITEM_ID: "5"})[TIMESTAMP]
    assert last == KNOWN_TIME + pd.Timedelta(minutes=45)
    assert "6" in set(items[ITEM_ID]) and "6" not in set(interactions[ITEM_ID])
    assert _row(items, **{ITEM_ID: "4"})[TITLE] == "Café au lait (1993)"
    assert _row(items, **{ITEM_ID: "5"})[CATEGORY] == "Action"
    assert _row(items, **{ITEM_ID: "6"})[CATEGORY] == "unknown"
    return tables


def test_ml_100k(tmp_path: Path) -> None:
    out = tmp_path / "out"
    tables = _check_common(out, import_movielens(write_100k(tmp_path / "ml-100k"), out), "ml-100k")
    items = tables["items"]
    assert _row(items, **{ITEM_ID: "1"})[TEXT] == "Toy Story (1995) Genres: Animation, Children's, Comedy"
    assert _row(items, **{ITEM_ID: "6"})[TEXT] == "Never Rated (2000)"  # the "unknown" genre is no genre
    users = tables["users"]
    assert len(users) == 4 and list(users.columns) == [USER_ID, "age", "gender", "occupation", "zip_code"]
    assert _row(users, **{USER_ID: "2"})[["age", "gender", "occupation"]].tolist() == [53, "F", "other"]


def test_ml_1m(tmp_path: Path) -> None:
    out = tmp_path / "out"
    tables = _check_common(out, import_movielens(write_1m(tmp_path / "ml-1m"), out), "ml-1m")
    assert _row(tables["items"], **{ITEM_ID: "3"})[TEXT] == (
        "American President, The (1995) Genres: Comedy, Drama, Romance"
    )
    assert _row(tables["items"], **{ITEM_ID: "1"})[CATEGORY] == "Animation"
    users = tables["users"]
    assert _row(users, **{USER_ID: "4"})[["gender", "age", "zip_code"]].tolist() == ["M", 45, "02460"]


def test_ml_latest_small(tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = import_movielens(write_latest(tmp_path / "ml-latest-small"), out)
    tables = _check_common(out, summary, "ml-latest")
    interactions, items = tables["interactions"], tables["items"]
    assert _row(interactions, **{USER_ID: "2", ITEM_ID: "5"})[LABEL] == 2.5  # half stars survive
    assert _row(items, **{ITEM_ID: "3"})[TITLE] == "American President, The (1995)"
    # Distinct, case-folded tags, most applied first then alphabetical.
    assert _row(items, **{ITEM_ID: "1"})[TEXT] == (
        "Toy Story (1995) Genres: Animation, Children's, Comedy Tags: pixar, funny, clever, toys"
    )
    assert _row(items, **{ITEM_ID: "6"})[TEXT] == "Never Rated (2000) Tags: obscure"
    assert "users" not in tables


def test_tags_can_be_left_out(tmp_path: Path) -> None:
    out = tmp_path / "out"
    import_movielens(write_latest(tmp_path / "src"), out, tags=False)
    assert not require_valid(out)["items"][TEXT].str.contains("Tags:").any()


def test_unrecognised_directory_names_the_expected_files(tmp_path: Path) -> None:
    src = tmp_path / "downloads"
    write_1m(src / "ml-1m")
    (src / "notes.txt").write_text("hi")
    with pytest.raises(DataError) as caught:
        import_movielens(src, tmp_path / "out")
    message = str(caught.value)
    assert str(src) in message
    for name in ("u.data", "u.item", "ratings.dat", "movies.dat", "ratings.csv", "movies.csv"):
        assert name in message
    assert "a subdirectory holds one: ml-1m" in message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("writer", "file", "line", "bad", "expected"),
    [
        (write_1m, "ratings.dat", 3, "1::3::4", "expected 4 fields separated by '::'"),
        (write_100k, "u.data", 5, "1\t5\tfive\t978300760", "rating 'five' is not a number"),
        (write_latest, "ratings.csv", 4, "1,3,4.0,yesterday", "time 'yesterday' is not a number"),
        (write_latest, "ratings.csv", 2, "1,1,4.0,97830,extra", "expected 4 fields"),
        (write_latest, "movies.csv", 3, "2,Jumanji (1995)", "expected 3 fields"),
    ],
)
def test_malformed_line_names_file_and_line(
    tmp_path: Path, writer: Callable[[Path], Path], file: str, line: int, bad: str, expected: str
) -> None:
    src = writer(tmp_path / "src")
    lines = (src / file).read_bytes().decode("latin-1").splitlines()
    lines[line - 1] = bad
    _write(src / file, lines)
    with pytest.raises(DataError) as caught:
        import_movielens(src, tmp_path / "out")
    assert caught.value.problems[0].startswith(f"{file}: line {line}: {expected}")


def test_failed_import_leaves_previous_output_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    import_movielens(write_latest(tmp_path / "good"), out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    bad = write_1m(tmp_path / "bad")
    _write(bad / "ratings.dat", ["1::1::5::978300760", "1::2::five::978300761"])
    with pytest.raises(DataError, match="line 2"):
        import_movielens(bad, out)

    # A failure half-way through writing: interactions.parquet is written, items.parquet is not.
    def fail_on_items(frame: pd.DataFrame, path: Path) -> None:
        if path.name == "items.parquet":
            raise OSError("disk full")
        frame.to_parquet(path)

    monkeypatch.setattr(movielens, "write_parquet", fail_on_items)
    with pytest.raises(OSError, match="disk full"):
        import_movielens(write_1m(tmp_path / "other"), out)

    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "good", "other", "out"]  # no staging left
    assert require_valid(out)["items"][TEXT].str.contains("Tags:").any()  # still the ml-latest import


def test_refuses_to_overwrite_its_source(tmp_path: Path) -> None:
    src = write_1m(tmp_path / "ml-1m")
    with pytest.raises(DataError, match="would replace the MovieLens source"):
        import_movielens(src, tmp_path)
    assert (src / "ratings.dat").is_file()
