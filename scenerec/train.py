"""`scenerec train`: fit the joint model, evaluate it honestly, export it, describe it.

One call produces a complete model directory (see `scenerec.artifact`):
1. the model, fitted on the headline split and early-stopped on valid NDCG@10;
2. its ONNX graphs with parity checks, item vectors, id maps and the manifest;
3. metrics.json: the model scored through ONNX Runtime (what ships), the cold-item protocol
   (a second model trained without the cold items), each ablation, and the tuned baselines;
4. report.html with the plots.
Everything is written to a staging directory that replaces the target only on success.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from scenerec import __version__
from scenerec.ann import ANN_FILE, build_index, wants_index
from scenerec.artifact import FORMAT_VERSION, GRAPHS, MANIFEST, file_hashes, graph_signature
from scenerec.baselines.runner import run_baselines
from scenerec.config import Config
from scenerec.data import schema as c
from scenerec.data.dataset import Dataset, load_dataset
from scenerec.data.io import atomic_directory, write_json, write_parquet
from scenerec.data.split import EvalCases, cold_item_split, leave_last_out
from scenerec.distributed import init_distributed
from scenerec.diversity_curve import diversity_curve
from scenerec.evaluate import COLD_NEW_SLICE, COLD_SLICE, cold_item_slices, evaluate, scene_slices
from scenerec.export import export_model_graphs
from scenerec.model.finetune import check_finetune, encoder_delta
from scenerec.model.fit import FitResult, fit, item_statistics, size_recipe
from scenerec.model.inputs import inputs_from_cases
from scenerec.model.joint import JointModel
from scenerec.model.scorer import TorchScorer
from scenerec.model.warm_start import CHECKPOINT, WarmStart, checkpoint_state
from scenerec.onnx_files import data_file
from scenerec.onnx_runtime import create_session
from scenerec.onnx_scorer import OnnxScorer
from scenerec.report import write_report
from scenerec.text import TextEncoder, embed_cached, export_text_encoder_onnx, resolve_encoder_dir

log = logging.getLogger(__name__)

MODEL_NAME = "scenerec"
FEATURE_SERVICE = "ranker_v1"
ABLATIONS: dict[str, dict[str, Any]] = {
    "no_text": {"use_text": False},
    "no_scene": {"use_scene": False},
    "no_sequence": {"use_sequence": False},
    "lambda_zero": {"learn_lambda": False, "lambda_init": 0.0},
    "no_item_item": {"use_item_item": False},
    "frozen_text": {},  # the text encoder frozen (TEXT_ABLATIONS): what fine-tuning adds
}
# ablations of the text.* section; frozen_text is trained only when text.finetune is on (else it
# would be the model itself)
TEXT_ABLATIONS: dict[str, dict[str, Any]] = {"frozen_text": {"finetune": False}}


def train(
    data_dir: Path,
    out_dir: Path,
    config: Config,
    baselines_from: Path | None = None,
    cache_dir: Path | None = None,
    warm_start: Path | None = None,
) -> dict[str, Any]:
    """Train, evaluate and export to `out_dir`; returns the metrics written to metrics.json.

    `warm_start`: a previous model directory whose weights the main model starts from
    (`scenerec.model.warm_start`); ablations and baselines are trained as always."""
    started = time.perf_counter()
    warm = WarmStart.load(warm_start) if warm_start is not None else None
    if warm is not None:
        warm.check_config(config.to_dict()["model"])
    for name in config.train.ablations:  # a typo fails now, not after the main model has trained
        _variant(config, name)
    rank, _ = init_distributed(config.train.device)
    dataset = load_dataset(data_dir, config.data)
    pretrained = TextEncoder(resolve_encoder_dir(config.text), config.text.max_length, config.text.batch_size)
    check_finetune(config.text, pretrained)  # e.g. more layers asked for than the encoder has: now
    # a warm start from a model with a fine-tuned encoder reads (and tunes further) that encoder
    encoder = warm.encoder(pretrained) if warm is not None else pretrained
    texts = dataset.items[c.TEXT].fillna("").astype(str).tolist()
    text = torch.as_tensor(embed_cached(encoder, texts, cache_dir))
    split = leave_last_out(dataset, config.eval.max_users, config.data.seed)
    valid_cases, test_cases = split.valid_cases(), split.test_cases()
    slices = scene_slices(test_cases, dataset.vocab)
    main = fit(dataset, split.train, valid_cases, config, text, desc="model", warm=warm, encoder=encoder)
    log.info(
        "model: best epoch %d, valid ndcg@10 %.4f, %.0f s",
        main.best_epoch,
        main.best_valid["ndcg@10"],
        main.seconds,
    )
    if rank != 0:  # under torchrun: take part in every collective fit, write nothing
        _follow_rank_zero(dataset, split, config, text, encoder)
        return {}
    with atomic_directory(out_dir) as staging:
        samples = [
            inputs_from_cases(
                valid_cases.select(0, n),
                config.model.max_history,
                dataset.vocab.n_items,
                len(dataset.vocab.scenes),
                config.model.hour_buckets,
            )
            for n in (1, 16)
        ]
        exported = export_model_graphs(main.model, staging, samples)
        ann = (  # the approximate index of a large catalogue, beside the exact graph (scenerec/ann.py)
            build_index(exported["item_vectors"], config.retrieval, staging / ANN_FILE)
            if wants_index(config.retrieval, dataset.vocab.n_items)
            else None
        )
        parity = exported["graphs"]
        # the fine-tuned encoder when text.finetune: new items are embedded by the model that trained
        shipped_encoder = main.text_encoder or encoder
        encoder_info = export_text_encoder_onnx(shipped_encoder, staging / "text_encoder.onnx")
        parity["text_encoder"] = {k: encoder_info[k] for k in ("max_abs_error", "batch_sizes")}
        table = main.text if main.text is not None else text  # the fine-tuned encoder's table, if any
        _write_tables(staging, dataset, split.train, exported["item_vectors"], table.numpy(), main.model)
        delta = encoder_delta(shipped_encoder, pretrained)  # {} for the pretrained encoder
        torch.save(checkpoint_state(main.model, delta), staging / CHECKPOINT)  # what a warm start reads
        manifest = _manifest(staging, dataset, config, main, encoder_info)
        if ann is not None:
            manifest["ann"] = ann
        write_json(manifest, staging / MANIFEST)
        model_metrics = _evaluate_shipped(staging, dataset, test_cases, slices, config)
        model_metrics["diversity_curve"] = diversity_curve(  # what the predictor's `diversity` costs
            OnnxScorer(staging), test_cases, dataset.item_categories(), exported["item_vectors"], config
        )
        test_rows = split.test_targets()
        model_metrics["tasks"] = _conversion_auc(main.model, dataset, test_rows, test_cases, config)
        model_metrics["lambda"] = {**_learned_lambda(main.model, dataset), "valid_scale": main.lambda_scale}
        model_metrics["item_item"] = {**main.item_item, "scene": _item_item_weights(main.model, dataset)}
        model_metrics["training"] = {
            "warm_start": {"from": str(warm.source), **main.warm_start} if warm is not None else None,
            "best_epoch": main.best_epoch,
            "best_valid": main.best_valid,  # the selected epoch's valid metrics, after calibration
            "epochs": main.epochs,
            "seconds": round(main.seconds, 1),
            "device": main.device,
            "samples_per_second": round(main.samples_per_second),
            "recipe": dict(
                zip(
                    ("lr", "patience"),
                    size_recipe(config.train, len(split.train), warm is not None),
                    strict=True,
                )
            ),
        }
        if config.train.cold_start_eval:
            model_metrics["slices"].update(_cold_metrics(dataset, config, text, encoder))
        metrics: dict[str, Any] = {
            "model": model_metrics,
            "ablations": {
                name: _ablation(name, dataset, split, config, text, encoder) for name in _ablations(config)
            },
            "baselines": _baselines(dataset, config, baselines_from),
            "dataset": dataset.summary(),
            "seconds": round(time.perf_counter() - started, 1),
        }
        write_json(metrics, staging / "metrics.json")
        write_json({"tolerance": 1e-4, "graphs": parity}, staging / "parity.json")
        truth_path = Path(data_dir) / "truth.json"
        truth = json.loads(truth_path.read_text()) if truth_path.is_file() else None
        write_report(
            metrics, staging / "report.html", truth, title=f"scenerec model {manifest['model_version']}"
        )
        manifest["metrics"] = {
            "test": {k: model_metrics["test"][k] for k in ("ndcg@10", "hr@10", "recall@20")}
        }
        write_json(manifest, staging / MANIFEST)
    return metrics


def _follow_rank_zero(
    dataset: Dataset, split: Any, config: Config, text: torch.Tensor, encoder: TextEncoder
) -> None:
    """The fits rank 0 runs after the main one, in its order (their DDP steps are collective)."""
    if config.train.cold_start_eval:
        cold = cold_item_split(dataset, config.data)
        fit(dataset, cold.warm.train, cold.warm.valid_cases(), config, text, "cold-item model", None, encoder)
    for name in _ablations(config):
        variant = _variant(config, name)
        fit(dataset, split.train, split.valid_cases(), variant, text, f"ablation {name}", encoder=encoder)
        if name in TEXT_ABLATIONS and config.train.cold_start_eval:
            cold = cold_item_split(dataset, config.data)
            desc = f"ablation {name} (cold items)"
            fit(dataset, cold.warm.train, cold.warm.valid_cases(), variant, text, desc, encoder=encoder)


def _variant(config: Config, name: str) -> Config:
    if name not in ABLATIONS:
        raise ValueError(f"train.ablations: unknown ablation {name!r} (known: {', '.join(ABLATIONS)})")
    return dataclasses.replace(
        config,
        model=dataclasses.replace(config.model, **ABLATIONS[name]),
        text=dataclasses.replace(config.text, **TEXT_ABLATIONS.get(name, {})),
    )


def _ablations(config: Config) -> list[str]:
    """`train.ablations` to train: a text ablation equal to the model itself (frozen_text without
    text.finetune) is left out, with a log line."""
    same = [n for n in config.train.ablations if n in TEXT_ABLATIONS and _variant(config, n) == config]
    if same:
        log.info("ablations %s: the same as the model (text.finetune is off): not trained", same)
    return [n for n in config.train.ablations if n not in same]


def _write_tables(
    staging: Path,
    dataset: Dataset,
    train_rows: pd.DataFrame,
    item_vectors: np.ndarray,
    text: np.ndarray,
    model: JointModel,
) -> None:
    for name, values in (
        ("items", dataset.vocab.items),
        ("scenes", dataset.vocab.scenes),
        ("devices", dataset.vocab.devices),
    ):
        write_json([str(v) for v in values], staging / "id_maps" / f"{name}.json")
    bucket, cold, counts = item_statistics(train_rows, dataset.vocab.n_items, model.config.popularity_buckets)
    write_parquet(
        pd.DataFrame(
            {
                c.ITEM_ID: dataset.vocab.items.astype(str),
                "index": np.arange(dataset.vocab.n_items),
                c.TITLE: dataset.items[c.TITLE].astype(str).to_numpy(),
                c.CATEGORY: dataset.items[c.CATEGORY].astype(str).to_numpy(),
                "vector": list(item_vectors.astype(np.float32)),
                "text_embedding": list(text.astype(np.float32)),
                "train_count": counts.astype(np.int64),
                "popularity_bucket": bucket.numpy(),
                "cold": cold.numpy(),
            }
        ),
        staging / "items.parquet",
    )


def _manifest(
    staging: Path, dataset: Dataset, config: Config, main: FitResult, encoder_info: dict[str, Any]
) -> dict[str, Any]:
    created = datetime.now(UTC)
    files = file_hashes(staging)
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:8]
    graphs = {}
    for name in GRAPHS:
        path = staging / f"{name}.onnx"
        if path.is_file():
            session, _ = create_session(path)
            graphs[name] = {"file": path.name, "opset": 17, **graph_signature(session)}
            if data_file(path).is_file():  # weights past ONNX's 2 GB protobuf, beside the graph
                graphs[name]["external_data"] = data_file(path).name
    mc = config.model
    return {
        "format_version": FORMAT_VERSION,
        "model_name": MODEL_NAME,
        "model_version": f"{created:%Y%m%d-%H%M%S}-{digest}",
        "created": created.isoformat(),
        "scenerec_version": __version__,
        "config": config.to_dict(),
        "dims": {
            "items": dataset.vocab.n_items,
            "scenes": len(dataset.vocab.scenes),
            "devices": len(dataset.vocab.devices),
            "max_history": mc.max_history,
            "hour_buckets": mc.hour_buckets,
            "dim": mc.dim,
            "scene_dim": mc.scene_dim,
            "transition_dim": mc.transition_dim,
            "item_item_neighbors": int(main.model.item_item.columns.shape[1]),
            "query": main.model.query_dim,
            "text": int(encoder_info["outputs"][0]["shape"][-1]),
        },
        "vocab": {
            "default_scene": c.DEFAULT_SCENE,
            "scenes": list(map(str, dataset.vocab.scenes)),
            "devices": list(map(str, dataset.vocab.devices)),
        },
        "graphs": graphs,
        "encoder": {k: encoder_info[k] for k in ("encoder", "fingerprint", "max_length", "tokenizer_dir")},
        "feature_service": FEATURE_SERVICE,
        "training": {
            "best_epoch": main.best_epoch,
            "seconds": round(main.seconds, 1),
            "samples_per_second": round(main.samples_per_second),
            "device": main.device,
        },
        "files": files,
    }


def _evaluate_shipped(
    model_dir: Path, dataset: Dataset, cases: EvalCases, slices: dict[str, np.ndarray], config: Config
) -> dict[str, Any]:
    scorer = OnnxScorer(model_dir)
    scorer.check_dataset(dataset)
    result = evaluate(
        scorer,
        cases,
        dataset.vocab.n_items,
        config.eval,
        dataset.item_categories(),
        slices,
        desc="model test (onnx)",
    )
    return {"test": result["metrics"], "slices": result["slices"], "scored_with": "onnxruntime"}


def _cold_metrics(
    dataset: Dataset, config: Config, text: torch.Tensor, encoder: TextEncoder, desc: str = "cold-item model"
) -> dict[str, dict[str, float]]:
    cold = cold_item_split(dataset, config.data)
    fitted = fit(dataset, cold.warm.train, cold.warm.valid_cases(), config, text, desc, encoder=encoder)
    return cold_item_slices(
        TorchScorer(fitted.model, len(dataset.vocab.devices)),
        cold.test_cases(),
        cold.cold_items,
        dataset.vocab.n_items,
        config.eval,
        dataset.item_categories(),
    )


def _ablation(
    name: str, dataset: Dataset, split: Any, config: Config, text: torch.Tensor, encoder: TextEncoder
) -> dict[str, Any]:
    variant = _variant(config, name)
    fitted = fit(dataset, split.train, split.valid_cases(), variant, text, f"ablation {name}", None, encoder)
    cases = split.test_cases()
    result = evaluate(
        TorchScorer(fitted.model, len(dataset.vocab.devices)),
        cases,
        dataset.vocab.n_items,
        config.eval,
        dataset.item_categories(),
        scene_slices(cases, dataset.vocab),
        desc=name,
    )
    found = {"test": result["metrics"], "slices": result["slices"], "best_epoch": fitted.best_epoch}
    if name in TEXT_ABLATIONS:  # the cost side of fine-tuning, and where text matters most: new items
        found["training"] = {
            "seconds": round(fitted.seconds, 1),
            "samples_per_second": round(fitted.samples_per_second),
        }
        if config.train.cold_start_eval:
            found["slices"].update(
                _cold_metrics(dataset, variant, text, encoder, f"ablation {name} (cold items)")
            )
    return found


def _baselines(dataset: Dataset, config: Config, baselines_from: Path | None) -> dict[str, Any]:
    if baselines_from is not None:
        return dict(json.loads(Path(baselines_from).read_text())["baselines"])
    return run_baselines(dataset, config)


def _conversion_auc(
    model: JointModel, dataset: Dataset, test_rows: pd.DataFrame, cases: EvalCases, config: Config
) -> dict[str, float | None]:
    """AUC of p(conversion) on the test targets (None when the data has a single event type)."""
    labels = dataset.conversions(config.data)[test_rows.index.to_numpy()]
    if labels.min() == labels.max():
        return {"conversion_auc": None}
    inputs = inputs_from_cases(
        cases, config.model.max_history, model.n_items, model.n_scenes, config.model.hour_buckets
    )
    with torch.inference_mode():
        items = model.item_side()
        query = model.query_side(**inputs.as_tensors(), items=items)
        logits = model.conversion_logit(query, items, torch.as_tensor(cases.target)[:, None])[:, 0].numpy()
    ranks = pd.Series(logits).rank().to_numpy()
    positives = labels.sum()
    auc = (ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * (len(labels) - positives))
    return {"conversion_auc": float(auc), "conversion_rate": float(labels.mean())}


def _learned_lambda(model: JointModel, dataset: Dataset) -> dict[str, Any]:
    """lambda per scene and the popularity-bucket weights w_k (lambda(s, i) = lambda_s * w_k(i))."""
    scene = torch.nn.functional.softplus(model.lambda_scene.detach())
    return {
        "scene": {str(name): float(scene[k]) for k, name in enumerate(dataset.vocab.scenes)},
        "popularity_bucket": [float(w) for w in torch.exp(model.lambda_popularity.detach())],
    }


def _item_item_weights(model: JointModel, dataset: Dataset) -> dict[str, float]:
    """w_ii per scene as shipped (after the valid calibration); all 0 when the part is off."""
    if not model.item_item.active:
        return {str(name): 0.0 for name in dataset.vocab.scenes}
    weight = torch.exp(model.item_item_scene.detach())
    return {str(name): float(weight[k]) for k, name in enumerate(dataset.vocab.scenes)}


def evaluate_model_dir(data_dir: Path, model_dir: Path, out: Path | None = None) -> dict[str, Any]:
    """Recompute the model's metrics from its exported graphs (ONNX Runtime) on `data_dir`.

    The split is rebuilt with the data config stored in the manifest, so the numbers are comparable
    with those written at training time. Other sections of an existing metrics file are kept.
    """
    scorer = OnnxScorer(model_dir)
    config = Config.from_dict(scorer.manifest["config"])
    dataset = load_dataset(data_dir, config.data)
    cases = leave_last_out(dataset, config.eval.max_users, config.data.seed).test_cases()
    result = _evaluate_shipped(Path(model_dir), dataset, cases, scene_slices(cases, dataset.vocab), config)
    out = out or Path(model_dir) / "metrics.json"
    metrics = json.loads(out.read_text()) if out.is_file() else {}
    previous = metrics.get("model", {})
    previous_slices = previous.get("slices", {})
    metrics["model"] = {**previous, **result}
    for name in (COLD_SLICE, COLD_NEW_SLICE):  # the cold protocol needs a retrained model: keep them
        if name in previous_slices:
            metrics["model"]["slices"][name] = previous_slices[name]
    metrics["dataset"] = dataset.summary()
    write_json(metrics, out)
    return metrics
