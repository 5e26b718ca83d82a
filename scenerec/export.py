"""Exporting a trained joint model to ONNX graphs, each checked and compared with PyTorch.

The graph split follows the two serving stages (see `scenerec.artifact` for the layout):
retrieval scores the whole catalogue with one matrix product of precomputed item vectors; the
ranker re-scores the retrieved candidates with the score's parts and the conversion head.
Parity (max abs error, PyTorch vs ONNX Runtime on batch 1 and batch N) must stay <= 1e-4.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from scenerec.model.inputs import INPUT_NAMES, ModelInputs
from scenerec.model.joint import ItemSide, JointModel, QuerySide
from scenerec.onnx_files import save_graph
from scenerec.onnx_runtime import create_session
from scenerec.text import OnnxParityError

OPSET = 17
PARITY_TOLERANCE = 1e-4
USER_OUTPUTS = ("query", "query_cf", "query_text", "query_scene", "context", "lambda", "item_item_weight")
RANKER_INPUTS = (
    "query_cf",
    "query_text",
    "query_scene",
    "context",
    "item_item_weight",
    "history",
    "candidates",
)
RANKER_OUTPUTS = ("score", "parts", "p_conversion")
ITEM_TOWER_OUTPUTS = ("raw_text", "text", "collaborative", "scene", "bias")
# the fresh ranker reads the item tables as inputs (ItemTower's outputs of items added after export)
FRESH_ITEM_INPUTS = ("item_collaborative", "item_raw_text", "item_text", "item_scene", "item_bias")
FRESH_RANKER_INPUTS = (*RANKER_INPUTS[:4], *FRESH_ITEM_INPUTS, "candidates")


class _Frozen(nn.Module):
    """Holds the model and its item side precomputed as buffers (item vectors are constants at serving)."""

    def __init__(self, model: JointModel) -> None:
        super().__init__()
        self.model = model
        with torch.no_grad():
            items = model.item_side()
        for name, value in items._asdict().items():
            self.register_buffer(f"item_{name}", value.detach().clone())

    def items(self) -> ItemSide:
        return ItemSide(*(getattr(self, f"item_{name}") for name in ItemSide._fields))


class UserTowerGraph(_Frozen):
    def forward(
        self,
        hist_items: torch.Tensor,
        hist_scenes: torch.Tensor,
        scene: torch.Tensor,
        device: torch.Tensor,
        hour: torch.Tensor,
        weekday: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        q = self.model.query_side(hist_items, hist_scenes, scene, device, hour, weekday, items=self.items())
        return q.vectors(), q.cf, q.text, q.scene, q.context, q.lam, q.item_item


class RankerGraph(_Frozen):
    def forward(
        self,
        query_cf: torch.Tensor,
        query_text: torch.Tensor,
        query_scene: torch.Tensor,
        context: torch.Tensor,
        item_item_weight: torch.Tensor,
        history: torch.Tensor,
        candidates: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        query = QuerySide(query_cf, query_text, query_scene, context, query_cf[:, 0], item_item_weight)
        items = self.items()
        parts = self.model.score_parts(query, items, candidates, history)
        p_conversion = torch.sigmoid(self.model.conversion_logit(query, items, candidates))
        return parts.sum(dim=-1), parts, p_conversion


class FreshRankerGraph(nn.Module):
    """The ranker for items added after export: their tables (item_tower.onnx's outputs) are inputs.

    The same parts and conversion head as `RankerGraph`; the item-item part is 0 (a new item has
    no co-occurrence row or column in the exported B)."""

    def __init__(self, model: JointModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        query_cf: torch.Tensor,
        query_text: torch.Tensor,
        query_scene: torch.Tensor,
        context: torch.Tensor,
        item_collaborative: torch.Tensor,
        item_raw_text: torch.Tensor,
        item_text: torch.Tensor,
        item_scene: torch.Tensor,
        item_bias: torch.Tensor,
        candidates: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        zeros = query_cf[:, 0]
        query = QuerySide(query_cf, query_text, query_scene, context, zeros, zeros)
        d = self.model.config.dim
        items = ItemSide(
            ids=item_collaborative[:, :d],
            successor=item_collaborative[:, d:],
            raw_text=item_raw_text,
            text=item_text,
            scene=item_scene,
            bias=item_bias,
        )
        cf = torch.einsum("bd,bcd->bc", query_cf, item_collaborative[candidates])
        text = torch.einsum("bd,bcd->bc", query_text, item_text[candidates])
        scene = torch.einsum("bd,bcd->bc", query_scene, item_scene[candidates]) + item_bias[candidates]
        parts = torch.stack([cf, text, scene, torch.zeros_like(cf)], dim=-1)
        p_conversion = torch.sigmoid(self.model.conversion_logit(query, items, candidates))
        return parts.sum(dim=-1), parts, p_conversion


class ItemTowerGraph(nn.Module):
    """A brand-new item's vectors from its frozen text embedding (it is cold: ID generated from text)."""

    def __init__(self, model: JointModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, text_embedding: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raw = self.model.items.adaptor(text_embedding)
        ids, scene, bias = self.model.items.generated(raw)
        # the text vector as retrieval sees it: a new item is in popularity bucket 0
        scaled = raw * torch.exp(self.model.lambda_popularity[0])
        # a new item follows nothing the model knows of: zero successor vector
        successor = raw.new_zeros(raw.shape[0], self.model.items.successor.shape[1])
        return raw, scaled, torch.cat([ids, successor], dim=-1), scene, bias


def export_onnx(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    input_names: list[str],
    output_names: list[str],
    dynamic_axes: dict[str, dict[int, str]],
) -> None:
    """torch -> ONNX with the TorchScript exporter (the dynamo one needs onnxscript, not installed).

    The exporter writes to a scratch directory (above 2 GB it spreads the weights over one file per
    tensor there); `save_graph` then puts the graph in place, its weights in one `.data` file when large.
    """
    scratch = path.with_name(f".{path.name}.export")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    module.eval()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            torch.onnx.export(
                module,
                args,
                str(scratch / path.name),
                input_names=input_names,
                output_names=output_names,
                dynamic_axes=dynamic_axes,
                opset_version=OPSET,
                dynamo=False,
            )
        save_graph(onnx.load(str(scratch / path.name)), path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def retrieval_graph(item_vectors: np.ndarray, neighbours: tuple[np.ndarray, np.ndarray], path: Path) -> None:
    """query [B, Q], item_item_weight [B], history [B, H] (pad N), exclude [B, E] (pad N), k [1]
    -> scores [B, N] (excluded = -inf), top k.

    scores = query . items + w_ii * (sum of the history's sparse B rows): the dot product, then the
    history's B rows gathered ([B, H, K]) and scatter-added into the same [B, N + 1] row.
    Written with onnx.helper: TopK needs `k` as a runtime input, which tracing would bake in.
    """
    n, q = item_vectors.shape
    columns, weights = neighbours
    with_pad = np.concatenate([item_vectors, np.zeros((1, q), np.float32)]).T.astype(np.float32)  # [Q, N+1]
    nodes = [
        helper.make_node("MatMul", ["query", "items_t"], ["dot_scores"]),
        helper.make_node("Gather", ["ii_columns", "history"], ["ii_cols3"], axis=0),  # [B, H, K]
        helper.make_node("Gather", ["ii_weights", "history"], ["ii_vals3"], axis=0),
        helper.make_node("Unsqueeze", ["item_item_weight", "axes_12"], ["ii_w3"]),  # [B, 1, 1]
        helper.make_node("Mul", ["ii_vals3", "ii_w3"], ["ii_scaled3"]),
        helper.make_node("Reshape", ["ii_cols3", "flat_shape"], ["ii_cols"]),  # [B, H*K]
        helper.make_node("Reshape", ["ii_scaled3", "flat_shape"], ["ii_vals"]),
        helper.make_node(
            "ScatterElements", ["dot_scores", "ii_cols", "ii_vals"], ["raw_scores"], axis=1, reduction="add"
        ),
        helper.make_node("Shape", ["exclude"], ["exclude_shape"]),
        helper.make_node("Expand", ["neg_inf", "exclude_shape"], ["neg_updates"]),
        helper.make_node("ScatterElements", ["raw_scores", "exclude", "neg_updates"], ["masked"], axis=1),
        helper.make_node("Slice", ["masked", "zero", "n_items", "one"], ["scores"]),
        helper.make_node("TopK", ["scores", "k"], ["top_scores", "top_items"], axis=1, largest=1, sorted=1),
    ]
    graph = helper.make_graph(
        nodes,
        "scenerec_retrieval",
        inputs=[
            helper.make_tensor_value_info("query", TensorProto.FLOAT, ["batch", q]),
            helper.make_tensor_value_info("item_item_weight", TensorProto.FLOAT, ["batch"]),
            helper.make_tensor_value_info("history", TensorProto.INT64, ["batch", "history"]),
            helper.make_tensor_value_info("exclude", TensorProto.INT64, ["batch", "excluded"]),
            helper.make_tensor_value_info("k", TensorProto.INT64, [1]),
        ],
        outputs=[
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", n]),
            helper.make_tensor_value_info("top_items", TensorProto.INT64, ["batch", "k"]),
            helper.make_tensor_value_info("top_scores", TensorProto.FLOAT, ["batch", "k"]),
        ],
        initializer=[
            numpy_helper.from_array(with_pad, "items_t"),
            numpy_helper.from_array(columns.astype(np.int64), "ii_columns"),
            numpy_helper.from_array(weights.astype(np.float32), "ii_weights"),
            numpy_helper.from_array(np.array([1, 2], np.int64), "axes_12"),
            numpy_helper.from_array(np.array([0, -1], np.int64), "flat_shape"),
            numpy_helper.from_array(np.full((1, 1), -np.inf, np.float32), "neg_inf"),
            numpy_helper.from_array(np.array([0], np.int64), "zero"),
            numpy_helper.from_array(np.array([n], np.int64), "n_items"),
            numpy_helper.from_array(np.array([1], np.int64), "one"),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="scenerec", ir_version=8
    )  # IR 8 goes with opset 17; onnx 1.23's default is newer than ORT reads
    save_graph(model, path)


def export_model_graphs(model: JointModel, out: Path, samples: list[ModelInputs]) -> dict[str, Any]:
    """Write user_tower, retrieval, ranker (and item_tower with text) to `out`; parity per graph.

    `samples` are real inputs of different batch sizes (e.g. 1 and 16): the first is traced, all
    are compared. Raises `OnnxParityError` above the tolerance.
    """
    model.eval()
    parity: dict[str, Any] = {}
    user = UserTowerGraph(model)
    traced = samples[-1].as_tensors()
    export_onnx(
        user,
        tuple(traced[n] for n in INPUT_NAMES),
        out / "user_tower.onnx",
        list(INPUT_NAMES),
        list(USER_OUTPUTS),
        {
            **{n: {0: "batch"} for n in INPUT_NAMES},
            # a request pads its history only to the batch's longest (left pads change nothing)
            "hist_items": {0: "batch", 1: "history"},
            "hist_scenes": {0: "batch", 1: "history"},
            **{n: {0: "batch"} for n in USER_OUTPUTS},
        },
    )
    session, _ = create_session(out / "user_tower.onnx")
    errors, queries = [], []
    for sample in samples:
        with torch.inference_mode():
            expected = [t.numpy() for t in user(*sample.as_tensors().values())]
        got = session.run(list(USER_OUTPUTS), sample.as_numpy())
        errors.append(max(float(np.abs(g - e).max()) for g, e in zip(got, expected, strict=True)))
        queries.append(dict(zip(USER_OUTPUTS, expected, strict=True)))
    pads = {"hist_items": model.n_items, "hist_scenes": model.n_scenes}
    errors.append(_history_axis_error(session, samples[-1], pads))
    parity["user_tower"] = _record(errors, samples)

    items = user.items()
    item_vectors = items.vectors().numpy()
    neighbours = (model.item_item.columns.numpy(), model.item_item.weights.numpy())
    retrieval_graph(item_vectors, neighbours, out / "retrieval.onnx")
    session, _ = create_session(out / "retrieval.onnx")
    errors = []
    for sample, query in zip(samples, queries, strict=True):
        exclude = sample.hist_items  # history (pad = N) is what serving excludes
        with torch.inference_mode():
            item_item = model.item_item.scores(torch.as_tensor(sample.hist_items), per_request=True).numpy()
        expected_scores = query["query"] @ item_vectors.T + query["item_item_weight"][:, None] * item_item
        rows, cols = np.nonzero(exclude < len(item_vectors))
        expected_scores[rows, exclude[rows, cols]] = -np.inf
        scores, _, _ = session.run(
            None,
            {
                "query": query["query"],
                "item_item_weight": query["item_item_weight"],
                "history": sample.hist_items,
                "exclude": exclude,
                "k": np.array([10]),
            },
        )
        finite = np.isfinite(expected_scores)
        if not np.array_equal(finite, np.isfinite(scores)):
            raise OnnxParityError("retrieval.onnx masks different items than the reference")
        errors.append(float(np.abs(scores[finite] - expected_scores[finite]).max()))
    parity["retrieval"] = _record(errors, samples)

    ranker = RankerGraph(model)
    rng = np.random.default_rng(0)
    cand = [torch.as_tensor(rng.integers(0, model.n_items, size=(len(s), 20))) for s in samples]
    args = [
        (*tuple(torch.as_tensor(q[n]) for n in RANKER_INPUTS[:-2]), torch.as_tensor(s.hist_items), c)
        for q, s, c in zip(queries, samples, cand, strict=True)
    ]
    export_onnx(
        ranker,
        args[-1],
        out / "ranker.onnx",
        list(RANKER_INPUTS),
        list(RANKER_OUTPUTS),
        {
            **{n: {0: "batch"} for n in RANKER_INPUTS[:-2]},
            "history": {0: "batch", 1: "history"},
            "candidates": {0: "batch", 1: "candidates"},
            **{n: {0: "batch", 1: "candidates"} for n in RANKER_OUTPUTS},
        },
    )
    session, _ = create_session(out / "ranker.onnx")
    errors = []
    for arg in args:
        with torch.inference_mode():
            expected = [t.numpy() for t in ranker(*arg)]
        got = session.run(
            list(RANKER_OUTPUTS), {n: a.numpy() for n, a in zip(RANKER_INPUTS, arg, strict=True)}
        )
        errors.append(max(float(np.abs(g - e).max()) for g, e in zip(got, expected, strict=True)))
    parity["ranker"] = _record(errors, samples)

    if model.items.use_text:
        parity["item_tower"] = _export_item_tower(model, out)
        parity["fresh_ranker"] = _export_fresh_ranker(model, out, items, queries, samples, cand)
    for name, result in parity.items():
        if result["max_abs_error"] > PARITY_TOLERANCE:
            raise OnnxParityError(
                f"{name}.onnx differs from PyTorch by {result['max_abs_error']:.2e} (> {PARITY_TOLERANCE:g})"
            )
    return {"graphs": parity, "item_vectors": item_vectors}


def _export_item_tower(model: JointModel, out: Path) -> dict[str, Any]:
    tower = ItemTowerGraph(model)
    text = model.items.text
    batches = [text[:1], text[:16]]
    export_onnx(
        tower,
        (batches[-1],),
        out / "item_tower.onnx",
        ["text_embedding"],
        list(ITEM_TOWER_OUTPUTS),
        {"text_embedding": {0: "items"}, **{n: {0: "items"} for n in ITEM_TOWER_OUTPUTS}},
    )
    session, _ = create_session(out / "item_tower.onnx")
    errors = []
    for batch in batches:
        with torch.inference_mode():
            expected = [t.numpy() for t in tower(batch)]
        got = session.run(list(ITEM_TOWER_OUTPUTS), {"text_embedding": batch.numpy()})
        errors.append(max(float(np.abs(g - e).max()) for g, e in zip(got, expected, strict=True)))
    return {"max_abs_error": max(errors), "batch_sizes": [1, 16]}


def _export_fresh_ranker(
    model: JointModel,
    out: Path,
    items: ItemSide,
    queries: list[dict[str, np.ndarray]],
    samples: list[ModelInputs],
    candidates: list[torch.Tensor],
) -> dict[str, Any]:
    """Export `fresh_ranker.onnx`; parity against PyTorch, and against `ranker.onnx` when given the
    exported catalogue's own tables (the same items must get the same parts, item-item aside)."""
    fresh = FreshRankerGraph(model)
    tables = (items.collaborative(), items.raw_text, items.text, items.scene, items.bias)
    args = [
        (*tuple(torch.as_tensor(q[n]) for n in RANKER_INPUTS[:4]), *tables, c)
        for q, c in zip(queries, candidates, strict=True)
    ]
    export_onnx(
        fresh,
        args[-1],
        out / "fresh_ranker.onnx",
        list(FRESH_RANKER_INPUTS),
        list(RANKER_OUTPUTS),
        {
            **{n: {0: "batch"} for n in RANKER_INPUTS[:4]},
            **{n: {0: "items"} for n in FRESH_ITEM_INPUTS},
            "candidates": {0: "batch", 1: "candidates"},
            **{n: {0: "batch", 1: "candidates"} for n in RANKER_OUTPUTS},
        },
    )
    session, _ = create_session(out / "fresh_ranker.onnx")
    ranker, _ = create_session(out / "ranker.onnx")
    errors = []
    for arg, query, sample in zip(args, queries, samples, strict=True):
        with torch.inference_mode():
            expected = [t.numpy() for t in fresh(*arg)]
        feeds = {n: a.numpy() for n, a in zip(FRESH_RANKER_INPUTS, arg, strict=True)}
        got = session.run(list(RANKER_OUTPUTS), feeds)
        errors.append(max(float(np.abs(g - e).max()) for g, e in zip(got, expected, strict=True)))
        _, parts, p_conv = ranker.run(
            list(RANKER_OUTPUTS),
            {
                **{n: query[n] for n in RANKER_INPUTS[:5]},
                "history": sample.hist_items,
                "candidates": feeds["candidates"],
            },
        )
        errors.append(float(np.abs(got[1][..., :3] - parts[..., :3]).max()))
        errors.append(float(np.abs(got[2] - p_conv).max()))
    return _record(errors, samples)


def _history_axis_error(session: Any, sample: ModelInputs, pads: dict[str, int], keep: int = 5) -> float:
    """Max difference between the tower's outputs for the last `keep` history items alone and the
    same items left-padded to the full length: serving pads only to a batch's longest history."""
    short, padded = sample.as_numpy(), sample.as_numpy()
    length = sample.hist_items.shape[1]
    keep = min(keep, length)
    for name, pad in pads.items():
        short[name] = np.ascontiguousarray(short[name][:, -keep:])
        padded[name] = np.concatenate([np.full((len(sample), length - keep), pad, np.int64), short[name]], 1)
    got_short = session.run(list(USER_OUTPUTS), short)
    got_padded = session.run(list(USER_OUTPUTS), padded)
    return max(float(np.abs(a - b).max()) for a, b in zip(got_short, got_padded, strict=True))


def _record(errors: list[float], samples: list[ModelInputs]) -> dict[str, Any]:
    return {"max_abs_error": max(errors), "batch_sizes": [len(s) for s in samples]}
