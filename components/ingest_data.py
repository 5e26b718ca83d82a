"""ingest_data: validate the raw dataset against the data contract and snapshot it."""

from kfp.dsl import Dataset, Input, Output

from components.image import scenerec_component


@scenerec_component
def ingest_data(source: Input[Dataset], dataset: Output[Dataset]) -> None:
    """Validate `source` (every problem named; the run stops on any) and copy its files to `dataset`."""
    from scenerec import steps

    dataset.metadata.update(steps.ingest_data(source.path, dataset.path).metadata)
