"""ONNX graphs past the 2 GB protobuf limit: weights in one external-data file beside the graph.

A real export of a small joint model with the threshold at 0 bytes takes the path a 10^6-item
catalogue takes; ONNX Runtime opens the graphs from the directory, with the same answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from scenerec import onnx_files
from scenerec.export import export_model_graphs
from scenerec.model.inputs import ModelInputs
from scenerec.onnx_files import data_file, save_graph
from scenerec.onnx_runtime import create_session
from tests.model.test_joint import build, request


def matmul_graph(weights: np.ndarray) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "matmul",
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", weights.shape[0]])],
        outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", weights.shape[1]])],
        initializer=[numpy_helper.from_array(weights, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


WEIGHTS = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
X = np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32)


def test_a_graph_past_the_threshold_keeps_its_weights_in_one_data_file(tmp_path: Path) -> None:
    path = tmp_path / "big.onnx"
    assert save_graph(matmul_graph(WEIGHTS), path, external_from=1000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", "big.onnx.data"]
    assert path.stat().st_size < WEIGHTS.nbytes <= data_file(path).stat().st_size
    session, _ = create_session(path)
    np.testing.assert_allclose(session.run(None, {"x": X})[0], X @ WEIGHTS, rtol=1e-5, atol=1e-5)


def test_a_small_graph_stays_one_file_and_a_stale_data_file_goes(tmp_path: Path) -> None:
    path = tmp_path / "small.onnx"
    save_graph(matmul_graph(WEIGHTS), path, external_from=0)
    assert data_file(path).is_file()
    assert not save_graph(matmul_graph(2 * WEIGHTS), path, external_from=10**9)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.onnx"]
    session, _ = create_session(path)
    np.testing.assert_allclose(session.run(None, {"x": X})[0], X @ (2 * WEIGHTS), rtol=1e-5, atol=1e-5)


def test_an_invalid_graph_writes_nothing_and_leaves_the_old_one(tmp_path: Path) -> None:
    path = tmp_path / "g.onnx"
    save_graph(matmul_graph(WEIGHTS), path, external_from=0)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    broken = matmul_graph(WEIGHTS)
    broken.graph.node[0].input[1] = "no_such_tensor"
    with pytest.raises(onnx.checker.ValidationError, match="no_such_tensor"):
        save_graph(broken, path, external_from=0)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_the_model_export_writes_external_data_past_the_threshold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = build()
    inputs = ModelInputs(**{name: t.numpy() for name, t in request().items()})
    samples = [ModelInputs(**{k: v[:1] for k, v in vars(inputs).items()}), inputs]
    inline, external = tmp_path / "inline", tmp_path / "external"
    inline.mkdir(), external.mkdir()
    export_model_graphs(model, inline, samples)
    monkeypatch.setattr(onnx_files, "EXTERNAL_DATA_BYTES", 0)
    export_model_graphs(model, external, samples)  # raises when a graph's parity fails
    graphs = sorted(p.name for p in inline.glob("*.onnx"))
    assert graphs == sorted(p.name for p in external.glob("*.onnx")) and "ranker.onnx" in graphs
    assert not list(inline.glob("*.data"))
    assert sorted(p.name for p in external.glob("*.data")) == [f"{g}.data" for g in graphs]
    assert not [p for p in external.iterdir() if p.name.startswith(".")]  # no scratch left behind
    feeds = samples[-1].as_numpy()
    want = create_session(inline / "user_tower.onnx")[0].run(None, feeds)
    got = create_session(external / "user_tower.onnx")[0].run(None, feeds)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
