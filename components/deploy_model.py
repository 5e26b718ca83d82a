"""deploy_model: the KServe InferenceService for the model, applied to the cluster when asked."""

from kfp.dsl import Artifact, Input, Model, Output

from components.image import scenerec_component


@scenerec_component
def deploy_model(
    apply: bool,
    image: str,
    model: Input[Model],
    feature_repo: Input[Artifact],
    inference_service: Output[Artifact],
) -> None:
    """Render the InferenceService (YAML) serving `model` with `feature_repo` from the predictor `image`.

    With `apply`, create it in the cluster (or point the existing one at this model); without a
    reachable cluster that refuses with a clear message and the step fails.
    """
    from scenerec import steps

    outcome = steps.deploy_model(
        model.path, model.uri, feature_repo.uri, inference_service.path, image, apply
    )
    inference_service.metadata.update(outcome.metadata)
