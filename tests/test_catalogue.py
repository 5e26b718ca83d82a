"""The catalogue log and its fold: what add, hide, show and remove mean, and a cut-off line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scenerec.catalogue import CatalogueLog, CatalogueState, ItemChange
from scenerec.errors import DataError


def add(item: str, text: str = "a text") -> ItemChange:
    return ItemChange(
        "add", item, title=item, text=text, embedding=np.arange(4, dtype=np.float32), encoder="e"
    )


def test_log_round_trips_changes_and_their_embeddings(tmp_path: Path) -> None:
    log = CatalogueLog(tmp_path / "items" / "catalogue.jsonl")
    assert log.size() == 0 and log.read_from(0) == ([], 0)
    log.append([add("n1", "früh"), ItemChange("hide", "i3")])
    changes, offset = log.read_from(0)
    assert [(c.action, c.item_id) for c in changes] == [("add", "n1"), ("hide", "i3")]
    assert changes[0].text == "früh" and changes[0].encoder == "e"
    np.testing.assert_array_equal(changes[0].embedding, np.arange(4, dtype=np.float32))
    assert offset == log.size()
    log.append([ItemChange("show", "i3")])
    later, end = log.read_from(offset)  # a follower reads only what was appended
    assert [c.action for c in later] == ["show"] and end == log.size()


def test_a_cut_off_last_line_is_not_read_until_it_is_complete(tmp_path: Path) -> None:
    log = CatalogueLog(tmp_path / "catalogue.jsonl")
    log.append([add("n1")])
    _, offset = log.read_from(0)
    whole = add("n2").to_json() + "\n"
    with log.path.open("a") as handle:
        handle.write(whole[:20])  # a writer cut off mid-line
    assert log.read_from(offset) == ([], offset)
    with log.path.open("a") as handle:
        handle.write(whole[20:])
    changes, end = log.read_from(offset)
    assert [c.item_id for c in changes] == ["n2"] and end == log.size()


def test_fold_add_hide_show_remove() -> None:
    state = CatalogueState()
    for change in [add("n1"), add("n2"), ItemChange("hide", "n1"), ItemChange("hide", "i7")]:
        state.apply(change)
    trained = {"i7": 0, "i8": 1}
    assert [c.item_id for c in state.added_for(trained)] == ["n2"]  # n1 hidden
    assert state.hidden == {"n1", "i7"}
    state.apply(ItemChange("show", "n1"))
    assert [c.item_id for c in state.added_for(trained)] == ["n1", "n2"]
    state.apply(ItemChange("remove", "n1"))
    state.apply(ItemChange("remove", "i8"))  # a trained item cannot leave its graphs: hidden
    assert [c.item_id for c in state.added_for(trained)] == ["n2"] and state.hidden == {"i7", "i8"}
    state.apply(add("n2", "new text"))  # added again: replaced
    assert state.added["n2"].text == "new text"
    assert state.added_for({"n2": 5}) == []  # a model trained after the add holds it itself


def test_unchanged_adds_are_repeats() -> None:
    state = CatalogueState()
    state.apply(add("n1"))
    assert state.unchanged(add("n1")) and not state.unchanged(add("n1", "other"))
    state.apply(ItemChange("hide", "n1"))
    assert not state.unchanged(add("n1"))  # adding a hidden item shows it again: a change


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (add("i7"), "line 1: item_id 'i7': already in the model's catalogue"),
        (ItemChange("hide", "nope"), "line 1: item_id 'nope': not in the catalogue"),
        (ItemChange("show", "i7"), "line 1: item_id 'i7': not hidden"),
        (ItemChange("remove", "gone"), "line 1: item_id 'gone': not in the catalogue"),
    ],
)
def test_check_names_the_line_and_item(change: ItemChange, message: str) -> None:
    with pytest.raises(DataError, match=message):
        CatalogueState().check([change], {"i7": 0}, "body")


def test_check_reads_changes_in_order() -> None:
    CatalogueState().check([add("n1"), ItemChange("hide", "n1"), ItemChange("show", "n1")], {}, "body")
    with pytest.raises(DataError, match="line 2: item_id 'n1': not in the catalogue"):
        CatalogueState().check([ItemChange("hide", "n1"), ItemChange("hide", "n1"), add("n1")], {}, "b")
