"""train_model: fit the joint model and export it (ONNX graphs, parity checks) as a model directory."""

from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from components.image import scenerec_component


@scenerec_component
def train_model(
    config: str,
    dataset: Input[Dataset],
    embeddings: Input[Dataset],
    baselines: Input[Artifact],
    model: Output[Model],
    metrics: Output[Metrics],
    report: Output[HTML],
    warm_start: str = "",
) -> None:
    """Train on `dataset` with the item embeddings and baselines given; `model` is the model directory.

    `warm_start`: a previous model directory's URI (a path, gs://, s3:// or minio://) to continue
    from, its id maps extended for new items (`scenerec train --warm-start`); empty: from scratch.

    Export to ONNX (with PyTorch vs ONNX Runtime parity) happens inside training's one call, so a
    model directory is complete or not written.
    """
    from scenerec import steps

    outcome = steps.train_model(
        dataset.path, embeddings.path, baselines.path, model.path, report.path, config, warm_start
    ).write_metrics(metrics.path)
    model.metadata.update(outcome.metadata)
    for name, value in outcome.metrics.items():
        metrics.log_metric(name, value)
