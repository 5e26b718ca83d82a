"""The synthetic world's parameters, its planted structure and the pieces both samplers share.

`synthetic.py` documents what is planted; `synthetic_dense.py` and `synthetic_sparse.py` sample the
same next-item distribution two ways (a full [users, items] matrix per step, or by topic then item).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scenerec.data.synthetic_vocab import DEVICES, SCENE_NAMES, TOPICS
from scenerec.errors import ConfigError

HOUR_BUCKETS = 4
NEW_ITEM_FRACTION = 0.1  # items playing new ones for `oracle_new_items`


@dataclass(frozen=True)
class SyntheticSpec:
    """Parameters of the generator (all written to truth.json)."""

    users: int = 5000
    items: int = 2000
    scenes: int = 3
    seed: int = 7
    topics: int = 16
    mean_events: float = 30.0  # mean interactions per user
    min_events: int = 8
    max_events: int = 150
    zipf_exponent: float = 1.2  # long tail of item popularity
    noise: float = 0.05  # chance that the next item is uniformly random
    stickiness: float = 0.75  # chance the current interest persists at the next event
    drift: float = 0.03  # chance per event that a user picks up a new interest
    user_concentration: float = 0.3  # Dirichlet alpha of user interests (small: few topics each)
    scene_strength: float = 1.0  # std of the per-scene topic bias (log scale)
    context_strength: float = 0.4  # std of the device and hour-of-day topic biases
    max_series: int = 4  # longest run of sequels
    days: int = 90

    def check(self) -> None:
        if not 1 <= self.topics <= len(TOPICS):
            raise ConfigError(f"synthetic topics: expected 1..{len(TOPICS)}, got {self.topics}")
        if self.users < 1 or self.items < self.topics or self.scenes < 1:
            raise ConfigError("synthetic: expected users >= 1, items >= topics, scenes >= 1")
        if self.items <= self.max_events:
            raise ConfigError(f"synthetic: items ({self.items}) must exceed max_events ({self.max_events})")


@dataclass
class Planted:
    """The generator's hidden parameters."""

    item_topic: np.ndarray  # [N]
    popularity: np.ndarray  # [N] positive weights
    successor: np.ndarray  # [N] next item of the series or -1
    scene_names: list[str]
    scene_bias: np.ndarray  # [S, T]
    scene_focus: np.ndarray  # [S] weight of the current interest vs the user's whole mixture
    scene_pop_exponent: np.ndarray  # [S] how popularity-driven choices are
    scene_series: np.ndarray  # [S] chance to follow the previous item's sequel
    scene_conversion: np.ndarray  # [S] log-odds shift of a purchase
    device_bias: np.ndarray  # [devices, T]
    hour_bias: np.ndarray  # [hour buckets, T]


@dataclass
class References:
    """Per user, the rank of the last item under each reference ranking (filled by a sampler)."""

    scenes: np.ndarray  # scene of each user's last event
    oracle: np.ndarray
    observed: np.ndarray
    inferred: np.ndarray
    new_items: np.ndarray  # rank of the latest event on a "new" item, popularity unknown (-1: none)
    new_known: np.ndarray  # the same event ranked with its popularity known

    @classmethod
    def empty(cls, users: int) -> References:
        return cls(
            scenes=np.empty(users, dtype=np.int64),
            oracle=np.empty(users, dtype=np.int64),
            observed=np.empty(users, dtype=np.int64),
            inferred=np.empty(users, dtype=np.int64),
            new_items=np.full(users, -1, dtype=np.int64),
            new_known=np.full(users, -1, dtype=np.int64),
        )


def plant(spec: SyntheticSpec, rng: np.random.Generator) -> Planted:
    """Draw the hidden parameters: item topics, popularity, series and the scene and context biases."""
    n, t = spec.items, spec.topics
    item_topic = rng.integers(0, t, size=n)
    rank = rng.permutation(n)
    popularity = (1.0 / (rank + 1.0) ** spec.zipf_exponent) * rng.lognormal(0.0, 0.3, size=n)
    successor = np.full(n, -1, dtype=np.int64)
    for topic in range(t):  # sequels: short runs of items within a topic
        members = rng.permutation(np.flatnonzero(item_topic == topic))
        start = 0
        while start < len(members):
            length = int(rng.integers(1, spec.max_series + 1))
            run = members[start : start + length]
            successor[run[:-1]] = run[1:]
            start += length
    names = [SCENE_NAMES[s] if s < len(SCENE_NAMES) else f"scene{s}" for s in range(spec.scenes)]
    presets = {
        "home": (0.4, 1.0, 0.05, -0.5),
        "search": (0.9, 0.4, 0.02, 0.5),
        "detail": (0.7, 0.6, 0.5, 0.3),
    }
    params = np.array(
        [
            presets.get(
                name,
                (rng.uniform(0.3, 0.9), rng.uniform(0.3, 1.0), rng.uniform(0.0, 0.4), rng.normal(0.0, 0.5)),
            )
            for name in names
        ]
    )
    return Planted(
        item_topic=item_topic,
        popularity=popularity,
        successor=successor,
        scene_names=names,
        scene_bias=rng.normal(0.0, spec.scene_strength, size=(spec.scenes, t)),
        scene_focus=params[:, 0],
        scene_pop_exponent=params[:, 1],
        scene_series=params[:, 2],
        scene_conversion=params[:, 3],
        device_bias=rng.normal(0.0, spec.context_strength, size=(len(DEVICES), t)),
        hour_bias=rng.normal(0.0, spec.context_strength, size=(HOUR_BUCKETS, t)),
    )


def user_state(
    spec: SyntheticSpec, rng: np.random.Generator, b: int, scene_weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A chunk of `b` new users: interest mixture, scene preference, main device, clock, current interest."""
    interest = rng.dirichlet(np.full(spec.topics, spec.user_concentration), size=b)
    scene_pref = rng.dirichlet(np.full(spec.scenes, 2.0), size=b) * scene_weights
    scene_pref /= scene_pref.sum(axis=1, keepdims=True)
    main_device = rng.choice(len(DEVICES), size=b, p=[0.6, 0.3, 0.1])
    clock = rng.uniform(0, spec.days * 86400 * 2 / 3, size=b)
    current = sample_rows(interest, rng)
    return interest, scene_pref, main_device, clock, current


def event_counts(spec: SyntheticSpec, rng: np.random.Generator) -> np.ndarray:
    """Every user's number of events (a shifted negative binomial, capped)."""
    extra = rng.negative_binomial(
        2, 2.0 / (2.0 + max(spec.mean_events - spec.min_events, 1e-9)), size=spec.users
    )
    return np.minimum(spec.min_events + extra, spec.max_events)


def scene_weights(spec: SyntheticSpec) -> np.ndarray:
    s = spec.scenes
    return np.array([0.5, 0.3, 0.2] + [0.15] * max(0, s - 3))[:s]


def topic_choice(
    planted: Planted,
    interest: np.ndarray,
    scene: np.ndarray,
    device: np.ndarray,
    hour: np.ndarray,
    topic_mass: np.ndarray,
) -> np.ndarray:
    """[B, T, T]: the distribution of the next item's topic for each possible current interest (axis 1).

    `topic_mass` [B, T] is the unseen popularity mass of each topic: topics with none left get no mass.
    """
    t = interest.shape[1]
    focus = planted.scene_focus[scene][:, None, None]
    mix = focus * np.eye(t)[None] + (1 - focus) * interest[:, None, :]  # [B, T cur, T]
    logits = (
        np.log(mix + 1e-12)
        + planted.scene_bias[scene][:, None]
        + planted.device_bias[device][:, None]
        + planted.hour_bias[hour][:, None]
    )
    q = np.exp(logits - logits.max(axis=2, keepdims=True)) * (topic_mass > 0)[:, None, :]
    return q / q.sum(axis=2, keepdims=True)


def advance_users(
    spec: SyntheticSpec,
    rng: np.random.Generator,
    step: int,
    active: np.ndarray,
    state: tuple[np.ndarray, ...],
    topic_counts: np.ndarray,
    mean_gap: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One event step of the `active` users, shared by both samplers (the same draws, in the same
    order): interests drift and may switch, beliefs follow, the clock moves; returns the inferred
    mixture, the scene, the device and the hour bucket of each active user's next event.

    `state` = (interest, current, belief, belief_inferred, scene_pref, main_device, clock), changed
    in place."""
    interest, current, belief, belief_inferred, scene_pref, main_device, clock = state
    if step > 0:  # interests drift, and the current interest may switch
        drifting = active[rng.random(len(active)) < spec.drift]
        if len(drifting):
            interest[drifting] *= 0.7
            interest[drifting, rng.integers(0, spec.topics, size=len(drifting))] += 0.3
        switching = active[rng.random(len(active)) > spec.stickiness]
        current[switching] = sample_rows(interest[switching], rng)
        belief[active] = spec.stickiness * belief[active] + (1 - spec.stickiness) * interest[active]
    # the inferred-mixture reference: Dirichlet posterior mean of the mixture from the topic counts
    mixture = topic_counts[active] + spec.user_concentration
    mixture /= mixture.sum(axis=1, keepdims=True)
    if step > 0:
        belief_inferred[active] = spec.stickiness * belief_inferred[active] + (1 - spec.stickiness) * mixture
    scene = sample_rows(scene_pref[active], rng)
    device = np.where(
        rng.random(len(active)) < 0.85,
        main_device[active],
        rng.integers(0, len(DEVICES), size=len(active)),
    )
    clock[active] += 60 + rng.exponential(mean_gap, size=len(active))
    hour = ((clock[active] // 3600) % 24 // (24 // HOUR_BUCKETS)).astype(int)
    return mixture, scene, device, hour


def sample_rows(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One index per row of a [B, K] probability matrix (inverse CDF)."""
    cdf = np.cumsum(probs, axis=1)
    u = rng.random(len(probs)) * cdf[:, -1]
    return np.minimum((cdf < u[:, None]).sum(axis=1), probs.shape[1] - 1)
