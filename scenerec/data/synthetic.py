"""A seeded synthetic dataset with a known, planted structure and the metrics of its oracle.

What is planted (all of it visible in `truth.json`):
- users hold interests over latent topics (a sparse Dirichlet mixture), follow one current
  interest for a while, switch, and pick up new interests over time (drift), so order matters;
- scenes shift interests (a per-scene topic bias), and change how focused, how popularity-driven and
  how series-following behaviour is (`home` browses popular items, `search` stays on the current
  interest, `detail` follows an item to its sequel);
- device and hour of day tilt interests a little (context);
- items have a long-tailed popularity, one topic each, and belong to short series (sequels), so a
  model reading the sequence can beat one that reads a set; their text is written from the topic's
  vocabulary with noise from other topics, so text predicts the topic but not perfectly;
- a purchase is more likely in the user's core topics and in `search`/`detail`;
- with probability `noise` the next item is uniformly random.

Every event is sampled from an exactly computed next-item distribution; the distribution of each
user's last event is the oracle's ranking on the test split (the Bayes ranking for someone who knows
the latent state), so later models can be judged against that ceiling.

That oracle sees the user's current interest, which no log shows. A second ceiling,
`oracle_observed_history`, is the Bayes ranking of someone who knows every planted parameter and the
user's interest mixture but must infer the current interest from the items the user actually chose
(an exact forward filter over the current-interest chain). It is still out of reach of any model
(the mixture and the planted parameters are hidden too), but it shows how much of the gap to the
first oracle no history can close.

Two more references, closer to what a model can reach:
- `oracle_inferred_mixture` knows the planted parameters but not the interest mixture either: it
  estimates the mixture from the topics of the items chosen so far (the Dirichlet posterior mean) and
  runs the same forward filter with that estimate. A plug-in Bayes ranking, not an exact ceiling, but
  it reads only what a log shows beyond the generator's fixed parameters.
- `oracle_new_items` measures the item cold-start protocol's ceiling: a seeded 10% of items play new
  items whose popularity is unknown (their weight is the catalogue's mean), with the latent state
  still known; each user's latest event on such an item is ranked against the whole catalogue. Next to
  the latent-state oracle it shows how much ranking a new item loses for want of its popularity alone.

Two samplers draw the events (`sampler`): `dense` builds each event's distribution over the whole
catalogue (`synthetic_dense`, the original generator: cost grows with users x items), `sparse`
samples the same distribution by topic, then item (`synthetic_sparse`: O(topics) per event; 10^5
users and items in about half a minute here, `benchmarks/publish_scale.py`). `auto` keeps dense
for worlds of at most `DENSE_LIMIT` user-item cells (every world the tests and recorded benchmarks
use, so their logs stay bit for bit what they were) and takes sparse above. The two random
sequences differ: the same seed gives another log under the other sampler, with the same planted
parameters. truth.json names the sampler when it is sparse.

`write_synthetic` streams: users are simulated a chunk at a time and each chunk's rows are appended
to `interactions.parquet` as row groups (a temporary file renamed at the end, inside a staging
directory that replaces the target only when everything is written), so memory follows the chunk;
the item table (a few hundred MB at 10^6 items) and the per-user reference ranks stay in memory.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from scenerec.config import EvalConfig
from scenerec.data import schema as c
from scenerec.data.io import atomic_directory, write_json, write_parquet, write_parquet_stream
from scenerec.data.synthetic_dense import items_dense, simulate_dense
from scenerec.data.synthetic_sparse import items_sparse, simulate_sparse
from scenerec.data.synthetic_vocab import DEVICES
from scenerec.data.synthetic_world import NEW_ITEM_FRACTION, Planted, References, SyntheticSpec, plant
from scenerec.errors import ConfigError
from scenerec.metrics import metrics_from_ranks

__all__ = ["DENSE_LIMIT", "SyntheticSpec", "generate", "sampler_for", "write_synthetic"]

_EPOCH = pd.Timestamp("2024-01-01", tz="UTC")
DENSE_LIMIT = 50_000_000  # users x items up to which `auto` keeps the dense sampler (~3 minutes)
Sampler = Literal["auto", "dense", "sparse"]


def sampler_for(spec: SyntheticSpec, sampler: str = "auto") -> str:
    """The sampler a world gets: `dense` or `sparse` (`auto`: dense up to DENSE_LIMIT cells)."""
    if sampler == "auto":
        return "dense" if spec.users * spec.items <= DENSE_LIMIT else "sparse"
    if sampler not in ("dense", "sparse"):
        raise ConfigError(f"synthetic sampler: expected auto, dense or sparse, got {sampler!r}")
    return sampler


@dataclass
class _World:
    """A world being generated: its parameters, items, and the log to come, chunk by chunk."""

    spec: SyntheticSpec
    sampler: str
    planted: Planted
    items: pd.DataFrame
    new_items: np.ndarray
    refs: References
    chunks: Iterator[dict[str, np.ndarray]]

    def frames(self) -> Iterator[pd.DataFrame]:
        """The log in the data contract's columns, one frame per chunk of users."""
        item_ids = self.items[c.ITEM_ID].to_numpy()
        for rows in self.chunks:
            yield _interaction_frame(rows, item_ids, self.planted.scene_names)


def _world(spec: SyntheticSpec, sampler: str, chunk_users: int | None) -> _World:
    spec.check()
    if chunk_users is not None and chunk_users < 1:
        raise ConfigError(f"synthetic chunk_users: expected at least 1, got {chunk_users}")
    which = sampler_for(spec, sampler)
    rng = np.random.default_rng(spec.seed)
    planted = plant(spec, rng)
    items = (items_dense if which == "dense" else items_sparse)(spec, planted, rng)
    new_items = np.random.default_rng([spec.seed, 1]).random(spec.items) < NEW_ITEM_FRACTION
    refs = References.empty(spec.users)
    simulate = simulate_dense if which == "dense" else simulate_sparse
    chunks = simulate(spec, planted, rng, new_items, refs, chunk_users)
    return _World(spec, which, planted, items, new_items, refs, chunks)


def generate(
    spec: SyntheticSpec,
    eval_config: EvalConfig | None = None,
    sampler: Sampler = "auto",
    chunk_users: int | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Interactions, items and the truth (spec, planted parameters, oracle metrics), all in memory.

    `chunk_users` overrides how many users are simulated together (it changes the random sequence;
    None: the sampler's default).
    """
    world = _world(spec, sampler, chunk_users)
    rows: dict[str, list[np.ndarray]] = {}
    for chunk in world.chunks:
        for key, value in chunk.items():
            rows.setdefault(key, []).append(value)
    interactions = _interaction_frame(
        {k: np.concatenate(v) for k, v in rows.items()},
        world.items[c.ITEM_ID].to_numpy(),
        world.planted.scene_names,
    )
    return interactions, world.items, _truth(world, eval_config or EvalConfig())


def write_synthetic(
    out: Path, spec: SyntheticSpec, sampler: Sampler = "auto", chunk_users: int | None = None
) -> dict[str, Any]:
    """Generate and write a dataset directory (atomically) with its truth.json, streaming the log
    to parquet a chunk of users at a time (the same tables as `generate`)."""
    world = _world(spec, sampler, chunk_users)
    with atomic_directory(out) as staging:
        write_parquet_stream(world.frames(), staging / "interactions.parquet")
        write_parquet(world.items, staging / "items.parquet")
        truth = _truth(world, EvalConfig())
        write_json(truth, staging / "truth.json")
    return truth


def _interaction_frame(rows: dict[str, np.ndarray], item_ids: np.ndarray, scenes: list[str]) -> pd.DataFrame:
    interactions = pd.DataFrame(rows)
    interactions[c.USER_ID] = np.char.add("u", interactions.pop("u").to_numpy().astype(str))
    interactions[c.ITEM_ID] = item_ids[interactions.pop("i").to_numpy()]
    interactions[c.TIMESTAMP] = _EPOCH + pd.to_timedelta(interactions.pop("t"), unit="s")
    interactions[c.SCENE] = np.array(scenes)[interactions.pop("s").to_numpy()]
    interactions[c.DEVICE] = np.array(DEVICES)[interactions.pop("d").to_numpy()]
    interactions[c.EVENT] = np.where(interactions.pop("buy").to_numpy(), "purchase", "click")
    interactions[c.LABEL] = 1.0
    return interactions[[c.USER_ID, c.ITEM_ID, c.TIMESTAMP, c.SCENE, c.EVENT, c.LABEL, c.DEVICE]]


def _truth(world: _World, eval_config: EvalConfig) -> dict[str, Any]:
    """truth.json: the spec, the planted parameters and every reference's metrics (after the log)."""
    spec, planted, ranks = world.spec, world.planted, world.refs
    oracle_scenes = ranks.scenes
    truth = {
        "generator": "scenerec.data.synthetic",
        "spec": dataclasses.asdict(spec),
        "planted": {
            "scenes": {
                name: {
                    "focus": float(planted.scene_focus[s]),
                    "popularity_exponent": float(planted.scene_pop_exponent[s]),
                    "series_probability": float(planted.scene_series[s]),
                    "conversion_shift": float(planted.scene_conversion[s]),
                }
                for s, name in enumerate(planted.scene_names)
            },
            "series_items": int((planted.successor >= 0).sum()),
        },
        "oracle": {
            "description": "ranking by the exact next-item probability given the generator's latent state",
            **_metrics_by_scene(ranks.oracle, oracle_scenes, planted.scene_names, eval_config),
        },
        "oracle_observed_history": {
            "description": "Bayes ranking given the planted parameters and interest mixture, with the "
            "current interest inferred from the observed history (forward filter)",
            **_metrics_by_scene(ranks.observed, oracle_scenes, planted.scene_names, eval_config),
        },
        "oracle_inferred_mixture": {
            "description": "plug-in Bayes ranking given the planted parameters only: the interest mixture "
            "estimated from the topics chosen so far (Dirichlet posterior mean), the current interest "
            "by the forward filter",
            **_metrics_by_scene(ranks.inferred, oracle_scenes, planted.scene_names, eval_config),
        },
        "oracle_new_items": {
            "description": "latent-state oracle on each user's latest event on a seeded "
            f"{NEW_ITEM_FRACTION:.0%} of items whose popularity it does not know (weight = the "
            "catalogue mean), ranked against the whole catalogue; `known_popularity`: the same "
            "events ranked knowing it",
            "items": int(world.new_items.sum()),
            "test": metrics_from_ranks(ranks.new_items[ranks.new_items >= 0], eval_config.ks),
            "known_popularity": metrics_from_ranks(ranks.new_known[ranks.new_known >= 0], eval_config.ks),
        },
    }
    if world.sampler == "sparse":
        truth["sampler"] = {
            "name": "sparse",
            "description": "events sampled by topic then item (synthetic_sparse): the same distribution "
            "as the dense sampler, another random sequence; references ranked exactly per topic",
        }
    return truth


def _metrics_by_scene(
    ranks: np.ndarray, scenes: np.ndarray, names: list[str], eval_config: EvalConfig
) -> dict[str, Any]:
    return {
        "test": metrics_from_ranks(ranks, eval_config.ks),
        "slices": {
            f"scene:{name}": metrics_from_ranks(ranks[scenes == s], eval_config.ks)
            for s, name in enumerate(names)
            if (scenes == s).any()
        },
    }
