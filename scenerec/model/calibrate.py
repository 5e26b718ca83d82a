"""Per-scene weights chosen on the valid split after training: the text weight lambda_s and the
item-item weight w_ii(s).

Training learns both by likelihood over the whole catalogue (and w_ii against a B fitted on the
same rows, so in-sample), while the product is judged on its top 10 of unseen data. Each weight only
moves the scores of requests in its scene, so each scene's factor is chosen on its own slice of
the valid split, like the baselines' grids. Factor 1 (the learned value) is always a candidate and
wins ties.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from scenerec.config import Config
from scenerec.data.dataset import Dataset
from scenerec.data.split import EvalCases
from scenerec.evaluate import evaluate
from scenerec.model.joint import JointModel
from scenerec.model.scorer import TorchScorer

log = logging.getLogger(__name__)

ALL_SCENES = "all scenes"


def calibrate_scene_factors(
    model: JointModel,
    dataset: Dataset,
    valid_cases: EvalCases,
    config: Config,
    best_valid: dict[str, float],
    apply: Callable[[torch.Tensor], None],
    scales: tuple[float, ...],
    name: str,
    whole_split_fallback: bool = False,
    desc: str = "training",
) -> tuple[dict[str, float], dict[str, float]]:
    """Choose a factor per scene from `scales` (plus 1) on valid; `apply(factors [S + 1])` sets them.

    Scenes with fewer than `train.lambda_calibration_min_cases` valid cases keep factor 1, unless
    `whole_split_fallback`: then, if no scene has enough, one factor for every scene is chosen on the
    whole valid split (a small data set still gets the weight that ranks its valid cases best).
    Returns the chosen factors (by scene name, or `ALL_SCENES`) and the valid metrics after them.
    """
    metric, vocab = config.eval.selection_metric, dataset.vocab
    enough = max(config.train.lambda_calibration_min_cases, 1)
    slices = {
        str(scene): mask
        for k, scene in enumerate(vocab.scenes)
        if (mask := valid_cases.scene == k).sum() >= enough
    }
    scenes_of = {str(scene): [k] for k, scene in enumerate(vocab.scenes)}
    if not slices and whole_split_fallback and len(valid_cases):
        slices = {ALL_SCENES: np.ones(len(valid_cases), dtype=bool)}
        scenes_of[ALL_SCENES] = list(range(len(vocab.scenes) + 1))
    if not slices:
        return {}, best_valid
    candidates = sorted(set(scales) | {1.0}, key=lambda c: (c != 1.0, c))
    per_scale: dict[float, dict[str, Any]] = {}
    for scale in candidates:
        apply(torch.full((len(vocab.scenes) + 1,), scale))
        per_scale[scale] = evaluate(
            TorchScorer(model, len(vocab.devices)),
            valid_cases,
            vocab.n_items,
            config.eval,
            dataset.item_categories(),
            slices,
            desc=f"{desc} {name} x{scale:g}",
        )
    chosen: dict[str, float] = {}
    factors = torch.ones(len(vocab.scenes) + 1)
    for label in slices:
        best = max(
            candidates, key=lambda c: per_scale[c]["slices"][label][metric] + (1e-12 if c == 1.0 else 0)
        )
        chosen[label] = best
        factors[scenes_of[label]] = best
    apply(factors)
    if all(c == 1.0 for c in chosen.values()):
        return chosen, best_valid
    log.info("%s: %s scaled on valid: %s", desc, name, chosen)
    valid = evaluate(
        TorchScorer(model, len(vocab.devices)),
        valid_cases,
        vocab.n_items,
        config.eval,
        dataset.item_categories(),
        desc=f"{desc} valid ({name} calibrated)",
    )["metrics"]
    return chosen, valid


def calibrate_lambda(
    model: JointModel,
    dataset: Dataset,
    valid_cases: EvalCases,
    config: Config,
    best_valid: dict[str, float],
    desc: str = "training",
) -> tuple[dict[str, float], dict[str, float]]:
    """Scale each scene's text weight lambda_s by the factor of `train.lambda_scales` that ranks that
    scene's valid cases best (a scene whose next item is mostly decided by one strong signal, such as
    a sequel on a detail page, can want less text than likelihood gives it)."""
    learned = model.lambda_scene.detach().clone()

    def apply(factors: torch.Tensor) -> None:
        scaled = _inverse_softplus(F.softplus(learned) * factors)
        with torch.no_grad():  # a factor of 1 restores the learned value exactly
            model.lambda_scene.copy_(torch.where(factors == 1.0, learned, scaled))

    return calibrate_scene_factors(
        model,
        dataset,
        valid_cases,
        config,
        best_valid,
        apply,
        config.train.lambda_scales,
        "lambda",
        desc=desc,
    )


def calibrate_item_item(
    model: JointModel,
    dataset: Dataset,
    valid_cases: EvalCases,
    config: Config,
    best_valid: dict[str, float],
    desc: str = "training",
) -> tuple[dict[str, float], dict[str, float]]:
    """Scale each scene's item-item weight w_ii(s) by the factor of `train.item_item_scales` that ranks
    its valid cases best: B was fitted on the training rows, so during training it predicts their
    targets better than it predicts unseen ones, and the learned weight leans towards it."""
    learned = model.item_item_scene.detach().clone()

    def apply(factors: torch.Tensor) -> None:
        with torch.no_grad():  # log-parametrised: factor 0 switches the part off for that scene
            model.item_item_scene.copy_(
                torch.where(factors == 1.0, learned, learned + torch.log(factors.clamp(min=1e-13)))
            )

    return calibrate_scene_factors(
        model,
        dataset,
        valid_cases,
        config,
        best_valid,
        apply,
        config.train.item_item_scales,
        "item-item weight",
        whole_split_fallback=True,
        desc=desc,
    )


def _inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    """softplus^-1, with 0 mapped to a value whose softplus is ~1e-13 (text off for that scene)."""
    return torch.where(y > 1e-12, y + torch.log(-torch.expm1(-y.clamp(min=1e-12))), torch.full_like(y, -30.0))
