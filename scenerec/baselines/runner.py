"""Tune, fit and evaluate every baseline on both protocols; the `baselines` part of metrics.json.

Protocol per baseline: each value of its hyper-parameter grid is fitted on train and scored on
valid; the best by `EvalConfig.selection_metric` is refitted on train + valid and scored on test.
The cold-item protocol reuses the chosen parameters, fitted on the warm rows only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import pandas as pd

from scenerec.baselines.base import Baseline
from scenerec.baselines.ease import Ease
from scenerec.baselines.itemknn import ItemKNN
from scenerec.baselines.mf import ImplicitALS
from scenerec.baselines.popularity import Popularity, ScenePopularity
from scenerec.config import BaselineConfig, Config
from scenerec.data.dataset import Dataset
from scenerec.data.split import ColdSplit, Split, cold_item_split, leave_last_out
from scenerec.evaluate import cold_item_slices, evaluate, scene_slices

log = logging.getLogger(__name__)

BASELINES: dict[str, type[Baseline]] = {
    "popularity": Popularity,
    "scene_popularity": ScenePopularity,
    "itemknn": ItemKNN,
    "mf": ImplicitALS,
    "ease": Ease,
}


def parameter_grid(name: str, config: BaselineConfig, seed: int) -> list[dict[str, Any]]:
    """Candidate hyper-parameters of one baseline (a single entry when nothing is tuned)."""
    if name == "scene_popularity":
        return [{"prior": config.scene_prior}]
    if name == "itemknn":
        return [{"neighbors": k, "shrink": config.itemknn_shrink} for k in config.itemknn_neighbors]
    if name == "mf":
        return [
            {
                "factors": config.mf_factors,
                "reg": reg,
                "alpha": config.mf_alpha,
                "iterations": config.mf_iterations,
                "seed": seed,
            }
            for reg in config.mf_regs
        ]
    if name == "ease":
        return [{"l2": l2} for l2 in config.ease_lambdas]
    return [{}]


def run_baselines(
    dataset: Dataset,
    config: Config,
    split: Split | None = None,
    cold: ColdSplit | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Results per baseline: params, valid, test, slices (per scene and `cold_items`), seconds."""
    split = split or leave_last_out(dataset, config.eval.max_users, config.data.seed)
    cold = cold or cold_item_split(dataset, config.data)
    n_items, n_scenes = dataset.vocab.n_items, len(dataset.vocab.scenes)
    categories = dataset.item_categories()
    valid_cases, test_cases, cold_cases = split.valid_cases(), split.test_cases(), cold.test_cases()
    slices = scene_slices(test_cases, dataset.vocab)
    train_valid = pd.concat([split.train, split.valid])
    cold_train = pd.concat([cold.warm.train, cold.warm.valid])
    results: dict[str, dict[str, Any]] = {}
    for name in config.baselines.names:
        if name not in BASELINES:
            raise ValueError(f"unknown baseline '{name}' (known: {', '.join(BASELINES)})")
        if name == "ease" and n_items > config.baselines.ease_max_items:
            note = (
                f"skipped: {n_items} items exceed baselines.ease_max_items={config.baselines.ease_max_items} "
                "(EASE inverts an items x items matrix)"
            )
            log.warning("ease %s", note)
            results[name] = {"skipped": note}
            continue
        if on_progress:
            on_progress(name)
        started = time.perf_counter()
        model_cls = BASELINES[name]

        def fitted(rows: pd.DataFrame, params: dict[str, Any], cls: type[Baseline] = model_cls) -> Baseline:
            return cls(n_items, n_scenes).fit(rows, **params)

        best_params, best_valid = _tune(
            name,
            fitted,
            split.train,
            valid_cases,
            n_items,
            config,
            categories,
            parameter_grid(name, config.baselines, config.data.seed),
        )
        test = evaluate(
            fitted(train_valid, best_params),
            test_cases,
            n_items,
            config.eval,
            categories,
            slices,
            desc=f"{name} test",
        )
        cold_result = cold_item_slices(
            fitted(cold_train, best_params),
            cold_cases,
            cold.cold_items,
            n_items,
            config.eval,
            categories,
            desc=f"{name} cold",
        )
        results[name] = {
            "params": best_params,
            "valid": best_valid,
            "test": test["metrics"],
            "slices": {**test["slices"], **cold_result},
            "seconds": round(time.perf_counter() - started, 2),
        }
    return results


def _tune(
    name: str,
    fitted: Callable[[pd.DataFrame, dict[str, Any]], Baseline],
    train: pd.DataFrame,
    valid_cases: Any,
    n_items: int,
    config: Config,
    categories: Any,
    grid: list[dict[str, Any]],
) -> tuple[dict[str, Any], dict[str, float]]:
    best: tuple[float, dict[str, Any], dict[str, float]] | None = None
    for params in grid:
        metrics = evaluate(
            fitted(train, params), valid_cases, n_items, config.eval, categories, desc=f"{name} valid"
        )["metrics"]
        value = metrics[config.eval.selection_metric]
        log.debug("%s %s valid %s=%.4f", name, params, config.eval.selection_metric, value)
        if best is None or value > best[0]:
            best = (value, params, metrics)
    assert best is not None
    return best[1], best[2]
