"""publish_features: the model's features into Feast (offline sources, apply, materialize online)."""

from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.image import scenerec_component


@scenerec_component
def publish_features(
    dataset: Input[Dataset], model: Input[Model], feature_repo: Output[Artifact], metrics: Output[Metrics]
) -> None:
    """Publish into a copy of the Feast repo at `feature_repo` (online store: $SCENEREC_ONLINE_STORE)."""
    from scenerec import steps

    outcome = steps.publish_features(dataset.path, model.path, feature_repo.path).write_metrics(metrics.path)
    feature_repo.metadata.update(outcome.metadata)
    for name, value in outcome.metrics.items():
        metrics.log_metric(name, value)
