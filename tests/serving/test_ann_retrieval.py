"""Retrieval through the model's ANN index (FAISS HNSW, scenerec/ann.py + serving/ann_retrieval.py).

A small catalogue (200 items) with the export's index (`retrieval.ann=always`) and efSearch above
the catalogue size, where HNSW is exact in practice: the index path must answer what the exact graph answers.
Real FAISS, real ONNX Runtime sessions, the real trained model directory.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scenerec.ann import ANN_FILE, build_index
from scenerec.artifact import MANIFEST, ArtifactError, sha256_file
from scenerec.config import RetrievalConfig
from scenerec.item_encoder import ItemEncoder
from serving.runtime import Overlay, Query, Runtime

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ann_model(served_model: tuple[Path, Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The served model with the index the export writes under `retrieval.ann=always` (built the
    same way, from the same vectors: the export itself is tested in tests/test_train.py), efSearch
    above the catalogue size."""
    out = Path(shutil.copytree(served_model[1], tmp_path_factory.mktemp("ann") / "model"))
    vectors = np.stack(pd.read_parquet(out / "items.parquet")["vector"].to_numpy())
    config = RetrievalConfig(ann="always", hnsw_m=8, hnsw_ef_search=400)
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["ann"] = build_index(vectors, config, out / ANN_FILE)
    manifest["files"][ANN_FILE] = sha256_file(out / ANN_FILE)
    (out / MANIFEST).write_text(json.dumps(manifest))
    return out


def queries(data: Path, rt: Runtime, n: int = 40, k: int = 10) -> list[Query]:
    log = pd.read_parquet(data / "interactions.parquet").sort_values("event_timestamp", kind="stable")
    out = []
    for _user, rows in list(log.groupby("user_id", sort=True, observed=True))[:n]:
        items = rt.item_indices(rows["item_id"].astype(str).tolist())[-rt.max_history :]
        scenes = np.array([rt.scene_index[s] for s in rows["scene"].astype(str)][-len(items) :])
        out.append(
            Query(items, scenes, scene=rt.default_scene, device=0, timestamp=1.7e9, k=k, exclude=items)
        )
    return out


def test_the_index_is_hashed_and_described_in_the_manifest(ann_model: Path) -> None:
    manifest = json.loads((ann_model / MANIFEST).read_text())
    assert manifest["ann"]["file"] == ANN_FILE and manifest["ann"]["items"] == manifest["dims"]["items"]
    assert manifest["ann"]["ef_search"] == 400 and manifest["ann"]["metric"] == "inner_product"
    assert manifest["files"][ANN_FILE] == sha256_file(ann_model / ANN_FILE)


def test_the_index_answers_what_the_exact_graph_answers(
    ann_model: Path, served_model: tuple[Path, Path, Path]
) -> None:
    approximate = Runtime.from_model_dir(ann_model)
    exact = Runtime.from_model_dir(ann_model, retrieval="exact")
    assert approximate.ann is not None and exact.ann is None
    asked = queries(served_model[0], exact)
    for ann_answer, exact_answer in zip(approximate.recommend(asked), exact.recommend(asked), strict=True):
        np.testing.assert_array_equal(ann_answer.items, exact_answer.items)
        np.testing.assert_allclose(ann_answer.scores, exact_answer.scores, rtol=1e-5, atol=1e-5)
    # retrieval itself, deeper than the ranker's answer: the top 100 of both paths (recall@100 = 1)
    approximate.retrieval_depth = exact.retrieval_depth = 100
    asked = queries(served_model[0], exact, k=100)
    for a, e in zip(approximate.recommend(asked), exact.recommend(asked), strict=True):
        assert len(e.items) == 100 and set(a.items.tolist()) == set(e.items.tolist())


def test_history_exclusion_and_filters_hold_on_the_index_path(
    ann_model: Path, served_model: tuple[Path, Path, Path]
) -> None:
    rt = Runtime.from_model_dir(ann_model)
    asked = queries(served_model[0], rt, n=10)
    categories = sorted({str(c) for c in rt.info.categories})[:1]
    for query in asked:
        query.categories = frozenset(categories)
    for query, answer in zip(asked, rt.recommend(asked), strict=True):
        assert not set(answer.items.tolist()) & set(query.exclude.tolist())
        assert {str(rt.info.categories[i]) for i in answer.items} <= set(categories)


def test_items_added_after_export_and_hidden_ones_hold_on_the_index_path(
    ann_model: Path, served_model: tuple[Path, Path, Path]
) -> None:
    """The index is the export's: items added later are scored exactly beside it (and hidden ones
    masked) on both paths, so adding an item needs no rebuild and both paths still agree."""
    approximate = Runtime.from_model_dir(ann_model)
    exact = Runtime.from_model_dir(ann_model, retrieval="exact")
    encoder = ItemEncoder(ann_model, approximate.manifest)
    texts = ["a quiet mystery novel", "a loud action film", "a cookbook of soups"]
    tables = encoder.tables(encoder.embed(texts))
    hidden = np.array([0, 5, 17], np.int64)
    for rt in (approximate, exact):
        rt.overlay = Overlay.build(["new-0", "new-1", "new-2"], tables, hidden, rt.n_items)
    n = exact.n_items
    for depth, k in ((20, 10), (n, n)):  # the index's 20 best, then everything the index holds
        for rt in (approximate, exact):
            rt.retrieval_depth = depth
        asked = queries(served_model[0], exact, n=20, k=k)
        for a, e in zip(approximate.recommend(asked), exact.recommend(asked), strict=True):
            np.testing.assert_array_equal(a.items, e.items)
            np.testing.assert_allclose(a.scores, e.scores, rtol=1e-5, atol=1e-5)
            assert not set(a.items.tolist()) & set(hidden.tolist())
    assert {n, n + 1, n + 2} <= set(a.items.tolist())  # the added items are retrieved and ranked


def test_a_model_without_an_index_serves_exactly(served_model: tuple[Path, Path, Path]) -> None:
    rt = Runtime.from_model_dir(served_model[1])  # 200 items: under retrieval.ann_min_items
    assert rt.ann is None and "ann" not in rt.manifest
    assert len(rt.recommend(queries(served_model[0], rt, n=3))[0].items) == 10


def test_an_index_that_does_not_match_is_refused_naming_the_file(ann_model: Path, tmp_path: Path) -> None:
    changed = tmp_path / "changed"
    shutil.copytree(ann_model, changed)
    with (changed / ANN_FILE).open("r+b") as handle:  # a byte changed after export
        handle.seek(100)
        byte = handle.read(1)
        handle.seek(100)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ArtifactError, match=f"{ANN_FILE}: sha256 differs"):
        Runtime.from_model_dir(changed)
    smaller = tmp_path / "smaller"
    shutil.copytree(ann_model, smaller)
    manifest = json.loads((smaller / MANIFEST).read_text())
    vectors = np.random.default_rng(0).normal(size=(50, manifest["ann"]["dim"])).astype(np.float32)
    build_index(vectors, RetrievalConfig(), smaller / ANN_FILE)  # another catalogue's index, re-hashed
    manifest["files"][ANN_FILE] = sha256_file(smaller / ANN_FILE)
    (smaller / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=rf"{ANN_FILE}: indexes 50 items .* the model has 200"):
        Runtime.from_model_dir(smaller)
