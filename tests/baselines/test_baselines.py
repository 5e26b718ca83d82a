"""Baselines: closed forms checked against direct formulas, and behaviour on planted blocks."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from scenerec.baselines.ease import Ease
from scenerec.baselines.itemknn import ItemKNN
from scenerec.baselines.popularity import Popularity, ScenePopularity
from scenerec.baselines.runner import BASELINES, run_baselines
from scenerec.config import BaselineConfig, Config, EvalConfig
from scenerec.data.dataset import Dataset
from scenerec.data.split import leave_last_out


def blocks(tiny_dataset: Callable[..., Dataset]) -> Dataset:
    """Two communities: users 0-9 use items a0-a4 (mostly in 'home'), users 10-19 items b0-b4 ('search')."""
    rows = []
    rng = np.random.default_rng(0)
    for user in range(20):
        group, scene = ("a", "home") if user < 10 else ("b", "search")
        for t, k in enumerate(rng.permutation(5)[:4]):
            rows.append((f"u{user:02d}", f"{group}{k}", t, scene))
    return tiny_dataset(rows)


def test_ease_matches_the_closed_form(tiny_dataset: Callable[..., Dataset]) -> None:
    ds = blocks(tiny_dataset)
    rows = ds.interactions
    model = Ease(ds.vocab.n_items, 3).fit(rows, l2=2.0)
    x = np.zeros((20, ds.vocab.n_items))
    x[rows["u"], rows["i"]] = 1.0
    p = np.linalg.inv(x.T @ x + 2.0 * np.eye(ds.vocab.n_items))
    expected = np.eye(ds.vocab.n_items) - p / np.diag(p)[None, :]
    np.fill_diagonal(expected, 0.0)
    assert np.allclose(model.weights, expected, atol=1e-5)
    assert np.allclose(np.diag(model.weights), 0.0)


def test_itemknn_cosine_with_shrink(tiny_dataset: Callable[..., Dataset]) -> None:
    ds = tiny_dataset(
        [
            ("u1", "a", 1, "home"),
            ("u1", "b", 2, "home"),
            ("u2", "a", 1, "home"),
            ("u2", "c", 2, "home"),
            ("u3", "a", 1, "home"),
            ("u3", "b", 2, "home"),
        ]
    )
    model = ItemKNN(3, 1).fit(ds.interactions, neighbors=2, shrink=1.0)
    sim = model.similarity.toarray()
    a, b, c = (ds.vocab.items.get_loc(x) for x in "abc")
    assert sim[a, b] == pytest.approx(2 / (np.sqrt(3 * 2) + 1.0))  # co-occur twice; a seen 3x, b 2x
    assert sim[b, c] == 0.0 and sim[a, a] == 0.0
    model1 = ItemKNN(3, 1).fit(ds.interactions, neighbors=1, shrink=1.0)
    assert (model1.similarity.toarray() > 0).sum(axis=0).max() == 1  # one neighbour kept per item


@pytest.mark.parametrize("name", ["itemknn", "mf", "ease"])
def test_collaborative_baselines_recommend_within_the_community(
    tiny_dataset: Callable[..., Dataset], name: str
) -> None:
    ds = blocks(tiny_dataset)
    model = BASELINES[name](ds.vocab.n_items, len(ds.vocab.scenes)).fit(
        ds.interactions, **({"factors": 4, "reg": 0.1, "iterations": 5} if name == "mf" else {})
    )
    cases = leave_last_out(ds).test_cases()
    scores = model.score(cases)
    group_a = np.array([ds.vocab.items[i].startswith("a") for i in range(ds.vocab.n_items)])
    for b in range(len(cases)):
        in_a = ds.vocab.users[cases.user[b]] < "u10"
        own, other = (group_a, ~group_a) if in_a else (~group_a, group_a)
        assert scores[b, own].mean() > scores[b, other].max(), (name, b)


def test_popularity_and_scene_popularity(tiny_dataset: Callable[..., Dataset]) -> None:
    ds = tiny_dataset(
        [
            ("u1", "a", 1, "home"),
            ("u2", "a", 1, "home"),
            ("u3", "a", 1, "home"),
            ("u1", "b", 2, "search"),
            ("u2", "b", 2, "search"),
        ]
    )
    cases = leave_last_out(ds).test_cases()
    pop = Popularity(2, len(ds.vocab.scenes)).fit(ds.interactions)
    assert pop.score(cases)[0].tolist() == [3.0, 2.0]
    scene_pop = ScenePopularity(2, len(ds.vocab.scenes)).fit(ds.interactions, prior=0.0)
    search = ds.vocab.scenes.get_loc("search")
    assert scene_pop.table[search].tolist() == [0.0, 1.0]  # in search only b was used
    backed_off = ScenePopularity(2, len(ds.vocab.scenes)).fit(ds.interactions, prior=1e6)
    assert backed_off.table[search] == pytest.approx([3 / 5, 2 / 5], abs=1e-4)  # a huge prior -> global share


def test_runner_tunes_on_valid_and_reports_both_protocols(small_synthetic_dataset: Dataset) -> None:
    config = Config(
        eval=EvalConfig(ks=(10,)),
        baselines=BaselineConfig(names=("popularity", "ease"), ease_lambdas=(1.0, 100.0)),
    )
    results = run_baselines(small_synthetic_dataset, config)
    assert set(results) == {"popularity", "ease"}
    ease = results["ease"]
    assert ease["params"]["l2"] in (1.0, 100.0)
    assert set(ease["slices"]) == {
        "scene:home",
        "scene:search",
        "scene:detail",
        "cold_items",
        "cold_items:among_new",
    }
    assert ease["test"]["ndcg@10"] > results["popularity"]["test"]["ndcg@10"]
    # ID-only models cannot score an item they never saw: near zero on the cold protocol
    assert ease["slices"]["cold_items"]["ndcg@10"] < 0.2 * ease["test"]["ndcg@10"]


def test_ease_is_skipped_above_the_size_limit(small_synthetic_dataset: Dataset) -> None:
    config = Config(baselines=BaselineConfig(names=("ease",), ease_max_items=10))
    results = run_baselines(small_synthetic_dataset, config)
    assert "skipped" in results["ease"] and "ease_max_items=10" in results["ease"]["skipped"]
    with pytest.raises(ValueError, match="unknown baseline 'nope'"):
        run_baselines(small_synthetic_dataset, Config(baselines=BaselineConfig(names=("nope",))))
