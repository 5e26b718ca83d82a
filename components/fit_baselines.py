"""fit_baselines: tune, fit and evaluate the baselines the model must beat."""

from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Output

from components.image import scenerec_component


@scenerec_component
def fit_baselines(
    config: str,
    dataset: Input[Dataset],
    results: Output[Artifact],
    metrics: Output[Metrics],
    report: Output[HTML],
) -> None:
    """Baselines tuned on valid and scored on test (`results`/metrics.json), logged and reported."""
    from scenerec import steps

    outcome = steps.fit_baselines(dataset.path, results.path, report.path, config).write_metrics(metrics.path)
    results.metadata.update(outcome.metadata)
    for name, value in outcome.metrics.items():
        metrics.log_metric(name, value)
