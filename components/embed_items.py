"""embed_items: item text through the frozen text encoder, as the embedding cache training reads."""

from kfp.dsl import Dataset, Input, Output

from components.image import scenerec_component


@scenerec_component
def embed_items(config: str, dataset: Input[Dataset], embeddings: Output[Dataset]) -> None:
    """Embed every item's text into `embeddings` (an `embeddings-<encoder fingerprint>.npz` cache)."""
    from scenerec import steps

    outcome = steps.embed_items(dataset.path, embeddings.path, config)
    embeddings.metadata.update({**outcome.metadata, **outcome.metrics})
