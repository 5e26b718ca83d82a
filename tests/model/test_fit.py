"""Training: a small real run of the real function, the CUDA fallback, and config errors."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
import torch

from scenerec.config import Config, EvalConfig, ModelConfig, TrainConfig
from scenerec.data.dataset import Dataset
from scenerec.data.split import leave_last_out
from scenerec.model.calibrate import calibrate_lambda
from scenerec.model.fit import fit, item_statistics, resolve_device, size_recipe
from scenerec.model.sequences import build_windows

SMALL = Config(
    eval=EvalConfig(ks=(10,)),
    model=ModelConfig(dim=32, max_history=20, layers=1, scene_dim=8),
    train=TrainConfig(epochs=3, patience=3, batch_size=64, ablations=(), seed=1),
)


def test_windows_cover_every_event_but_the_first_once(small_synthetic_dataset: Dataset) -> None:
    rows = leave_last_out(small_synthetic_dataset).train
    conversions = np.zeros(len(rows))
    windows = build_windows(rows, conversions, 20, small_synthetic_dataset.vocab.n_items, 4, 24)
    users = rows["u"].nunique()
    assert (windows.targets >= 0).sum() == len(rows) - users
    first = windows.select(np.array([0]))
    valid = first.targets[0] >= 0
    # each target is the input at the next position (the window reads its own past only)
    assert np.array_equal(first.hist_items[0, 1:][valid[:-1]], first.targets[0, :-1][valid[:-1]])
    # every window knows whose log it is cut from (the item-item part's folds are by user)
    for w in (0, len(windows) // 2, len(windows) - 1):
        items = windows.targets[w][windows.targets[w] >= 0]
        user_items = rows.loc[rows["u"] == windows.user[w], "i"].to_numpy()
        assert np.isin(items, user_items).all()


def test_popularity_buckets_and_cold_mask(small_synthetic_dataset: Dataset) -> None:
    rows = leave_last_out(small_synthetic_dataset).train
    bucket, cold, counts = item_statistics(rows, small_synthetic_dataset.vocab.n_items, 4)
    assert cold.numpy().tolist() == (counts == 0).tolist()
    warm = ~cold.numpy()
    assert set(bucket.numpy()[warm]) == {0, 1, 2, 3}
    top, bottom = counts[warm].argmax(), counts[warm].argmin()
    assert bucket.numpy()[warm][top] == 3 and bucket.numpy()[warm][bottom] == 0


def test_a_short_real_training_run_learns(small_synthetic_dataset: Dataset) -> None:
    split = leave_last_out(small_synthetic_dataset)
    text = torch.randn(small_synthetic_dataset.vocab.n_items, 16)
    result = fit(small_synthetic_dataset, split.train, split.valid_cases(), SMALL, text)
    assert len(result.epochs) == 3 and result.best_epoch >= 1
    assert result.epochs[-1]["loss"] < result.epochs[0]["loss"]
    chance = 10 / small_synthetic_dataset.vocab.n_items
    assert result.best_valid["hr@10"] > 3 * chance
    assert result.samples_per_second > 0 and not result.model.training


def test_training_is_deterministic_on_cpu(small_synthetic_dataset: Dataset) -> None:
    split = leave_last_out(small_synthetic_dataset)
    text = torch.randn(small_synthetic_dataset.vocab.n_items, 16, generator=torch.Generator().manual_seed(0))
    config = dataclasses.replace(SMALL, train=dataclasses.replace(SMALL.train, epochs=1))
    a = fit(small_synthetic_dataset, split.train, split.valid_cases(), config, text)
    b = fit(small_synthetic_dataset, split.train, split.valid_cases(), config, text)
    assert a.epochs[0]["loss"] == b.epochs[0]["loss"]
    assert a.best_valid == b.best_valid


def test_cuda_request_without_a_gpu_falls_back_loudly(caplog: pytest.LogCaptureFixture) -> None:
    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
        return
    with caplog.at_level(logging.WARNING, logger="scenerec.model.fit"):
        assert resolve_device("cuda").type == "cpu"
    assert "no CUDA device" in caplog.text
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(ValueError, match=r"train\.device"):
        resolve_device("tpu")


def test_lambda_is_calibrated_per_scene_on_valid_and_never_worsens_it(
    small_synthetic_dataset: Dataset,
) -> None:
    split = leave_last_out(small_synthetic_dataset)
    text = torch.randn(small_synthetic_dataset.vocab.n_items, 16, generator=torch.Generator().manual_seed(0))
    config = dataclasses.replace(SMALL, train=dataclasses.replace(SMALL.train, epochs=2, lambda_scales=()))
    plain = fit(small_synthetic_dataset, split.train, split.valid_cases(), config, text)
    assert plain.lambda_scale == {}
    learned = torch.nn.functional.softplus(plain.model.lambda_scene.detach()).clone()
    model, vocab = plain.model, small_synthetic_dataset.vocab
    scales, valid = calibrate_lambda(
        model, small_synthetic_dataset, split.valid_cases(), config_with_scales(config), plain.best_valid
    )
    present = {vocab.scenes[k] for k in np.unique(split.valid_cases().scene)}
    assert set(scales) == present and set(scales.values()) <= {0.0, 0.5, 1.0, 1.5}
    assert valid["ndcg@10"] >= plain.best_valid["ndcg@10"] - 1e-9 or set(scales.values()) == {1.0}
    now = torch.nn.functional.softplus(model.lambda_scene.detach())
    for k, name in enumerate(vocab.scenes):  # each scene's lambda is the learned one times its factor
        if name in scales:
            assert now[k].item() == pytest.approx(learned[k].item() * scales[name], abs=1e-6)
        else:
            assert now[k].item() == pytest.approx(learned[k].item(), abs=1e-6)


def config_with_scales(config: Config) -> Config:
    train = dataclasses.replace(config.train, lambda_scales=(0.0, 0.5, 1.5), lambda_calibration_min_cases=1)
    return dataclasses.replace(config, train=train)


def test_the_recipe_adapts_to_the_data_size() -> None:
    tc = TrainConfig()
    small, large = tc.large_data_interactions - 1, tc.large_data_interactions
    assert size_recipe(tc, small, warm=False) == (tc.lr, tc.patience)
    assert size_recipe(tc, large, warm=False) == (tc.large_data_lr, tc.large_data_patience)
    # a warm start keeps its small steps whatever the size
    assert size_recipe(tc, large, warm=True) == (tc.lr * tc.warm_lr_scale, tc.patience)
    off = dataclasses.replace(tc, large_data_interactions=0)
    assert size_recipe(off, 10**7, warm=False) == (tc.lr, tc.patience)


def test_sampled_softmax_over_the_steps_rows_learns_and_steps_per_epoch_caps_an_epoch(
    small_synthetic_dataset: Dataset,
) -> None:
    """The large-catalogue path (train.loss=sampled: only the rows a step reads are computed) on a
    small world: it learns, and train.steps_per_epoch bounds each epoch's optimizer steps."""
    split = leave_last_out(small_synthetic_dataset)
    text = torch.randn(small_synthetic_dataset.vocab.n_items, 16, generator=torch.Generator().manual_seed(0))
    train = dataclasses.replace(SMALL.train, loss="sampled", negatives=64, steps_per_epoch=4)
    result = fit(
        small_synthetic_dataset,
        split.train,
        split.valid_cases(),
        dataclasses.replace(SMALL, train=train),
        text,
    )
    assert [e["steps"] for e in result.epochs] == [4, 4, 4]
    chance = 10 / small_synthetic_dataset.vocab.n_items
    assert result.best_valid["hr@10"] > 2 * chance
    full = fit(small_synthetic_dataset, split.train, split.valid_cases(), SMALL, text)
    assert all(e["steps"] > 4 for e in full.epochs)
