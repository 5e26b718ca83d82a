"""Joint fine-tuning of the text encoder (text.finetune): the real packaged MiniLM on a small world.

Short fits (one or two epochs, the top layer, 32 re-encoded items a step, 32 tokens a text) keep
this file to a couple of minutes on 2 cores.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import BertConfig, BertModel, DistilBertConfig, DistilBertModel

from scenerec.config import Config, TextConfig, load_config
from scenerec.data import schema as c
from scenerec.data.dataset import load_dataset
from scenerec.data.split import leave_last_out
from scenerec.data.synthetic import SyntheticSpec, write_synthetic
from scenerec.errors import ConfigError
from scenerec.model.finetune import TextTuner, check_finetune
from scenerec.model.fit import FitResult, fit
from scenerec.model.warm_start import WarmStart
from scenerec.onnx_runtime import create_session
from scenerec.text import TOKENIZER_FILES, TextEncoder, default_encoder_dir, export_text_encoder_onnx

ROOT = Path(__file__).resolve().parents[2]
FAST = [
    "model.dim=16",
    "model.use_item_item=false",
    "train.lambda_scales=[]",
    "train.item_item_scales=[]",
    "text.finetune=true",
    "text.finetune_items=32",
    "text.max_length=32",
]


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder(default_encoder_dir(), max_length=32)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, encoder: TextEncoder) -> dict:
    """A world smaller than the shared small_synthetic: every fit here trains the encoder too."""
    directory = tmp_path_factory.mktemp("finetune") / "data"
    write_synthetic(directory, SyntheticSpec(users=250, items=160, scenes=2, seed=5, mean_events=14,
                                             max_events=40))  # fmt: skip
    dataset = load_dataset(directory)
    texts = dataset.items[c.TEXT].fillna("").astype(str).tolist()
    text = torch.as_tensor(encoder.embed(texts, progress=False))
    split = leave_last_out(dataset)
    return {"directory": directory, "dataset": dataset, "texts": texts, "text": text, "split": split}


def _fit(world: dict, encoder: TextEncoder, *overrides: str) -> FitResult:
    config = Config().with_overrides([*FAST, *overrides])
    split = world["split"]
    return fit(world["dataset"], split.train, split.valid_cases(), config, world["text"], "ft", None, encoder)


@pytest.fixture(scope="module")
def tuned(world: dict, encoder: TextEncoder) -> FitResult:
    before = copy.deepcopy(encoder.module.state_dict())
    frozen = world["text"].clone()
    result = _fit(world, encoder, "train.epochs=2", "text.refresh_steps=5")
    # the frozen encoder and the caller's table are left as they were (other fits read them)
    for name, value in encoder.module.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert torch.equal(world["text"], frozen)
    return result


def _tiny_encoder_dir(tmp_path: Path, model: torch.nn.Module) -> Path:
    """A Hugging Face directory of a small random model with MiniLM's tokenizer files."""
    model.save_pretrained(tmp_path)
    for name in TOKENIZER_FILES:
        if (default_encoder_dir() / name).is_file():
            shutil.copy2(default_encoder_dir() / name, tmp_path / name)
    return tmp_path


# ---- bad input ---------------------------------------------------------------------------------
def test_lora_rank_zero_is_a_config_error_naming_the_field() -> None:
    with pytest.raises(ConfigError, match=r"text\.lora_rank': expected a positive integer.*got 0"):
        Config.from_dict({"text": {"finetune": True, "finetune_mode": "lora", "lora_rank": 0}})
    with pytest.raises(ConfigError, match=r"text\.finetune_layers': expected an integer >= 1, got 0"):
        TextConfig(finetune_layers=0)


def test_more_layers_than_the_encoder_has(tmp_path: Path, encoder: TextEncoder) -> None:
    with pytest.raises(ConfigError, match=r"text\.finetune_layers': expected at most 6 .*got 7"):
        check_finetune(TextConfig(finetune=True, finetune_layers=7), encoder)
    check_finetune(TextConfig(finetune=False, finetune_layers=7), encoder)  # off: nothing is asked
    small = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    tiny = TextEncoder(_tiny_encoder_dir(tmp_path / "bert", BertModel(small)), max_length=16)
    with pytest.raises(ConfigError, match=r"expected at most 2 \(the transformer layers of .*bert\), got 3"):
        check_finetune(TextConfig(finetune=True, finetune_layers=3), tiny)
    # any BERT-class directory fine-tunes through the same option: its split reproduces its vectors
    texts = ["a rocket to mars", "jazz", "a recipe for pasta sauce with basil"]
    tuner = TextTuner(tiny, texts, TextConfig(finetune=True, finetune_layers=2), seed=0)
    np.testing.assert_allclose(tuner.table().numpy(), tiny.embed(texts, progress=False), atol=1e-5)


def test_an_encoder_without_transformer_layers(tmp_path: Path) -> None:
    small = DistilBertConfig(vocab_size=30522, dim=32, n_layers=1, n_heads=2, hidden_dim=64)
    other = TextEncoder(_tiny_encoder_dir(tmp_path, DistilBertModel(small)), max_length=16)
    with pytest.raises(ConfigError, match=r"text\.finetune': the encoder .* has no transformer layers"):
        check_finetune(TextConfig(finetune=True), other)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (["text.lora_rank=0"], "text.lora_rank"),
        (["text.finetune=true", "text.finetune_layers=9"], "text.finetune_layers': expected at most 6"),
    ],
)
def test_the_command_exits_2(small_synthetic: Path, tmp_path: Path, setting: list[str], message: str) -> None:
    sets = [arg for s in setting for arg in ("--set", s)]
    result = subprocess.run(
        [sys.executable, "-m", "scenerec.cli", "train", "--data", str(small_synthetic), "--out",
         str(tmp_path / "model"), *sets],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr.replace("\n", " ")
    assert not (tmp_path / "model").exists()


# ---- what fine-tuning trains -------------------------------------------------------------------
@pytest.mark.parametrize(
    "config",
    [
        TextConfig(finetune=True, finetune_layers=1),
        TextConfig(finetune=True, finetune_layers=3),
        TextConfig(finetune=True, finetune_mode="lora", lora_rank=2),
    ],
    ids=["top1", "top3", "lora"],
)
def test_cached_lower_layers_reproduce_the_frozen_vectors(
    world: dict, encoder: TextEncoder, config: TextConfig
) -> None:
    texts = world["texts"][:40]
    tuner = TextTuner(encoder, texts, config, seed=0)
    np.testing.assert_allclose(tuner.table().numpy(), world["text"][:40].numpy(), atol=1e-5)
    tokens = int(tuner.lengths.sum())
    assert tuner.hidden.shape == (tokens + 1, 384)  # trimmed to each text's tokens, one pad row


def test_finetuning_changes_the_top_layer_only(tuned: FitResult, encoder: TextEncoder) -> None:
    assert tuned.text_encoder is not None and tuned.text is not None
    before = dict(encoder.module.model.named_parameters())
    changed = {
        name for name, value in tuned.text_encoder.module.model.named_parameters()
        if not torch.equal(value, before[name])
    }  # fmt: skip
    trained = {name for name in before if name.startswith("encoder.layer.5.")}
    assert changed == trained
    assert tuned.text_encoder.fingerprint != encoder.fingerprint


def test_the_catalogue_table_is_the_tuned_encoders(tuned: FitResult, world: dict) -> None:
    assert tuned.text_encoder is not None and tuned.text is not None
    assert torch.equal(tuned.model.items.text, tuned.text)
    fresh = tuned.text_encoder.embed(world["texts"], progress=False)
    np.testing.assert_allclose(tuned.text.numpy(), fresh, atol=1e-5)
    assert float((tuned.text - world["text"]).abs().max()) > 1e-3  # and it did move


def test_the_exported_tuned_encoder_matches_pytorch(tuned: FitResult, world: dict, tmp_path: Path) -> None:
    assert tuned.text_encoder is not None and tuned.text is not None
    info = export_text_encoder_onnx(tuned.text_encoder, tmp_path / "text_encoder.onnx")
    assert info["max_abs_error"] <= 1e-4 and info["fingerprint"] == tuned.text_encoder.fingerprint
    session, _ = create_session(tmp_path / "text_encoder.onnx")
    texts = world["texts"][:64]
    batch = tuned.text_encoder.tokenize(texts)
    (got,) = session.run(["embedding"], {k: v.numpy() for k, v in batch.items()})
    np.testing.assert_allclose(got, tuned.text[:64].numpy(), atol=1e-4)  # what items.parquet holds


def test_a_short_joint_run_is_deterministic(tuned: FitResult, world: dict, encoder: TextEncoder) -> None:
    again = _fit(world, encoder, "train.epochs=2", "text.refresh_steps=5")
    assert again.best_valid == tuned.best_valid
    assert again.text is not None and tuned.text is not None and torch.equal(again.text, tuned.text)
    for (name, a), (_, b) in zip(
        again.model.state_dict().items(), tuned.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_lora_trains_adapters_on_every_layer_and_merges(
    world: dict, encoder: TextEncoder, tmp_path: Path
) -> None:
    result = _fit(world, encoder, "train.epochs=1", "text.finetune_mode=lora", "text.lora_rank=2",
                  "text.finetune_items=8")  # fmt: skip
    assert result.text_encoder is not None and result.text is not None
    before = dict(encoder.module.model.named_parameters())
    after = dict(result.text_encoder.module.model.named_parameters())
    assert set(after) == set(before)  # merged: a plain transformer again, no adapter tensors
    changed = {name for name, value in after.items() if not torch.equal(value, before[name])}
    layers = {name.split(".")[2] for name in changed}
    assert layers == {str(k) for k in range(6)}  # every layer
    assert all(name.endswith(".weight") and "LayerNorm" not in name for name in changed)  # Linears only
    assert not any(name.startswith("embeddings.") for name in changed)
    info = export_text_encoder_onnx(result.text_encoder, tmp_path / "text_encoder.onnx")
    assert info["max_abs_error"] <= 1e-4
    fresh = result.text_encoder.embed(world["texts"][:50], progress=False)
    np.testing.assert_allclose(result.text[:50].numpy(), fresh, atol=1e-5)


def test_the_gpu_training_config_turns_finetuning_on() -> None:
    config = load_config(ROOT / "k8s" / "training" / "config-gpu.yaml")
    assert config.text.finetune and config.train.device == "cuda"
    assert "frozen_text" in config.train.ablations


# ---- the whole training run --------------------------------------------------------------------
@pytest.mark.integration
def test_train_ships_the_tuned_encoder_and_the_frozen_text_ablation(world: dict, tmp_path: Path) -> None:
    from scenerec.train import train

    sets = [*FAST, "train.epochs=1", "train.ablations=[frozen_text]", "baselines.names=[popularity]"]
    metrics = train(world["directory"], tmp_path / "model", load_config(None, sets))
    frozen = metrics["ablations"]["frozen_text"]
    assert {"ndcg@10", "hr@10"} <= set(frozen["test"])
    assert {"cold_items", "cold_items:among_new"} <= set(frozen["slices"])
    assert any(k.startswith("scene:") for k in frozen["slices"]) and frozen["training"]["seconds"] > 0
    assert {"cold_items", "cold_items:among_new"} <= set(metrics["model"]["slices"])
    model_dir = tmp_path / "model"
    manifest = json.loads((model_dir / "manifest.json").read_text())
    parity = json.loads((model_dir / "parity.json").read_text())["graphs"]
    assert all(g["max_abs_error"] <= 1e-4 for g in parity.values())
    # items.parquet's text vectors come from the shipped (fine-tuned) encoder, not the frozen one
    items = pd.read_parquet(model_dir / "items.parquet")
    table = np.stack(items["text_embedding"].to_numpy())
    catalogue = pd.read_parquet(world["directory"] / "items.parquet").set_index(c.ITEM_ID)
    texts = catalogue.loc[items[c.ITEM_ID], c.TEXT]
    tokenizer_encoder = TextEncoder(default_encoder_dir(), max_length=32)
    batch = tokenizer_encoder.tokenize(texts.astype(str).tolist()[:32])
    session, _ = create_session(model_dir / "text_encoder.onnx")
    (got,) = session.run(["embedding"], {k: v.numpy() for k, v in batch.items()})
    np.testing.assert_allclose(got, table[:32], atol=1e-4)
    frozen_vectors = tokenizer_encoder.embed(texts.astype(str).tolist()[:32], progress=False)
    assert float(np.abs(frozen_vectors - table[:32]).max()) > 1e-3
    assert manifest["encoder"]["fingerprint"] != tokenizer_encoder.fingerprint
    # checkpoint.pt keeps the tuned layer: a warm start embeds with the encoder this model shipped
    warm = WarmStart.load(model_dir)
    assert {k.split(".")[3] for k in warm.state if k.startswith("text_encoder.")} == {"5"}
    shipped = warm.encoder(tokenizer_encoder)
    assert shipped.fingerprint == manifest["encoder"]["fingerprint"]
    np.testing.assert_allclose(
        shipped.embed(texts.astype(str).tolist()[:32], progress=False), table[:32], atol=1e-5
    )
