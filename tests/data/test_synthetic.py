"""The synthetic generator: seeded, valid, and carrying the structure it claims to plant."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scenerec.data import schema as c
from scenerec.data.dataset import Dataset
from scenerec.data.split import leave_last_out
from scenerec.data.synthetic import SyntheticSpec, generate
from scenerec.data.synthetic_vocab import TOPICS
from scenerec.data.validate import validate_dataset
from scenerec.errors import ConfigError

SPEC = SyntheticSpec(users=200, items=150, scenes=3, seed=5, mean_events=15, max_events=40)


def test_same_seed_same_data_other_seed_other_data() -> None:
    a, items_a, truth_a = generate(SPEC)
    b, items_b, truth_b = generate(SPEC)
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(items_a, items_b)
    assert truth_a == truth_b
    c_, _, _ = generate(SyntheticSpec(**{**SPEC.__dict__, "seed": 6}))
    assert not a[c.ITEM_ID].equals(c_[c.ITEM_ID])


def test_written_dataset_is_valid_and_truth_has_the_oracle(small_synthetic: Path) -> None:
    result = validate_dataset(small_synthetic)
    assert result.problems == []
    truth = json.loads((small_synthetic / "truth.json").read_text())
    oracle = truth["oracle"]["test"]
    assert 0.0 < oracle["ndcg@10"] <= oracle["hr@10"] <= oracle["hr@20"] <= 1.0
    assert set(truth["oracle"]["slices"]) == {"scene:home", "scene:search", "scene:detail"}
    assert truth["spec"]["users"] == 600


def test_every_user_is_a_test_case_with_no_repeats(small_synthetic_dataset: Dataset) -> None:
    log = small_synthetic_dataset.interactions
    assert not log.duplicated([c.USER_ID, c.ITEM_ID]).any()
    assert (
        log.groupby(c.USER_ID, observed=True)[c.TIMESTAMP]
        .apply(lambda t: t.is_monotonic_increasing and t.is_unique)
        .all()
    )
    assert len(leave_last_out(small_synthetic_dataset).test) == 600


def test_item_text_is_written_from_the_topic_vocabulary() -> None:
    _, items, _ = generate(SPEC)
    vocab = {name: set(words) for name, (_, words) in TOPICS.items()}
    categories = {name: cat for name, (cat, _) in TOPICS.items()}
    matched = 0
    for text, category in zip(items[c.TEXT], items[c.CATEGORY], strict=True):
        words = text.split()
        best = max(vocab, key=lambda topic: sum(w in vocab[topic] for w in words))
        matched += categories[best] == category
    assert matched / len(items) > 0.9  # the dominant topic's words identify the category


def test_scenes_plant_different_behaviour() -> None:
    interactions, _, truth = generate(
        SyntheticSpec(users=800, items=400, seed=2, mean_events=20, max_events=60)
    )
    planted = truth["planted"]["scenes"]
    assert planted["detail"]["series_probability"] > planted["home"]["series_probability"]
    # scene-dependent interests: item distributions differ between scenes
    by_scene = pd.crosstab(interactions[c.SCENE], interactions[c.ITEM_ID], normalize="index")
    overlap = np.minimum(by_scene.loc["home"], by_scene.loc["search"]).sum()
    assert overlap < 0.8
    assert set(interactions[c.EVENT]) == {"click", "purchase"}
    assert set(interactions[c.DEVICE]) == {"mobile", "desktop", "tablet"}
    counts = interactions[c.ITEM_ID].value_counts()
    assert counts.iloc[: len(counts) // 10].sum() > 0.3 * len(interactions)  # a long tail: top 10% >30%


def test_bad_spec_is_rejected() -> None:
    with pytest.raises(ConfigError, match="topics"):
        generate(SyntheticSpec(topics=99))
    with pytest.raises(ConfigError, match="max_events"):
        generate(SyntheticSpec(items=50, max_events=60))


def test_observed_history_oracle_sits_below_the_latent_state_oracle() -> None:
    """The filter's ceiling is below the oracle that sees the current interest; when the current
    interest never switches and every scene follows it closely, the history reveals it and the two meet."""
    spec = SyntheticSpec(users=800, items=300, scenes=3, seed=11, mean_events=20, max_events=60)
    truth = generate(spec)[2]
    oracle, observed = truth["oracle"]["test"], truth["oracle_observed_history"]["test"]
    assert 0.3 * oracle["ndcg@10"] < observed["ndcg@10"] < oracle["ndcg@10"]
    sticky = SyntheticSpec(**{**spec.__dict__, "stickiness": 1.0, "drift": 0.0, "user_concentration": 0.05})
    truth = generate(sticky)[2]
    oracle, observed = truth["oracle"]["test"], truth["oracle_observed_history"]["test"]
    assert observed["ndcg@10"] > 0.95 * oracle["ndcg@10"]


def test_references_that_read_only_the_log() -> None:
    """Estimating the interest mixture from the log costs ranking quality against knowing it, and
    not knowing a new item's popularity costs the oracle on a long-tailed catalogue."""
    spec = SyntheticSpec(users=800, items=300, scenes=3, seed=11, mean_events=20, max_events=60)
    truth = generate(spec)[2]
    observed, inferred = truth["oracle_observed_history"], truth["oracle_inferred_mixture"]
    assert 0.3 * observed["test"]["ndcg@10"] < inferred["test"]["ndcg@10"] < observed["test"]["ndcg@10"]
    assert set(inferred["slices"]) == set(observed["slices"]) == set(truth["oracle"]["slices"])
    new = truth["oracle_new_items"]
    assert 0 < new["items"] < spec.items
    assert 0 < new["test"]["ndcg@10"] < 0.9 * new["known_popularity"]["ndcg@10"]
