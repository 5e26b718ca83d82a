"""The approximate nearest-neighbour index over the catalogue's retrieval vectors (FAISS HNSW).

Built at export beside `retrieval.onnx` when the catalogue reaches `retrieval.ann_min_items` (or
`retrieval.ann: always`), written to `ann.faiss`, hashed in the manifest like every file, its
parameters in `manifest["ann"]`. It ranks by the same inner product as the graph's dot part
(query . item vector); the item-item part is not a dot product, so the predictor adds the
history's item-item neighbours to what the index returns and scores the union exactly
(`serving/ann_retrieval.py`): the index only chooses which items are scored.

Why HNSW (`IndexHNSWFlat`, inner product): no training step, recall above 0.98 at a few hundred
visited nodes for vectors of this width, and search cost that grows with log N, where IVF-PQ
would need a training sample and lose recall to quantization for a memory saving that 10^6
vectors of ~180 floats (0.7 GB) do not need on a predictor node.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from scenerec.artifact import ArtifactError
from scenerec.config import RetrievalConfig

ANN_FILE = "ann.faiss"


def wants_index(config: RetrievalConfig, n_items: int) -> bool:
    """Whether an export of `n_items` items gets an index."""
    return config.ann == "always" or (config.ann == "auto" and n_items >= config.ann_min_items)


def build_index(item_vectors: np.ndarray, config: RetrievalConfig, path: Path) -> dict[str, Any]:
    """Index `item_vectors` [N, Q] (row i = item i) and write it to `path` atomically; returns the
    manifest's `ann` entry."""
    import faiss

    vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)
    index = faiss.IndexHNSWFlat(vectors.shape[1], config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = config.hnsw_ef_construction
    index.add(vectors)
    tmp = path.with_name(f".{path.name}.tmp")
    faiss.write_index(index, str(tmp))
    os.replace(tmp, path)
    return {
        "file": path.name,
        "kind": "hnsw_flat",
        "metric": "inner_product",
        "items": int(vectors.shape[0]),
        "dim": int(vectors.shape[1]),
        "m": config.hnsw_m,
        "ef_construction": config.hnsw_ef_construction,
        "ef_search": config.hnsw_ef_search,
    }


def read_index(model_dir: Path, entry: dict[str, Any], n_items: int, dim: int) -> Any:
    """The index a manifest names, checked against the catalogue it must cover; `ArtifactError`
    naming the file on any mismatch (a wrong index would answer wrong items silently)."""
    import faiss

    path = model_dir / str(entry.get("file", ANN_FILE))
    if not path.is_file():
        raise ArtifactError(f"{path}: the manifest names an ANN index that is missing")
    try:
        index: Any = faiss.read_index(str(path))
    except RuntimeError as e:
        raise ArtifactError(f"{path}: not a FAISS index ({str(e).splitlines()[0]})") from e
    if index.ntotal != n_items or entry.get("items") != n_items:
        raise ArtifactError(
            f"{path}: indexes {index.ntotal} items (manifest: {entry.get('items')}), the model has {n_items}"
        )
    if index.d != dim:
        raise ArtifactError(f"{path}: vectors of {index.d} dims, the model's retrieval vectors have {dim}")
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise ArtifactError(f"{path}: not an inner-product index (the model ranks by inner product)")
    index.hnsw.efSearch = int(entry.get("ef_search", 256))
    return index
