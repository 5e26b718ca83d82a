"""evaluate_model: re-measure the exported model and gate its release on the best baseline."""

from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from components.image import scenerec_component


@scenerec_component
def evaluate_model(
    config: str,
    dataset: Input[Dataset],
    model: Input[Model],
    baselines: Input[Artifact],
    metrics: Output[Metrics],
    summary: Output[Markdown],
) -> None:
    """Score `model` through ONNX Runtime; fail the run unless it beats the best baseline by the margin."""
    from scenerec import steps

    outcome = steps.evaluate_model(
        dataset.path, model.path, baselines.path, summary.path, config
    ).write_metrics(metrics.path)
    summary.metadata.update(outcome.metadata)
    for name, value in outcome.metrics.items():
        metrics.log_metric(name, value)
