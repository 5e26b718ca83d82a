"""The training pipeline's steps as plain functions: directories in, directories out, no kfp.

Each function is what one component of `components/` calls (ARCHITECTURE.md: ingest+validate ->
split -> baselines -> embed -> train (+ ONNX export and parity) -> evaluate (the gate) -> publish
features -> deploy). It takes the config as the JSON text of `Config.to_dict()`, rebuilt strictly,
and returns a `StepResult`: scalar metrics for the step's Metrics artifact and metadata for its main
output artifact, so the component only copies them into kfp's objects.

The split is recomputed where it is needed (baselines, train, evaluate), as the library does; the
protocol is deterministic, so every step sees the rows the split step wrote down.
Environment facts (online store, feature repo template, namespace) are read from the environment
here, once per step, never from the config.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scenerec.config import Config
from scenerec.errors import ConfigError, ScenerecError

if TYPE_CHECKING:
    from scenerec.gate import GateResult

HEADLINE = ("ndcg@10", "hr@10", "recall@20")
TRUTH = "truth.json"
BASELINES_FILE = "metrics.json"
# Environment facts, read where a step needs them.
ENV_FEATURE_REPO = "SCENEREC_FEATURE_REPO"  # the Feast repo template (definitions + yaml files)
ENV_ONLINE_STORE = "SCENEREC_ONLINE_STORE"  # "sqlite" (default, inside the artifact) or "redis"
ENV_NAMESPACE = "SCENEREC_NAMESPACE"  # where deploy applies the InferenceService


@dataclass
class StepResult:
    """What a step reports: scalars for its Metrics artifact, metadata for its main artifact."""

    metrics: dict[str, float] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    def write_metrics(self, path: str | Path) -> StepResult:
        """Write the scalars as JSON at `path` (a Metrics artifact's file; kfp keeps only a file's URI)."""
        from scenerec.data.io import write_json

        write_json(self.metrics, Path(path))
        return self


def parse_config(text: str) -> Config:
    """The strict config from the JSON text of `Config.to_dict()` (a subset takes the defaults)."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"config: not valid JSON ({e})") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"config: expected a JSON object of sections, got {type(raw).__name__}")
    return Config.from_dict(raw)


def ingest_data(source: str | Path, out: str | Path) -> StepResult:
    """Validate the dataset at `source` and snapshot its files (tables, truth.json) into `out`."""
    from scenerec.artifact import file_hashes
    from scenerec.data.io import find_table
    from scenerec.data.schema import TABLES
    from scenerec.data.validate import require_valid

    source, out = Path(source), Path(out)
    tables = require_valid(source)  # DataError: one line per problem
    out.mkdir(parents=True, exist_ok=True)
    for spec in TABLES:
        path = find_table(source, spec)
        if path is not None:
            shutil.copy2(path, out / path.name)
    if (source / TRUTH).is_file():
        shutil.copy2(source / TRUTH, out / TRUTH)
    hashes = file_hashes(out)
    return StepResult(
        metadata={
            **{f"{name}_rows": len(frame) for name, frame in tables.items()},
            "files": sorted(hashes),
            "sha256": _digest(hashes),
        }
    )


def split_data(data: str | Path, out: str | Path, config_json: str) -> StepResult:
    """Write the headline and cold-item splits of `data` under `out`."""
    from scenerec.data.dataset import load_dataset
    from scenerec.data.split import write_splits

    config = parse_config(config_json)
    dataset = load_dataset(data, config.data)
    counts = write_splits(dataset, config.data, Path(out))
    return StepResult(metadata={**{f"{k}_rows": v for k, v in counts.items()}, **dataset.summary()})


def fit_baselines(data: str | Path, out: str | Path, report: str | Path, config_json: str) -> StepResult:
    """Tune, fit and evaluate the baselines; `out`/metrics.json and an HTML report at `report`."""
    from scenerec.baselines.runner import run_baselines
    from scenerec.data.dataset import load_dataset
    from scenerec.data.io import write_json
    from scenerec.report import write_report

    config = parse_config(config_json)
    dataset = load_dataset(data, config.data)
    results = run_baselines(dataset, config)
    metrics = {"baselines": results, "dataset": dataset.summary(), "config": config.to_dict()}
    write_json(metrics, Path(out) / BASELINES_FILE)
    write_report(metrics, Path(report), _truth(data), title="scenerec baselines")
    scalars = {
        f"{name}.{metric}": float(result["test"][metric])
        for name, result in results.items()
        if "test" in result
        for metric in HEADLINE
    }
    return StepResult(metrics=scalars, metadata={"baselines": sorted(results)})


def embed_items(data: str | Path, out: str | Path, config_json: str) -> StepResult:
    """Embed every item's text with the frozen encoder into the embedding cache file under `out`.

    Training reads the same cache (`train(..., cache_dir=out)`): entries are keyed by the encoder's
    fingerprint, max_length and the text, so it finds every item and embeds nothing again.
    """
    from scenerec.data import schema as c
    from scenerec.data.dataset import load_dataset
    from scenerec.text import TextEncoder, cache_file, embed_cached, resolve_encoder_dir

    config = parse_config(config_json)
    dataset = load_dataset(data, config.data)
    encoder = TextEncoder(resolve_encoder_dir(config.text), config.text.max_length, config.text.batch_size)
    texts = dataset.items[c.TEXT].fillna("").astype(str).tolist()  # exactly what train() embeds
    vectors = embed_cached(encoder, texts, Path(out))
    path = cache_file(encoder, Path(out))
    if not path.is_file():  # embed_cached only logs a failed write; a step must not pass without it
        raise ScenerecError(f"embed: the embeddings were not written to {path}")
    return StepResult(
        metrics={"items": float(len(texts)), "dim": float(vectors.shape[1])},
        metadata={"file": path.name, "encoder": encoder.name, "fingerprint": encoder.fingerprint},
    )


# where kfp v2's launcher makes an object store's URIs readable as files (kfp.dsl.Artifact.path)
_MOUNTS = {"gs://": "/gcs/", "s3://": "/s3/", "minio://": "/minio/"}


def artifact_path(uri: str) -> Path:
    """A local path for `uri`: a path as it is, an object-store URI at kfp's mount of it."""
    for scheme, mount in _MOUNTS.items():
        if uri.startswith(scheme):
            return Path(mount + uri[len(scheme) :])
    return Path(uri.removeprefix("file://"))


def train_model(
    data: str | Path,
    embeddings: str | Path,
    baselines: str | Path,
    out: str | Path,
    report: str | Path,
    config_json: str,
    warm_start: str = "",
) -> StepResult:
    """Train, export (ONNX graphs + parity checks) and describe the model directory `out`.

    Export is part of `scenerec.train.train`: it exports the checkpoint it has just selected, checks
    parity and scores the exported graphs, so a model directory is complete or not written at all.
    `warm_start`: a previous model directory (a path, or a gs://, s3:// or minio:// URI, read
    where kfp's launcher mounts them) to continue from; empty: from scratch.
    """
    from scenerec.train import train

    config = parse_config(config_json)
    metrics = train(
        Path(data),
        Path(out),
        config,
        baselines_from=Path(baselines) / BASELINES_FILE,
        cache_dir=Path(embeddings),
        warm_start=artifact_path(warm_start) if warm_start else None,
    )
    shutil.copyfile(Path(out) / "report.html", report)
    manifest = json.loads((Path(out) / "manifest.json").read_text())
    parity = json.loads((Path(out) / "parity.json").read_text())["graphs"]
    scalars = {metric: float(metrics["model"]["test"][metric]) for metric in HEADLINE}
    scalars.update({f"parity.{name}": float(p["max_abs_error"]) for name, p in parity.items()})
    scalars["best_epoch"] = float(metrics["model"]["training"]["best_epoch"])
    return StepResult(
        metrics=scalars,
        metadata={
            "framework": "onnx",
            "model_name": manifest["model_name"],
            "model_version": manifest["model_version"],
            "graphs": sorted(manifest["graphs"]),
        },
    )


def evaluate_model(
    data: str | Path, model: str | Path, baselines: str | Path, summary: str | Path, config_json: str
) -> StepResult:
    """Re-measure the shipped model through ONNX Runtime and apply the release gate.

    The Markdown `summary` (verdict and comparison) is written before the verdict is enforced.

    Raises:
        GateError: The model does not beat the best baseline by `pipeline.gate_margin`.
    """
    from scenerec.data.io import write_text
    from scenerec.gate import GateError, judge
    from scenerec.train import evaluate_model_dir

    config = parse_config(config_json)
    with tempfile.TemporaryDirectory() as scratch:  # the model directory stays as trained
        measured = evaluate_model_dir(Path(data), Path(model), Path(scratch) / "metrics.json")
    baseline_results = json.loads((Path(baselines) / BASELINES_FILE).read_text())["baselines"]
    result = judge(
        measured["model"], baseline_results, config.eval.selection_metric, config.pipeline.gate_margin
    )
    write_text(_gate_markdown(result, measured["model"]["test"], baseline_results), Path(summary))
    if not result.passed:
        raise GateError(f"{result.describe()}; the model is not published or deployed")
    scalars = {metric: float(measured["model"]["test"][metric]) for metric in HEADLINE}
    scalars.update({"gate.required": result.required, "gate.best_baseline": result.baseline})
    return StepResult(metrics=scalars, metadata=result.as_dict())


def publish_features(data: str | Path, model: str | Path, out: str | Path) -> StepResult:
    """Copy the Feast repo template to `out`, then write the sources, apply and materialize there."""
    from scenerec.features.publish import publish, summary

    repo = Path(out)
    shutil.copytree(
        feature_repo_template(),
        repo,
        ignore=shutil.ignore_patterns("data", "__pycache__", ".*"),
        dirs_exist_ok=True,
    )
    result = publish(Path(data), Path(model), repo, online_store=os.environ.get(ENV_ONLINE_STORE) or None)
    return StepResult(
        metrics={f"{entity}_rows": float(rows) for entity, rows in result.rows.items()},
        metadata=summary(result),
    )


def deploy_model(
    model: str | Path, model_uri: str, features_uri: str, out: str | Path, image: str, apply: bool
) -> StepResult:
    """Render the InferenceService for the model (YAML at `out`) and, if `apply`, apply it."""
    from scenerec.artifact import read_manifest
    from scenerec.deploy import apply_inference_service, render_inference_service, write_inference_service

    manifest = read_manifest(model)  # every file's sha256 checked before anything is deployed
    namespace = os.environ.get(ENV_NAMESPACE) or None
    isvc = render_inference_service(manifest, model_uri, features_uri, image, namespace)
    write_inference_service(isvc, Path(out))
    outcome = apply_inference_service(isvc) if apply else "rendered only (deploy is off)"
    return StepResult(metadata={"outcome": outcome, "model_version": manifest["model_version"]})


def feature_repo_template() -> Path:
    """The Feast repo to publish into: $SCENEREC_FEATURE_REPO, else feature_repo/ of the checkout."""
    from scenerec.features.repo import DEFAULT_YAML, FeatureRepoError

    configured = os.environ.get(ENV_FEATURE_REPO)
    repo = Path(configured) if configured else Path(__file__).resolve().parents[1] / "feature_repo"
    if not (repo / DEFAULT_YAML).is_file():
        raise FeatureRepoError(
            f"feature repo template {repo}: no {DEFAULT_YAML} (set {ENV_FEATURE_REPO} to scenerec's "
            "feature_repo/ folder; the image must contain it)"
        )
    return repo


def _truth(data: str | Path) -> dict[str, Any] | None:
    path = Path(data) / TRUTH
    return json.loads(path.read_text()) if path.is_file() else None


def _digest(hashes: dict[str, str]) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()


def _gate_markdown(result: GateResult, model_test: dict[str, float], baselines: dict[str, Any]) -> str:
    rows = [("scenerec (ONNX Runtime)", model_test)]
    rows += [(name, r["test"]) for name, r in baselines.items() if "test" in r]
    lines = [
        f"## Release gate: {'passed' if result.passed else 'FAILED'}",
        "",
        result.describe(),
        "",
        "| system | " + " | ".join(HEADLINE) + " |",
        "| --- | " + " | ".join("---:" for _ in HEADLINE) + " |",
    ]
    lines += [f"| {name} | " + " | ".join(f"{t[m]:.4f}" for m in HEADLINE) + " |" for name, t in rows]
    return "\n".join(lines) + "\n"
