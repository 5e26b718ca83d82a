"""Writing an ONNX graph to a model directory: one file, or the graph and its weights apart.

ONNX is a protobuf, and a protobuf stops at 2 GB. A graph that holds the item tables of a large
catalogue (10^6 items x a few hundred floats, in the user tower and the ranker) passes that, so its
tensors go to one external-data file beside it, `<name>.onnx.data`, which ONNX Runtime and
`onnx.load` find by the relative location written in the graph. Both files are written under a
hidden staging name, checked, then renamed (the weights first): a reader never opens half a graph.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import onnx

# Tensors above this many bytes in all go to `<name>.onnx.data`; ONNX's own limit is 2 GiB for the
# whole protobuf, so this leaves room for the graph itself.
EXTERNAL_DATA_BYTES = 1 << 30


def tensor_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the graph's initializers, wherever their data is stored (inline or loaded)."""
    return sum(len(t.raw_data) or t.ByteSize() for t in model.graph.initializer)


def data_file(path: Path) -> Path:
    """The external-data file of the graph at `path` (it exists only when the graph needed it)."""
    return path.with_name(f"{path.name}.data")


def save_graph(model: onnx.ModelProto, path: Path, external_from: int | None = None) -> bool:
    """Check `model` and write it to `path`, its tensors in `data_file(path)` above `external_from` bytes
    (None: `EXTERNAL_DATA_BYTES`, read at the call). `model` is not for reuse after: saving moves the
    tensors' bytes out of it when they go to the data file.

    Returns:
        Whether the tensors went to the external-data file. A stale one from an earlier graph of the
        same name is removed when they did not, so the directory holds only what the graph reads.

    Raises:
        onnx.checker.ValidationError: the graph is not valid ONNX (nothing is written then).
    """
    path = Path(path)
    limit = EXTERNAL_DATA_BYTES if external_from is None else external_from
    external = tensor_bytes(model) > limit
    staging = path.with_name(f".{path.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        staged = staging / path.name
        onnx.save_model(
            model,
            str(staged),
            save_as_external_data=external,
            all_tensors_to_one_file=True,
            location=data_file(path).name,
            size_threshold=1024,  # small constants (shapes, axes) stay in the graph, readable as is
        )
        onnx.checker.check_model(str(staged))  # by path: the checker reads external data there
        if external:
            os.replace(data_file(staged), data_file(path))
        os.replace(staged, path)
        if not external:
            data_file(path).unlink(missing_ok=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return external
