"""The model directory: what it holds, its manifest, and the checks serving runs before trusting it.

    manifest.json   format and model version, created, config, graphs (inputs/outputs with dtypes
                    and shapes, opset), item count, dims, encoder, vocabularies, feature service,
                    sha256 of every file
    user_tower.onnx     history + request context -> query vectors (and their parts)
    retrieval.onnx      query -> masked scores over the whole catalogue and the top k
    ranker.onnx         query parts + candidates -> score, its three parts, p(conversion)
    item_tower.onnx     frozen text embedding -> item vectors of a brand-new item
    fresh_ranker.onnx   the ranker for items added after export (their tables are inputs)
    text_encoder.onnx   + tokenizer/: item text -> frozen text embedding
    <graph>.onnx.data   a graph's weights when they pass 1 GiB (ONNX external data; large catalogues)
    id_maps/            items, scenes, devices (index order)
    items.parquet       titles, categories, item vectors, text embeddings, popularity (also in Feast)
    metrics.json, parity.json, report.html

JSON only, never pickle: the directory is read by other processes, images and languages.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from scenerec.errors import ScenerecError

FORMAT_VERSION = 2  # 2: the item-item part (retrieval and ranker read the history)
MANIFEST = "manifest.json"
GRAPHS = ("user_tower", "retrieval", "ranker", "item_tower", "fresh_ranker", "text_encoder")


class ArtifactError(ScenerecError):
    """A model directory is missing a file, fails its checksums, or disagrees with its manifest."""

    exit_code = 2


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_hashes(directory: Path) -> dict[str, str]:
    """sha256 of every file below `directory` except the manifest, by relative path."""
    return {
        str(p.relative_to(directory)): sha256_file(p)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")
    }


def read_manifest(directory: str | Path, verify: bool = True) -> dict[str, Any]:
    """The manifest of a model directory; with `verify`, every listed file must exist and match its hash."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"{directory}: no {MANIFEST} (expected a scenerec model directory)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path}: not valid JSON ({e})") from e
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: format_version {manifest.get('format_version')!r}, this scenerec reads {FORMAT_VERSION}"
        )
    if verify:
        problems = []
        for name, expected in manifest.get("files", {}).items():
            file = directory / name
            if not file.is_file():
                problems.append(f"{file}: listed in the manifest but missing")
            elif sha256_file(file) != expected:
                problems.append(f"{file}: sha256 differs from the manifest (changed after export?)")
        if problems:
            raise ArtifactError(problems[0] if len(problems) == 1 else "\n".join(problems))
    return manifest


def graph_signature(session: Any) -> dict[str, list[dict[str, Any]]]:
    """Inputs and outputs of an ONNX Runtime session as manifest entries (name, dtype, shape)."""

    def describe(args: Any) -> list[dict[str, Any]]:
        return [
            {"name": a.name, "dtype": a.type, "shape": [d if isinstance(d, int) else str(d) for d in a.shape]}
            for a in args
        ]

    return {"inputs": describe(session.get_inputs()), "outputs": describe(session.get_outputs())}


def check_signature(name: str, session: Any, expected: dict[str, list[dict[str, Any]]]) -> None:
    """Refuse a graph whose inputs/outputs differ from what the manifest promises."""
    actual = graph_signature(session)
    for side in ("inputs", "outputs"):
        got = [(a["name"], a["dtype"], len(a["shape"])) for a in actual[side]]
        want = [(a["name"], a["dtype"], len(a["shape"])) for a in expected[side]]
        if got != want:
            raise ArtifactError(f"{name}.onnx {side} {got} do not match the manifest's {want}")
