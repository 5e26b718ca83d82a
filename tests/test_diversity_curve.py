"""The offline diversity curve: d = 0 is the full-ranking evaluation, more d spreads the lists."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from scenerec.config import Config, EvalConfig, RankingConfig
from scenerec.diversity_curve import diversity_curve
from scenerec.evaluate import evaluate
from tests.test_evaluate import FixedScores, cases


def world(seed: int = 0) -> tuple[FixedScores, object, np.ndarray, np.ndarray]:
    """300 cases over 120 items in 6 categories; scores and targets lean on each user's category."""
    rng = np.random.default_rng(seed)
    n_cases, n_items = 300, 120
    categories = rng.integers(0, 6, n_items)
    taste = rng.integers(0, 6, n_cases)
    scores = rng.normal(size=(n_cases, n_items)) + 2.0 * (categories[None, :] == taste[:, None])
    histories = [list(rng.choice(n_items, 5, replace=False)) for _ in range(n_cases)]
    liked = [np.setdiff1d(np.flatnonzero(categories == t), h) for t, h in zip(taste, histories, strict=True)]
    targets = [int(rng.choice(items)) for items in liked]  # held-out items of the user's own category
    vectors = np.concatenate([rng.normal(size=(n_items, 8)), np.ones((n_items, 1))], axis=1)
    return FixedScores(scores), cases(targets, histories), categories, vectors


def config(pool: int = 40) -> Config:
    return dataclasses.replace(
        Config(),
        eval=EvalConfig(ks=(10, 20), chunk_size=128),
        ranking=RankingConfig(diversity_pool=pool, diversity_levels=(0.0, 0.5, 1.0)),
    )


def test_no_diversity_reproduces_the_full_ranking_evaluation() -> None:
    scorer, test, categories, vectors = world()
    curve = diversity_curve(scorer, test, categories, vectors, config())
    plain = evaluate(scorer, test, len(categories), config().eval, categories)["metrics"]
    assert curve[0]["diversity"] == 0.0
    for name in ("ndcg@10", "hr@10", "ndcg@20", "ild@10", "coverage@10", "coverage@20"):
        assert curve[0][name] == pytest.approx(plain[name]), name


def test_more_diversity_spreads_the_lists_and_costs_relevance_here() -> None:
    scorer, test, categories, vectors = world(1)
    curve = diversity_curve(scorer, test, categories, vectors, config())
    assert [row["diversity"] for row in curve] == [0.0, 0.5, 1.0]
    ild = [row["ild@10"] for row in curve]
    assert ild[0] < ild[1] < ild[2]
    assert curve[2]["ndcg@10"] < curve[0]["ndcg@10"]  # targets cluster in the user's category here
    assert all(0.0 <= row["coverage@10"] <= 1.0 for row in curve)


def test_a_pool_of_k_items_only_reorders_them() -> None:
    """With a pool of exactly k, every level answers the same set: hr@k and coverage@k stay."""
    scorer, test, categories, vectors = world(2)
    curve = diversity_curve(scorer, test, categories, vectors, config(pool=20))
    assert {round(row["hr@20"], 12) for row in curve} == {round(curve[0]["hr@20"], 12)}
    assert {row["coverage@20"] for row in curve} == {curve[0]["coverage@20"]}
