"""The text encoder on the real packaged all-MiniLM-L6-v2, offline: vectors, cache, errors, ONNX export."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer

from scenerec.config import TextConfig
from scenerec.errors import ConfigError
from scenerec.onnx_runtime import create_session
from scenerec.text import (
    TextEncoder,
    cache_file,
    default_encoder_dir,
    embed_cached,
    export_text_encoder_onnx,
    resolve_encoder_dir,
)

TEXTS = [
    "a rocket flies to mars",
    "astronauts travel in space",
    "a recipe for pasta sauce",
    "jazz",
    "Noise-cancelling wireless headphones with a thirty-hour battery and a soft carrying case.",
    "red apple",
    "kids' waterproof hiking boots",
    "",
    "a hardback cookbook of quick weeknight dinners",
    "yoga mat",
]


class CountingEncoder(TextEncoder):
    """Records every list of texts it is asked to embed, so cache tests can count real work."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.calls: list[list[str]] = []

    def embed(self, texts: list[str], progress: bool = True) -> np.ndarray:
        self.calls.append(list(texts))
        return super().embed(texts, progress=progress)


@pytest.fixture(scope="module")
def encoder() -> CountingEncoder:
    # batch_size 4 so that even these short lists run through several batches.
    return CountingEncoder(resolve_encoder_dir(TextConfig()), max_length=128, batch_size=4)


def test_default_encoder_loads_offline(encoder: CountingEncoder) -> None:
    assert "HF_HUB_OFFLINE" in os.environ  # set (unless the caller chose a value) before loading
    assert encoder.directory == default_encoder_dir()
    assert (encoder.dim, encoder.name) == (384, "all-MiniLM-L6-v2")
    assert (encoder.pooling, encoder.normalize) == ("mean", True)
    assert len(encoder.fingerprint) == 16 and int(encoder.fingerprint, 16) >= 0


def test_vectors_are_unit_norm_and_semantic(encoder: CountingEncoder) -> None:
    vectors = encoder.embed(TEXTS, progress=False)
    assert vectors.dtype == np.float32 and vectors.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    rocket, space, pasta = vectors[:3]
    assert rocket @ space > rocket @ pasta + 0.2
    assert rocket @ space > space @ pasta + 0.2


def test_matches_sentence_transformers(encoder: CountingEncoder) -> None:
    # The known answer: the reference implementation of this model's pooling and normalisation.
    st = pytest.importorskip("sentence_transformers")
    reference = st.SentenceTransformer(str(default_encoder_dir()), device="cpu", local_files_only=True)
    expected = reference.encode(TEXTS, batch_size=4, convert_to_numpy=True, show_progress_bar=False)
    np.testing.assert_allclose(encoder.embed(TEXTS, progress=False), expected, atol=1e-5)


def test_embed_is_deterministic_and_keeps_input_order(encoder: CountingEncoder) -> None:
    first = encoder.embed(TEXTS, progress=False)
    perm = np.random.default_rng(0).permutation(len(TEXTS))
    shuffled = encoder.embed([TEXTS[i] for i in perm], progress=False)
    np.testing.assert_array_equal(shuffled, first[perm])  # bit-identical, not just close
    np.testing.assert_array_equal(encoder.embed(TEXTS, progress=False), first)
    # Padding inside a batch does not leak into a text's vector.
    np.testing.assert_allclose(encoder.embed([TEXTS[4]], progress=False)[0], first[4], atol=1e-5)
    assert encoder.embed([], progress=False).shape == (0, 384)


def test_cache_embeds_each_distinct_text_once(encoder: CountingEncoder, tmp_path: Path) -> None:
    encoder.calls.clear()
    texts = ["a", "b", "a", "c", "b"]
    first = embed_cached(encoder, texts, tmp_path, progress=False)
    assert encoder.calls == [["a", "b", "c"]]
    np.testing.assert_array_equal(first[0], first[2])
    np.testing.assert_allclose(first, encoder.embed(texts, progress=False), atol=1e-5)
    encoder.calls.clear()

    second = embed_cached(encoder, ["c", "a", "d", "d"], tmp_path, progress=False)
    assert encoder.calls == [["d"]]
    np.testing.assert_array_equal(second[:2], first[[3, 0]])
    with np.load(cache_file(encoder, tmp_path)) as data:
        assert data["keys"].shape == (4,) and data["vectors"].shape == (4, 384)

    encoder.calls.clear()
    np.testing.assert_array_equal(embed_cached(encoder, texts, tmp_path, progress=False), first)
    assert encoder.calls == []
    assert [p.name for p in tmp_path.iterdir()] == [cache_file(encoder, tmp_path).name]  # no temp files


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong_shape"])
def test_corrupt_cache_is_recomputed(
    encoder: CountingEncoder, tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    texts = ["red apple", "jazz"]
    expected = embed_cached(encoder, texts, tmp_path, progress=False)
    path = cache_file(encoder, tmp_path)
    if damage == "garbage":
        path.write_bytes(b"not a cache at all")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        with path.open("wb") as f:
            np.savez(f, keys=np.array([b"0" * 64], dtype="S64"), vectors=np.zeros((1, 3), np.float32))
    encoder.calls.clear()
    with caplog.at_level(logging.WARNING, logger="scenerec.text"):
        again = embed_cached(encoder, texts, tmp_path, progress=False)
    np.testing.assert_array_equal(again, expected)
    assert encoder.calls == [texts]
    assert any("recomputing" in r.getMessage() for r in caplog.records)
    encoder.calls.clear()
    embed_cached(encoder, texts, tmp_path, progress=False)  # the rewritten cache is whole again
    assert encoder.calls == []


def test_bad_encoder_dir_names_path_and_what_is_expected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"{tmp_path}.*config.json.*tokenizer"):
        TextEncoder(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ConfigError, match=f"{tmp_path}: missing weights, tokenizer files"):
        TextEncoder(tmp_path)
    with pytest.raises(ConfigError, match="not a directory"):
        resolve_encoder_dir(TextConfig(encoder=str(tmp_path / "nowhere")))


def test_pooling_follows_the_sentence_transformers_files(encoder: CountingEncoder, tmp_path: Path) -> None:
    # Same weights, CLS pooling declared and no Normalize module: other vectors, other fingerprint.
    for item in default_encoder_dir().iterdir():
        if item.is_file() and item.name != "modules.json":
            (tmp_path / item.name).symlink_to(item)
    (tmp_path / "modules.json").write_text(
        json.dumps([{"path": "", "type": "sentence_transformers.models.Transformer"},
                    {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}])
    )  # fmt: skip
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    cls = TextEncoder(tmp_path, batch_size=4)
    assert (cls.pooling, cls.normalize, cls.name) == ("cls", False, tmp_path.name)
    assert cls.fingerprint != encoder.fingerprint
    batch = cls.tokenize(TEXTS[:3])
    hidden = cls.module.model(**batch).last_hidden_state[:, 0].detach().numpy()
    np.testing.assert_allclose(cls.embed(TEXTS[:3], progress=False), hidden, atol=1e-5)


@pytest.mark.parametrize(
    ("model_type", "size"),
    [
        (
            "bert",
            {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
        ),
        ("distilbert", {"dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64}),  # no token_type_ids
    ],
)
def test_any_bert_class_directory_works(tmp_path: Path, model_type: str, size: dict[str, int]) -> None:
    # A plain Hugging Face directory (no sentence-transformers files): mean pooling, L2 normalised.
    directory = tmp_path / f"tiny-{model_type}"
    torch.manual_seed(0)
    AutoModel.from_config(AutoConfig.for_model(model_type, vocab_size=30522, **size)).save_pretrained(
        directory
    )
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(default_encoder_dir() / name, directory / name)
    tiny = TextEncoder(directory, max_length=32, batch_size=4)
    assert (tiny.dim, tiny.name, tiny.pooling, tiny.normalize) == (32, directory.name, "mean", True)
    np.testing.assert_allclose(np.linalg.norm(tiny.embed(TEXTS, progress=False), axis=1), 1.0, atol=1e-5)
    assert export_text_encoder_onnx(tiny, tmp_path / "out" / "text_encoder.onnx")["max_abs_error"] <= 1e-4


def test_onnx_export_matches_and_serves_from_the_artifact_alone(
    encoder: CountingEncoder, tmp_path: Path
) -> None:
    report = export_text_encoder_onnx(encoder, tmp_path / "export" / "text_encoder.onnx")
    assert report["max_abs_error"] <= 1e-4
    assert report["batch_sizes"] == [1, 8] and report["opset"] == 17
    assert [i["name"] for i in report["inputs"]] == ["input_ids", "attention_mask"]
    assert report["outputs"] == [{"name": "embedding", "type": "tensor(float)", "shape": ["batch", 384]}]
    onnx.checker.check_model(str(tmp_path / "export" / "text_encoder.onnx"))

    # Serving side: only the ONNX file and the tokenizer folder, moved somewhere else.
    served = tmp_path / "served"
    shutil.copytree(tmp_path / "export", served)
    shutil.rmtree(tmp_path / "export")
    assert sorted(p.name for p in served.iterdir()) == ["text_encoder.onnx", "tokenizer"]
    tokenizer = AutoTokenizer.from_pretrained(served / "tokenizer", local_files_only=True)
    session, _ = create_session(served / "text_encoder.onnx", device="cpu")
    new_texts = ["A brand-new item: a solar-powered camping lantern", "tent"]
    tokens = tokenizer(
        new_texts, padding=True, truncation=True, max_length=report["max_length"], return_tensors="np"
    )
    feeds = {name: tokens[name].astype(np.int64) for name in ("input_ids", "attention_mask")}
    (served_vectors,) = session.run(["embedding"], feeds)
    np.testing.assert_allclose(served_vectors, encoder.embed(new_texts, progress=False), atol=1e-5)
