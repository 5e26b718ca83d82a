"""split_data: the headline (leave-last-out) and cold-item splits, written down as parquet."""

from kfp.dsl import Dataset, Input, Output

from components.image import scenerec_component


@scenerec_component
def split_data(config: str, dataset: Input[Dataset], splits: Output[Dataset]) -> None:
    """Write train/valid/test and cold/* under `splits`, with their row counts as metadata."""
    from scenerec import steps

    splits.metadata.update(steps.split_data(dataset.path, splits.path, config).metadata)
