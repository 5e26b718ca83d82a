"""The synthetic generator at scale: small worlds unchanged, the streamed file equal to the in-memory
log, and the sparse sampler drawing and ranking exactly what the dense one computes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from scenerec.data.synthetic import SyntheticSpec, generate, sampler_for, write_synthetic
from scenerec.data.synthetic_dense import _chosen_likelihood as dense_likelihood
from scenerec.data.synthetic_dense import _next_item_probs
from scenerec.data.synthetic_index import Event, TopicIndex, rank_chosen
from scenerec.data.synthetic_sparse import (
    _chosen_likelihood,
    _draw,
    _sequel,
    _TopicChoice,
    _unseen_mass,
)
from scenerec.data.synthetic_world import plant, topic_choice

SPEC = SyntheticSpec(users=200, items=150, scenes=3, seed=5, mean_events=15, max_events=40)
# Hashes of (interactions, items, truth.json) for these specs, taken with the generator as it was
# before the sparse sampler and the streamed writer existed: small worlds must stay bit for bit.
FROZEN = [
    (SPEC, ("0facc997d4ce50f3", "24ab7f1d9fd311c2", "122af94a6597c6e4")),
    (
        SyntheticSpec(users=300, items=200, scenes=3, seed=5, mean_events=25, max_events=80),
        ("da39689eb9dba34f", "d4d2a4e588381db7", "1a750ace2b081dae"),
    ),
]


def _frame_hash(frame: pd.DataFrame) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([(str(k), str(v)) for k, v in frame.dtypes.items()]).encode())
    h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]


def _truth_hash(truth: dict) -> str:
    return hashlib.sha256(json.dumps(truth, sort_keys=True).encode()).hexdigest()[:16]


@pytest.mark.parametrize(("spec", "expected"), FROZEN)
def test_small_worlds_are_what_they_were(tmp_path: Path, spec: SyntheticSpec, expected: tuple) -> None:
    interactions, items, truth = generate(spec)
    assert (_frame_hash(interactions), _frame_hash(items), _truth_hash(truth)) == expected
    write_synthetic(tmp_path / "w", spec)
    written = (
        _frame_hash(pd.read_parquet(tmp_path / "w" / "interactions.parquet")),
        _frame_hash(pd.read_parquet(tmp_path / "w" / "items.parquet")),
        _truth_hash(json.loads((tmp_path / "w" / "truth.json").read_text())),
    )
    assert written == expected
    interactions.to_parquet(tmp_path / "old.parquet", index=False)  # one chunk: the very same bytes
    assert (tmp_path / "old.parquet").read_bytes() == (tmp_path / "w" / "interactions.parquet").read_bytes()


def test_auto_keeps_dense_for_every_recorded_world_and_goes_sparse_above() -> None:
    assert sampler_for(SyntheticSpec()) == "dense"
    assert sampler_for(SyntheticSpec(users=4000, items=10000)) == "dense"
    assert sampler_for(SyntheticSpec(users=100_000, items=100_000)) == "sparse"
    assert sampler_for(SPEC, "sparse") == "sparse"


@pytest.mark.parametrize("sampler", ["dense", "sparse"])
def test_streamed_file_equals_the_in_memory_log(tmp_path: Path, sampler: str) -> None:
    """Many tiny chunks, several row groups: the file holds exactly `generate`'s tables."""
    interactions, items, truth = generate(SPEC, sampler=sampler, chunk_users=16)  # type: ignore[arg-type]
    written = write_synthetic(tmp_path / "w", SPEC, sampler=sampler, chunk_users=16)  # type: ignore[arg-type]
    back = pd.read_parquet(tmp_path / "w" / "interactions.parquet")
    pd.testing.assert_frame_equal(back, interactions)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "w" / "items.parquet"), items)
    assert written == truth == json.loads((tmp_path / "w" / "truth.json").read_text())
    assert ("sampler" in truth) == (sampler == "sparse")
    assert not [p.name for p in tmp_path.iterdir() if p.name != "w"]  # no temporary left behind


def test_streamed_writer_writes_row_groups_and_nothing_on_failure(tmp_path: Path) -> None:
    from scenerec.data.io import write_parquet_stream

    frames = [pd.DataFrame({"a": np.arange(k * 10, k * 10 + 10), "b": [f"x{k}"] * 10}) for k in range(5)]
    assert write_parquet_stream(iter(frames), tmp_path / "t.parquet", min_rows=20) == 50
    assert pq.ParquetFile(tmp_path / "t.parquet").num_row_groups == 3
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "t.parquet"), pd.concat(frames, ignore_index=True)
    )

    def failing():
        yield frames[0]
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_parquet_stream(failing(), tmp_path / "t.parquet", min_rows=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.parquet"]  # the old file, intact
    assert len(pd.read_parquet(tmp_path / "t.parquet")) == 50


def test_sparse_world_keeps_the_planted_structure() -> None:
    spec = SyntheticSpec(users=800, items=300, scenes=3, seed=11, mean_events=20, max_events=60)
    interactions, items, truth = generate(spec, sampler="sparse")
    assert not interactions.duplicated([c_ for c_ in ("user_id", "item_id")]).any()
    assert (
        interactions.groupby("user_id", observed=True)["event_timestamp"]
        .apply(lambda t: t.is_monotonic_increasing)
        .all()
    )
    assert items["item_id"].is_unique and set(interactions["item_id"]) <= set(items["item_id"])
    oracle, observed = truth["oracle"]["test"], truth["oracle_observed_history"]["test"]
    inferred = truth["oracle_inferred_mixture"]["test"]
    assert 0.3 * oracle["ndcg@10"] < inferred["ndcg@10"] < observed["ndcg@10"] < oracle["ndcg@10"]
    dense = generate(spec, sampler="dense")[2]["oracle"]["test"]["ndcg@10"]
    assert abs(oracle["ndcg@10"] - dense) < 0.06  # the same world's ceiling, another random draw


def _state(weights_unknown: bool, seed: int = 3):
    """A batch of mid-log user states on a small catalogue, in both samplers' representations."""
    spec = SyntheticSpec(users=10, items=180, scenes=3, seed=seed, topics=8, max_events=60)
    rng = np.random.default_rng(seed)
    planted = plant(spec, rng)
    pop_pow = planted.popularity[None, :] ** planted.scene_pop_exponent[:, None]
    if weights_unknown:  # a fifth of the items share one weight per scene: ties
        fake = rng.random(spec.items) < 0.2
        pop_pow = np.where(fake[None, :], pop_pow.mean(axis=1, keepdims=True), pop_pow)
    b, step = 400, 40
    seen_ids = np.stack([rng.choice(spec.items, size=step, replace=False) for _ in range(b)])
    # most users just saw an item with a sequel, some of them saw the sequel too
    prev = np.where(rng.random(b) < 0.8, seen_ids[:, -1], -1)
    scene = rng.integers(0, spec.scenes, size=b)
    seen = np.zeros((b, spec.items), dtype=bool)
    seen[np.arange(b)[:, None], seen_ids] = True
    onehot = np.eye(spec.topics)[planted.item_topic]
    dense_mass = np.where(seen, 0.0, pop_pow[scene]) @ onehot
    q = rng.dirichlet(np.full(spec.topics, 0.5), size=b) * (dense_mass > 0)
    q /= q.sum(axis=1, keepdims=True)
    index = TopicIndex(planted, pop_pow)
    seen_mass = np.zeros((b, spec.topics))
    np.add.at(
        seen_mass, (np.arange(b)[:, None], planted.item_topic[seen_ids]), pop_pow[scene[:, None], seen_ids]
    )
    per_topic_seen = np.zeros((b, spec.topics))
    np.add.at(per_topic_seen, (np.arange(b)[:, None], planted.item_topic[seen_ids]), 1)
    mass = _unseen_mass(index, scene, seen_mass, per_topic_seen)
    return spec, planted, pop_pow, onehot, rng, (seen_ids, seen, prev, scene, q, index, mass, dense_mass)


@pytest.mark.parametrize("ties", [False, True])
def test_sparse_rank_is_the_denserank_chosen(ties: bool) -> None:
    spec, planted, pop_pow, onehot, rng, state = _state(ties)
    seen_ids, seen, prev, scene, q, index, mass, dense_mass = state
    np.testing.assert_allclose(mass, dense_mass, rtol=1e-9, atol=1e-12)
    probs = _next_item_probs(spec, planted, pop_pow, onehot, q, scene, seen, prev)
    chosen = np.array([rng.choice(spec.items, p=p / p.sum()) for p in probs])
    dense = (probs >= probs[np.arange(len(q)), chosen][:, None]).sum(axis=1) - 1
    succ, available, series = _sequel(planted, scene, seen_ids, prev)
    assert available.any() and (succ >= 0).sum() > available.sum()  # both cases of the sequel occur
    sparse = rank_chosen(
        spec, index, q, mass, Event(scene, seen_ids, succ, available, series, chosen), spec.items - 40
    )
    np.testing.assert_array_equal(sparse, dense)
    # the sequel itself, and an item tied with many others, as the chosen one
    for pick in (np.where(available, succ, chosen), np.argmax(np.where(seen, -1.0, pop_pow[scene]), axis=1)):
        dense = (probs >= probs[np.arange(len(q)), pick][:, None]).sum(axis=1) - 1
        event = Event(scene, seen_ids, succ, available, series, pick)
        sparse = rank_chosen(spec, index, q, mass, event, spec.items - 40)
        np.testing.assert_array_equal(sparse, dense)


def test_sparse_topic_choice_and_likelihood_are_the_dense_ones() -> None:
    spec, planted, pop_pow, onehot, rng, state = _state(False)
    seen_ids, seen, prev, scene, q, index, mass, _ = state
    b = len(q)
    interest = rng.dirichlet(np.full(spec.topics, 0.3), size=b)
    device, hour = rng.integers(0, 3, size=b), rng.integers(0, 4, size=b)
    per_current = topic_choice(planted, interest, scene, device, hour, mass)  # [B, T, T]
    closed = _TopicChoice(planted, interest, scene, device, hour, mass)
    current = rng.integers(0, spec.topics, size=b)
    np.testing.assert_allclose(
        closed.given(current), per_current[np.arange(b), current], rtol=1e-9, atol=1e-15
    )
    belief = rng.dirichlet(np.ones(spec.topics), size=b)
    rows = np.arange(0, b, 3)
    np.testing.assert_allclose(
        closed.averaged(rows, belief[rows]),
        np.einsum("bk,bkt->bt", belief[rows], per_current[rows]),
        rtol=1e-9,
        atol=1e-15,
    )
    chosen = np.array([rng.choice(np.flatnonzero(~row)) for row in seen])
    dense = dense_likelihood(spec, planted, pop_pow, onehot, per_current, chosen, scene, seen, prev)
    succ, _, series = _sequel(planted, scene, seen_ids, prev)
    follow = series * (succ == chosen)
    sparse = _chosen_likelihood(spec, index, mass, closed, chosen, scene, follow, series, 40)
    np.testing.assert_allclose(sparse, dense, rtol=1e-9)


def test_sparse_draws_follow_the_dense_distribution() -> None:
    """One user state repeated: the draws' frequencies match the exact distribution (total variation)."""
    spec, planted, pop_pow, onehot, rng, state = _state(False)
    seen_ids, seen, prev, scene, q, index, _, _ = state
    user = int(np.flatnonzero(_sequel(planted, scene, seen_ids, prev)[1])[0])  # one with a sequel open
    m = 200_000
    rep = np.full(m, user)
    probs = _next_item_probs(
        spec, planted, pop_pow, onehot, q[[user]], scene[[user]], seen[[user]], prev[[user]]
    )[0]
    succ, _, series = _sequel(planted, scene[rep], seen_ids[rep], prev[rep])
    drawn = _draw(spec, index, rng, q[rep], scene[rep], seen_ids[rep], succ, series)
    frequencies = np.bincount(drawn, minlength=spec.items) / m
    assert frequencies[seen[user]].sum() == 0
    assert 0.5 * np.abs(frequencies - probs).sum() < 0.02
