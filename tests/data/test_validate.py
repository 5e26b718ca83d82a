"""`validate_dataset`: one clear line per problem (file, column, rows, expectation), never a traceback.

Each test writes a small dataset into `tmp_path`, breaks one thing and checks the problem line names
the file, the column, where (CSV: line numbers with the header as line 1; parquet: 0-based rows) and
what was expected. Most run on both formats.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scenerec.data.validate import require_valid, row_problem, validate_dataset
from scenerec.errors import DataError

# Four instants written with different offsets: "+02:00" must come back converted to UTC.
STAMPS = [
    "2024-05-01T12:00:00Z",
    "2024-05-01T13:30:00+00:00",
    "2024-05-02T09:15:00+02:00",
    "2024-05-03T00:00:00Z",
]
STAMPS_UTC = ["2024-05-01 12:00", "2024-05-01 13:30", "2024-05-02 07:15", "2024-05-03 00:00"]


@pytest.fixture(params=["parquet", "csv"])
def fmt(request: pytest.FixtureRequest) -> str:
    return request.param


def interactions(fmt: str) -> pd.DataFrame:
    """Valid interactions: ISO strings with an offset in CSV, tz-aware UTC timestamps in parquet."""
    stamps = STAMPS if fmt == "csv" else pd.to_datetime(STAMPS, format="ISO8601", utc=True)
    return pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u2", "u3"],
            "item_id": ["i1", "i2", "i1", "i3"],
            "event_timestamp": stamps,
            "label": [1.0, 4.0, 1.0, 3.5],
        }
    )


def items() -> pd.DataFrame:
    """Valid items; i2 has no text, so it falls back to its title."""
    return pd.DataFrame(
        {
            "item_id": ["i1", "i2", "i3"],
            "title": ["Alpha", "Beta", "Gamma"],
            "text": ["alpha words", "", "gamma words"],
            "category": ["a", "b", "a"],
        }
    )


def write_table(directory: Path, name: str, frame: pd.DataFrame, fmt: str) -> Path:
    path = directory / f"{name}.{fmt}"
    if fmt == "csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


def write_dataset(
    directory: Path, fmt: str, inter: pd.DataFrame | None = None, item: pd.DataFrame | None = None
) -> Path:
    """A dataset directory holding `inter` and `item` (the valid tables when not given)."""
    write_table(directory, "interactions", interactions(fmt) if inter is None else inter, fmt)
    write_table(directory, "items", items() if item is None else item, fmt)
    return directory


def at(fmt: str, *rows: int) -> str:
    """How a problem line locates 0-based data rows: CSV line numbers (header = 1) or parquet rows."""
    if fmt == "csv":
        return ("line " if len(rows) == 1 else "lines ") + ", ".join(str(r + 2) for r in rows) + ":"
    return ("row " if len(rows) == 1 else "rows ") + ", ".join(map(str, rows)) + " (0-based):"


def problem(problems: list[str], *parts: str) -> str:
    """The one problem line containing every part."""
    hits = [line for line in problems if all(part in line for part in parts)]
    assert len(hits) == 1, f"expected one line with {parts!r} in:\n" + "\n".join(problems)
    return hits[0]


# --- valid data ---------------------------------------------------------------------------------


def test_valid_dataset_gives_contract_types_and_defaults(tmp_path: Path, fmt: str) -> None:
    result = validate_dataset(write_dataset(tmp_path, fmt))

    assert result.problems == []
    assert result.ok
    inter, item = result.tables["interactions"], result.tables["items"]
    for column in ("user_id", "item_id"):
        assert inter[column].map(type).eq(str).all()
    assert inter["user_id"].tolist() == ["u1", "u1", "u2", "u3"]
    assert str(inter["event_timestamp"].dtype) == "datetime64[ns, UTC]"
    assert inter["event_timestamp"].tolist() == list(pd.to_datetime(STAMPS_UTC).tz_localize("UTC"))
    assert inter["label"].dtype == np.float64
    assert inter["label"].tolist() == [1.0, 4.0, 1.0, 3.5]
    assert inter["scene"].tolist() == ["default"] * 4  # column absent: the contract's default
    assert inter["event"].eq("interaction").all()
    assert item["item_id"].map(type).eq(str).all()
    assert item["text"].tolist() == ["alpha words", "Beta", "gamma words"]  # empty text → title
    assert "users" not in result.tables  # optional and absent: no problem either


def test_blank_scene_gets_the_default_and_given_scenes_are_kept(tmp_path: Path, fmt: str) -> None:
    inter = interactions(fmt).assign(scene=["home", "", "search", " "])

    result = validate_dataset(write_dataset(tmp_path, fmt, inter=inter))

    assert result.problems == []
    assert result.tables["interactions"]["scene"].tolist() == ["home", "default", "search", "default"]


def test_integer_ids_in_parquet_become_strings(tmp_path: Path) -> None:
    inter = interactions("parquet").assign(user_id=[7, 7, 8, 9], item_id=[1, 2, 1, 3])
    item = items().assign(item_id=[1, 2, 3])

    result = validate_dataset(write_dataset(tmp_path, "parquet", inter, item))

    assert result.problems == []
    assert result.tables["interactions"]["item_id"].tolist() == ["1", "2", "1", "3"]
    assert result.tables["interactions"]["user_id"].tolist() == ["7", "7", "8", "9"]
    assert result.tables["items"]["item_id"].tolist() == ["1", "2", "3"]


def test_csv_ids_keep_their_form(tmp_path: Path) -> None:
    inter = interactions("csv").assign(item_id=["007", "7", "007", "7"])
    item = pd.DataFrame({"item_id": ["007", "7"]})

    result = validate_dataset(write_dataset(tmp_path, "csv", inter, item))

    assert result.problems == []
    assert result.tables["items"]["item_id"].tolist() == ["007", "7"]


def test_parquet_written_from_an_indexed_frame_keeps_its_id_column(tmp_path: Path) -> None:
    # items.set_index("item_id").to_parquet(...) stores item_id as the pandas index.
    write_table(tmp_path, "interactions", interactions("parquet"), "parquet")
    items().set_index("item_id").to_parquet(tmp_path / "items.parquet")

    result = validate_dataset(tmp_path)

    assert result.problems == []
    assert result.tables["items"]["item_id"].tolist() == ["i1", "i2", "i3"]


def test_require_valid_returns_tables_or_raises_every_problem(tmp_path: Path) -> None:
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.mkdir()
    bad.mkdir()
    assert set(require_valid(write_dataset(good, "csv"))) == {"interactions", "items"}

    write_dataset(bad, "csv", inter=interactions("csv").assign(user_id=["u1", "", "u2", "u3"]))
    (bad / "itmes.csv").write_text("item_id\n")
    with pytest.raises(DataError) as caught:
        require_valid(bad)
    assert len(caught.value.problems) == 2
    assert caught.value.exit_code == 2


# --- missing files, columns, empty tables ---------------------------------------------------------


@pytest.mark.parametrize("table", ["interactions", "items"])
def test_missing_file(tmp_path: Path, fmt: str, table: str) -> None:
    write_dataset(tmp_path, fmt)
    (tmp_path / f"{table}.{fmt}").unlink()

    problems = validate_dataset(tmp_path).problems

    line = problem(problems, f"{table}: missing file")
    assert f"{table}.parquet or {table}.csv" in line
    assert len(problems) == 1


def test_not_a_directory(tmp_path: Path) -> None:
    problems = validate_dataset(tmp_path / "nowhere").problems

    problem(problems, "nowhere", "not a directory")


@pytest.mark.parametrize(("table", "column"), [("interactions", "event_timestamp"), ("items", "item_id")])
def test_missing_required_column(tmp_path: Path, fmt: str, table: str, column: str) -> None:
    inter = interactions(fmt)
    item = items()
    if table == "interactions":
        inter = inter.drop(columns=[column])
    else:
        item = item.drop(columns=[column])

    problems = validate_dataset(write_dataset(tmp_path, fmt, inter, item)).problems

    line = problem(problems, f"{table}.{fmt}", f"missing column '{column}'")
    assert "found:" in line
    assert len(problems) == 1


@pytest.mark.parametrize("table", ["interactions", "items"])
def test_empty_table_header_only(tmp_path: Path, fmt: str, table: str) -> None:
    inter = interactions(fmt)
    item = items()
    if table == "interactions":
        inter = inter.iloc[:0]
    else:
        item = item.iloc[:0]

    problems = validate_dataset(write_dataset(tmp_path, fmt, inter, item)).problems

    problem(problems, f"{table}.{fmt}", "empty table", "expected at least one row")
    assert len(problems) == 1


# --- wrong types --------------------------------------------------------------------------------


def test_label_that_is_not_a_number(tmp_path: Path, fmt: str) -> None:
    inter = interactions(fmt).astype({"label": str})
    inter.loc[2, "label"] = "abc"

    problems = validate_dataset(write_dataset(tmp_path, fmt, inter=inter)).problems

    problem(problems, f"interactions.{fmt}", "'label'", at(fmt, 2), "expected a number", "'abc'")
    assert len(problems) == 1


def test_float_item_ids_in_parquet(tmp_path: Path) -> None:
    item = items().assign(item_id=[1.0, 2.0, 3.0])

    problems = validate_dataset(write_dataset(tmp_path, "parquet", item=item)).problems

    problem(problems, "items.parquet", "'item_id'", "wrong type float64", "expected text or integer ids")
    assert len(problems) == 1  # and no "item not in items" for every interaction on top


@pytest.mark.parametrize(
    ("column", "expected"),
    [("label", "expected a number"), ("user_id", "expected text or integer ids"), ("scene", "expected text")],
)
def test_bool_column_in_parquet(tmp_path: Path, column: str, expected: str) -> None:
    inter = interactions("parquet").assign(**{column: [True, False, True, True]})

    problems = validate_dataset(write_dataset(tmp_path, "parquet", inter=inter)).problems

    problem(problems, "interactions.parquet", f"'{column}'", "wrong type bool", expected)
    assert len(problems) == 1


def test_bool_words_as_label_in_csv(tmp_path: Path) -> None:
    inter = interactions("csv").astype({"label": str})
    inter.loc[1, "label"] = "true"

    problems = validate_dataset(write_dataset(tmp_path, "csv", inter=inter)).problems

    problem(problems, "interactions.csv", "'label'", "line 3:", "expected a number", "'true'")


def test_non_text_item_text_is_reported_not_raised(tmp_path: Path) -> None:
    item = items().assign(text=[1.5, np.nan, 2.5])

    problems = validate_dataset(write_dataset(tmp_path, "parquet", item=item)).problems

    problem(problems, "items.parquet", "'text'", "wrong type float64", "expected text")


def test_list_item_ids_are_reported_not_raised(tmp_path: Path) -> None:
    item = items().assign(item_id=[["i1"], ["i2"], ["i3"]])

    problems = validate_dataset(write_dataset(tmp_path, "parquet", item=item)).problems

    problem(problems, "items.parquet", "'item_id'", "rows 0, 1, 2 (0-based):", "expected text")
    assert len(problems) == 1


# --- ids ----------------------------------------------------------------------------------------


def test_null_and_blank_ids(tmp_path: Path, fmt: str) -> None:
    inter = interactions(fmt)
    inter.loc[2, "user_id"] = None  # CSV: an empty cell
    inter.loc[3, "item_id"] = "   "

    problems = validate_dataset(write_dataset(tmp_path, fmt, inter=inter)).problems

    expected = "null or empty id (expected a non-empty id)"
    problem(problems, f"interactions.{fmt}", "'user_id'", at(fmt, 2), expected)
    problem(problems, f"interactions.{fmt}", "'item_id'", at(fmt, 3), expected)
    assert len(problems) == 2  # the blank item id is not also reported as "not in items"


def test_null_user_id_on_csv_data_row_3_names_line_4(tmp_path: Path) -> None:
    inter = interactions("csv")
    inter.loc[2, "user_id"] = None

    problems = validate_dataset(write_dataset(tmp_path, "csv", inter=inter)).problems

    assert problems == [
        "interactions.csv: column 'user_id', line 4: null or empty id (expected a non-empty id); "
        "first value: ''"
    ]


def test_duplicate_item_ids(tmp_path: Path, fmt: str) -> None:
    item = pd.concat([items(), items().iloc[[1]]], ignore_index=True)  # i2 at rows 1 and 3

    problems = validate_dataset(write_dataset(tmp_path, fmt, item=item)).problems

    problem(problems, f"items.{fmt}", "'item_id'", at(fmt, 1, 3), "duplicate ids", "expected each id once")
    assert len(problems) == 1


def test_interaction_with_unknown_item(tmp_path: Path, fmt: str) -> None:
    inter = interactions(fmt)
    inter.loc[3, "item_id"] = "i404"

    problems = validate_dataset(write_dataset(tmp_path, fmt, inter=inter)).problems

    line = problem(problems, f"interactions.{fmt}", "'item_id'", at(fmt, 3), "item not in items")
    assert "expected every item_id in items" in line and "'i404'" in line
    assert len(problems) == 1


# --- timestamps ---------------------------------------------------------------------------------


def test_unparseable_timestamp(tmp_path: Path, fmt: str) -> None:
    inter = interactions("csv")  # text timestamps, also as a parquet string column
    inter.loc[1, "event_timestamp"] = "yesterday"

    problems = validate_dataset(write_dataset(tmp_path, fmt, inter=inter)).problems

    problem(
        problems, f"interactions.{fmt}", "'event_timestamp'", at(fmt, 1), "unparseable timestamp", "ISO-8601"
    )
    assert len(problems) == 1


@pytest.mark.parametrize("naive", ["2024-05-01T12:00:00", "2024-05-01 12:00:00", "2024-05-01"])
def test_naive_timestamp_in_csv(tmp_path: Path, naive: str) -> None:
    inter = interactions("csv")
    inter.loc[2, "event_timestamp"] = naive

    problems = validate_dataset(write_dataset(tmp_path, "csv", inter=inter)).problems

    problem(problems, "interactions.csv", "'event_timestamp'", "line 4:", "naive timestamp", "UTC offset")
    assert len(problems) == 1


def test_naive_timestamps_in_parquet(tmp_path: Path) -> None:
    inter = interactions("parquet")
    inter["event_timestamp"] = inter["event_timestamp"].dt.tz_localize(None)

    problems = validate_dataset(write_dataset(tmp_path, "parquet", inter=inter)).problems

    problem(problems, "interactions.parquet", "'event_timestamp'", "naive timestamps", "timezone-aware")
    assert len(problems) == 1


def test_epoch_seconds_are_rejected_with_a_hint(tmp_path: Path, fmt: str) -> None:
    inter = interactions(fmt).assign(event_timestamp=[1714564800, 1714570200, 1714634100, 1714694400])

    problems = validate_dataset(write_dataset(tmp_path, fmt, inter=inter)).problems

    line = problem(problems, f"interactions.{fmt}", "'event_timestamp'")
    assert "unit='s', utc=True" in line
    if fmt == "csv":
        assert "lines 2, 3, 4, 5:" in line
    else:
        assert "wrong type int64" in line
    assert len(problems) == 1


def test_null_timestamp_in_parquet(tmp_path: Path) -> None:
    inter = interactions("parquet")
    inter.loc[1, "event_timestamp"] = pd.NaT

    problems = validate_dataset(write_dataset(tmp_path, "parquet", inter=inter)).problems

    problem(problems, "interactions.parquet", "'event_timestamp'", "row 1 (0-based):", "null timestamp")


def test_timestamp_beyond_nanosecond_range_is_reported_not_raised(tmp_path: Path) -> None:
    # A "never" sentinel such as 9999-12-31 fits parquet's microseconds, not datetime64[ns].
    stamps = [datetime(2024, 5, 1, tzinfo=UTC)] * 3 + [datetime(9999, 12, 31, tzinfo=UTC)]
    rest = interactions("parquet").drop(columns="event_timestamp")
    table = pa.Table.from_pandas(rest, preserve_index=False)
    table = table.append_column("event_timestamp", pa.array(stamps, pa.timestamp("us", tz="UTC")))
    pq.write_table(table, tmp_path / "interactions.parquet")
    write_table(tmp_path, "items", items(), "parquet")

    problems = validate_dataset(tmp_path).problems

    problem(problems, "interactions.parquet", "'event_timestamp'", "row 3 (0-based):", "out of range")
    assert len(problems) == 1


# --- the directory itself -------------------------------------------------------------------------


def test_likely_typos_are_flagged_and_known_extras_are_not(tmp_path: Path, fmt: str) -> None:
    write_dataset(tmp_path, fmt)
    for name in ("itmes.csv", "interaction.parquet", "truth.json", "README.md", "notes.txt"):
        (tmp_path / name).write_text("x\n")

    problems = validate_dataset(tmp_path).problems

    problem(problems, "itmes.csv", "looks like a typo", "expected items.parquet or items.csv")
    problem(problems, "interaction.parquet", "looks like a typo", "interactions.parquet or interactions.csv")
    assert not any("truth.json" in line or "README.md" in line or "notes.txt" in line for line in problems)
    assert len(problems) == 2


def test_both_formats_of_one_table(tmp_path: Path) -> None:
    write_dataset(tmp_path, "parquet")
    write_table(tmp_path, "interactions", interactions("csv"), "csv")

    problems = validate_dataset(tmp_path).problems

    problem(problems, "interactions.parquet", "interactions.csv", "both", "expected exactly one")
    assert len(problems) == 1


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("interactions.parquet", b"this is not parquet"),
        ("interactions.csv", b"user_id\n\xff\xfe\x00\n"),
        ("interactions.csv", b""),
    ],
)
def test_unreadable_file_is_a_problem_not_a_traceback(tmp_path: Path, name: str, content: bytes) -> None:
    write_table(tmp_path, "items", items(), "csv")
    (tmp_path / name).write_bytes(content)

    problems = validate_dataset(tmp_path).problems

    problem(problems, name, "cannot be read")
    assert len(problems) == 1


def test_every_problem_is_reported_at_once(tmp_path: Path, fmt: str) -> None:
    inter = interactions(fmt).astype({"label": str})
    inter.loc[0, "user_id"] = ""
    inter.loc[1, "item_id"] = "i404"
    inter.loc[2, "label"] = "abc"
    item = pd.concat([items(), items().iloc[[0]]], ignore_index=True)
    item.loc[1, "item_id"] = None
    write_dataset(tmp_path, fmt, inter, item)
    (tmp_path / "itmes.csv").write_text("item_id\n")

    problems = validate_dataset(tmp_path).problems

    problem(problems, f"interactions.{fmt}", "'user_id'", at(fmt, 0), "null or empty id")
    problem(problems, f"interactions.{fmt}", "'item_id'", at(fmt, 1), "item not in items")
    problem(problems, f"interactions.{fmt}", "'label'", at(fmt, 2), "expected a number")
    problem(problems, f"items.{fmt}", "'item_id'", at(fmt, 1), "null or empty id")
    problem(problems, f"items.{fmt}", "'item_id'", at(fmt, 0, 3), "duplicate ids")
    problem(problems, "itmes.csv", "looks like a typo")
    assert len(problems) == 6


# --- the line format ------------------------------------------------------------------------------


def test_row_problem_shows_the_first_rows_and_counts_the_rest() -> None:
    values = pd.Series(list("abcdefgh"))
    mask = np.ones(8, dtype=bool)

    csv = row_problem("t.csv", True, "c", mask, "bad (expected good)", values)
    parquet = row_problem("t.parquet", False, "c", mask, "bad (expected good)", values)

    assert csv == "t.csv: column 'c', lines 2, 3, 4, 5, 6 and 3 more: bad (expected good); first value: 'a'"
    assert parquet.startswith("t.parquet: column 'c', rows 0, 1, 2, 3, 4 and 3 more (0-based): bad")


def test_large_unsigned_ids_in_parquet_keep_their_digits(tmp_path: Path) -> None:
    big = 2**63 + 5  # beyond int64: must not wrap around to a negative id
    inter = interactions("parquet").assign(item_id=np.array([big] * 4, dtype=np.uint64))
    item = pd.DataFrame({"item_id": np.array([big], dtype=np.uint64)})

    result = validate_dataset(write_dataset(tmp_path, "parquet", inter, item))

    assert result.problems == []
    assert result.tables["items"]["item_id"].tolist() == [str(big)]


def test_a_parquet_log_loads_as_categoricals_exactly_as_its_csv(tmp_path: Path) -> None:
    """The log's text columns are read from parquet as categoricals (the memory of a 10^7-row log);
    the cleaned, encoded dataset equals the one its CSV copy gives, repeats and blanks included."""
    from scenerec.data.dataset import load_dataset
    from scenerec.data.synthetic import SyntheticSpec, write_synthetic

    write_synthetic(tmp_path / "pq", SyntheticSpec(users=60, items=40, max_events=30))
    log = pd.read_parquet(tmp_path / "pq" / "interactions.parquet")
    # a repeated pair, a blank scene (-> the default scene) and ids that sort differently as text
    log = pd.concat([log, log.iloc[[3]].assign(event_timestamp=log["event_timestamp"].iloc[3])])
    log.loc[log.index[5], "scene"] = " "
    log.to_parquet(tmp_path / "pq" / "interactions.parquet", index=False)
    (tmp_path / "csv").mkdir()
    log.assign(event_timestamp=log["event_timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")).to_csv(
        tmp_path / "csv" / "interactions.csv", index=False
    )
    pd.read_parquet(tmp_path / "pq" / "items.parquet").to_csv(tmp_path / "csv" / "items.csv", index=False)
    from_parquet, from_csv = load_dataset(tmp_path / "pq"), load_dataset(tmp_path / "csv")
    for column in ("user_id", "item_id", "scene", "event", "device"):
        dtype = from_parquet.interactions[column].dtype
        assert isinstance(dtype, pd.CategoricalDtype), column
        assert list(dtype.categories) == sorted(dtype.categories)  # sorting by it sorts as text
        text = from_parquet.interactions[column].astype(str)
        assert text.tolist() == from_csv.interactions[column].tolist()
    encoded = ["u", "i", "s", "d", "pos", "label"]
    assert from_parquet.interactions[encoded].equals(from_csv.interactions[encoded])
    assert "default" in set(from_parquet.interactions["scene"])
    for name in ("users", "items", "scenes", "devices"):
        mine, theirs = getattr(from_parquet.vocab, name), getattr(from_csv.vocab, name)
        assert mine.dtype == object and mine.tolist() == theirs.tolist(), name
