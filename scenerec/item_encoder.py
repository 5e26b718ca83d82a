"""A brand-new item's vectors from its text, with the model directory's own graphs and no torch.

    text -> tokenizer/ -> text_encoder.onnx -> embedding -> item_tower.onnx -> the item's tables

The same path training's cold items take (the text tower's adaptor and the ID vector generated
from text), so an item added while serving is scored like a cold item of the exported catalogue.
Serving and `scenerec items add` use it; nothing here imports torch or transformers (1.5 s each):
the tokenizer is read with the `tokenizers` library from the artifact's `tokenizer.json`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scenerec.artifact import ArtifactError, check_signature
from scenerec.onnx_runtime import create_session

# item_tower.onnx's outputs in order (graphs exported before they were named have the same order)
ITEM_TABLES = ("raw_text", "text", "collaborative", "scene", "bias")
BATCH = 32


@dataclass(frozen=True)
class ItemTables:
    """Item-side tables of M items, as the ranker and retrieval read them."""

    raw_text: np.ndarray  # [M, D] adapted text (what the conversion head reads)
    text: np.ndarray  # [M, D] scaled by the popularity weight of bucket 0 (the text score)
    collaborative: np.ndarray  # [M, D + Dt] generated ID vector and a zero successor vector
    scene: np.ndarray  # [M, Ds]
    bias: np.ndarray  # [M]

    def __len__(self) -> int:
        return len(self.bias)

    def vectors(self) -> np.ndarray:
        """[M, Q] retrieval vectors: the layout of `ItemSide.vectors` (cf, text, scene, bias)."""
        return np.concatenate([self.collaborative, self.text, self.scene, self.bias[:, None]], axis=1)

    def take(self, rows: np.ndarray) -> ItemTables:
        return ItemTables(*(getattr(self, name)[rows] for name in ITEM_TABLES))

    @classmethod
    def empty(cls, dims: dict[str, int]) -> ItemTables:
        d, ds, dt = dims["dim"], dims["scene_dim"], dims["transition_dim"]
        zeros = np.zeros
        return cls(
            zeros((0, d), np.float32),
            zeros((0, d), np.float32),
            zeros((0, d + dt), np.float32),
            zeros((0, ds), np.float32),
            zeros(0, np.float32),
        )

    @classmethod
    def concat(cls, parts: list[ItemTables]) -> ItemTables:
        return cls(*(np.concatenate([getattr(p, n) for p in parts]) for n in ITEM_TABLES))


class ItemEncoder:
    """Embeds item texts and turns embeddings into item tables for one model directory.

    Raises `ArtifactError` for a model exported without text (no `item_tower.onnx`): such a model
    has no way to place an item it never saw.
    """

    def __init__(self, model_dir: str | Path, manifest: dict[str, Any], threads: int | None = 1) -> None:
        self.model_dir, self.manifest = Path(model_dir), manifest
        graphs = manifest["graphs"]
        for name in ("item_tower", "text_encoder", "fresh_ranker"):
            if name not in graphs:
                raise ArtifactError(
                    f"{self.model_dir}: no {name}.onnx (a model trained without text, or exported before "
                    "new items could be served): new items need a model trained by this scenerec"
                )
        self.fingerprint = str(manifest["encoder"]["fingerprint"])
        self.max_length = int(manifest["encoder"]["max_length"])
        self._tower, _ = create_session(self.model_dir / graphs["item_tower"]["file"], threads=threads)
        check_signature("item_tower", self._tower, graphs["item_tower"])
        self._tower_outputs = [o.name for o in self._tower.get_outputs()]
        if len(self._tower_outputs) != len(ITEM_TABLES):
            raise ArtifactError(
                f"{self.model_dir}/item_tower.onnx: {len(self._tower_outputs)} outputs, expected "
                f"{len(ITEM_TABLES)} ({', '.join(ITEM_TABLES)})"
            )
        self._threads = threads
        self._encoder: Any = None
        self._tokenizer: Any = None

    # ---- text -> embedding --------------------------------------------------------------------
    def _load_text_encoder(self) -> None:
        """The tokenizer and text_encoder.onnx, on first use (a log replay needs only the tower)."""
        from tokenizers import Tokenizer

        folder = self.model_dir / self.manifest["encoder"].get("tokenizer_dir", "tokenizer")
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise ArtifactError(f"{path}: missing (the fast tokenizer serving reads a new item's text with)")
        tokenizer = Tokenizer.from_file(str(path))
        pad_token = "[PAD]"
        config = folder / "tokenizer_config.json"
        if config.is_file():
            found = json.loads(config.read_text()).get("pad_token", pad_token)
            pad_token = found.get("content", pad_token) if isinstance(found, dict) else str(found)
        pad_id = tokenizer.token_to_id(pad_token)
        tokenizer.enable_truncation(max_length=self.max_length)
        # transformers' padding=True: to the batch's longest text (the export's parity setting)
        tokenizer.enable_padding(pad_id=pad_id if pad_id is not None else 0, pad_token=pad_token)
        graph = self.manifest["graphs"]["text_encoder"]
        session, _ = create_session(self.model_dir / graph["file"], threads=self._threads)
        check_signature("text_encoder", session, graph)
        self._tokenizer, self._encoder = tokenizer, session

    def embed(self, texts: list[str]) -> np.ndarray:
        """[n, D_text] float32 embeddings of `texts`, batched by length like `TextEncoder.embed`."""
        if self._encoder is None:
            self._load_text_encoder()
        width = int(self.manifest["dims"]["text"])
        out = np.empty((len(texts), width), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: (len(texts[i]), texts[i]))
        for start in range(0, len(order), BATCH):
            rows = order[start : start + BATCH]
            encoded = self._tokenizer.encode_batch([texts[i] for i in rows])
            feeds = {
                "input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64),
            }
            (embedding,) = self._encoder.run(["embedding"], feeds)
            out[rows] = embedding
        return out

    # ---- embedding -> tables ------------------------------------------------------------------
    def tables(self, embeddings: np.ndarray) -> ItemTables:
        """The item tables of `embeddings` [M, D_text] (item_tower.onnx)."""
        if len(embeddings) == 0:
            return ItemTables.empty(self.manifest["dims"])
        found = self._tower.run(self._tower_outputs, {"text_embedding": embeddings.astype(np.float32)})
        return ItemTables(*found)
