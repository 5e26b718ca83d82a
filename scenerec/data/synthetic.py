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
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from scenerec.config import EvalConfig
from scenerec.data import schema as c
from scenerec.data.io import atomic_directory, write_json, write_parquet
from scenerec.data.synthetic_vocab import DEVICES, GENERIC_WORDS, SCENE_NAMES, TITLE_PATTERNS, TOPICS
from scenerec.errors import ConfigError
from scenerec.metrics import metrics_from_ranks

_EPOCH = pd.Timestamp("2024-01-01", tz="UTC")
_HOUR_BUCKETS = 4
_NEW_ITEM_FRACTION = 0.1  # items playing new ones for `oracle_new_items`


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
class _Planted:
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


def generate(
    spec: SyntheticSpec, eval_config: EvalConfig | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Interactions, items and the truth (spec, planted parameters, oracle metrics)."""
    spec.check()
    eval_config = eval_config or EvalConfig()
    rng = np.random.default_rng(spec.seed)
    planted = _plant(spec, rng)
    items = _items(spec, planted, rng)
    new_items = np.random.default_rng([spec.seed, 1]).random(spec.items) < _NEW_ITEM_FRACTION
    ranks = _simulate(spec, planted, rng, new_items)
    rows, oracle_scenes = ranks.rows, ranks.scenes
    interactions = pd.DataFrame(rows)
    interactions[c.USER_ID] = np.char.add("u", interactions.pop("u").to_numpy().astype(str))
    interactions[c.ITEM_ID] = items[c.ITEM_ID].to_numpy()[interactions.pop("i").to_numpy()]
    interactions[c.TIMESTAMP] = _EPOCH + pd.to_timedelta(interactions.pop("t"), unit="s")
    interactions[c.SCENE] = np.array(planted.scene_names)[interactions.pop("s").to_numpy()]
    interactions[c.DEVICE] = np.array(DEVICES)[interactions.pop("d").to_numpy()]
    interactions[c.EVENT] = np.where(interactions.pop("buy").to_numpy(), "purchase", "click")
    interactions[c.LABEL] = 1.0
    interactions = interactions[[c.USER_ID, c.ITEM_ID, c.TIMESTAMP, c.SCENE, c.EVENT, c.LABEL, c.DEVICE]]
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
            f"{_NEW_ITEM_FRACTION:.0%} of items whose popularity it does not know (weight = the "
            "catalogue mean), ranked against the whole catalogue; `known_popularity`: the same "
            "events ranked knowing it",
            "items": int(new_items.sum()),
            "test": metrics_from_ranks(ranks.new_items[ranks.new_items >= 0], eval_config.ks),
            "known_popularity": metrics_from_ranks(ranks.new_known[ranks.new_known >= 0], eval_config.ks),
        },
    }
    return interactions, items, truth


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


@dataclass
class _Simulated:
    """The log's rows and, per user, the rank of the last item under each reference ranking."""

    rows: dict[str, np.ndarray]
    scenes: np.ndarray  # scene of each user's last event
    oracle: np.ndarray
    observed: np.ndarray
    inferred: np.ndarray
    new_items: np.ndarray  # rank of the latest event on a "new" item, popularity unknown (-1: none)
    new_known: np.ndarray  # the same event ranked with its popularity known


def write_synthetic(out: Path, spec: SyntheticSpec) -> dict[str, Any]:
    """Generate and write a dataset directory (atomically) with its truth.json."""
    interactions, items, truth = generate(spec)
    with atomic_directory(out) as staging:
        write_parquet(interactions, staging / "interactions.parquet")
        write_parquet(items, staging / "items.parquet")
        write_json(truth, staging / "truth.json")
    return truth


def _plant(spec: SyntheticSpec, rng: np.random.Generator) -> _Planted:
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
    return _Planted(
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
        hour_bias=rng.normal(0.0, spec.context_strength, size=(_HOUR_BUCKETS, t)),
    )


def _items(spec: SyntheticSpec, planted: _Planted, rng: np.random.Generator) -> pd.DataFrame:
    topic_names = list(TOPICS)[: spec.topics]
    all_words = [TOPICS[name][1] for name in topic_names]
    titles, texts = [], []
    for topic in planted.item_topic:
        own = all_words[topic]
        words = []
        for _ in range(int(rng.integers(8, 15))):
            roll = rng.random()
            if roll < 0.6:
                words.append(own[rng.integers(len(own))])
            elif roll < 0.85:
                words.append(GENERIC_WORDS[rng.integers(len(GENERIC_WORDS))])
            else:
                other = all_words[rng.integers(len(all_words))]
                words.append(other[rng.integers(len(other))])
        pattern = TITLE_PATTERNS[rng.integers(len(TITLE_PATTERNS))]
        a, b = rng.choice(own, size=2, replace=False)
        titles.append(
            pattern.format(
                a=a.title(), b=b.title(), generic=GENERIC_WORDS[rng.integers(len(GENERIC_WORDS))].title()
            )
        )
        texts.append(" ".join(words))
    width = len(str(spec.items - 1))
    return pd.DataFrame(
        {
            c.ITEM_ID: [f"i{k:0{width}d}" for k in range(spec.items)],
            c.TITLE: titles,
            c.TEXT: texts,
            c.CATEGORY: [TOPICS[topic_names[topic]][0] for topic in planted.item_topic],
        }
    )


def _simulate(
    spec: SyntheticSpec, planted: _Planted, rng: np.random.Generator, new_items: np.ndarray
) -> _Simulated:
    """Sample every user's log, step by step for a chunk of users at a time, and rank each user's
    last item under every reference (see the module docstring). The references consume no random
    numbers: the log is the same with or without them.
    """
    n, t, s = spec.items, spec.topics, spec.scenes
    topic_onehot = np.eye(t)[planted.item_topic]  # [N, T]
    pop_pow = planted.popularity[None, :] ** planted.scene_pop_exponent[:, None]  # [S, N]
    extra = rng.negative_binomial(
        2, 2.0 / (2.0 + max(spec.mean_events - spec.min_events, 1e-9)), size=spec.users
    )
    n_events = np.minimum(spec.min_events + extra, spec.max_events)
    scene_weights = np.array([0.5, 0.3, 0.2] + [0.15] * max(0, s - 3))[:s]
    mean_gap = spec.days * 86400 / 3 / spec.mean_events
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("u", "i", "t", "s", "d", "buy")}
    oracle_ranks = np.empty(spec.users, dtype=np.int64)
    observed_ranks = np.empty(spec.users, dtype=np.int64)
    inferred_ranks = np.empty(spec.users, dtype=np.int64)
    new_ranks = np.full(spec.users, -1, dtype=np.int64)
    new_known_ranks = np.full(spec.users, -1, dtype=np.int64)
    oracle_scenes = np.empty(spec.users, dtype=np.int64)
    # new items' weight is the catalogue's mean weight in that scene: their popularity is unknown
    pop_unknown = np.where(new_items[None, :], pop_pow.mean(axis=1, keepdims=True), pop_pow)
    chunk = max(64, 4_000_000 // n)
    for lo in tqdm(range(0, spec.users, chunk), desc="synthesising users", unit="chunk", disable=None):
        users = np.arange(lo, min(lo + chunk, spec.users))
        b = len(users)
        interest = rng.dirichlet(np.full(t, spec.user_concentration), size=b)
        scene_pref = rng.dirichlet(np.full(s, 2.0), size=b) * scene_weights
        scene_pref /= scene_pref.sum(axis=1, keepdims=True)
        main_device = rng.choice(len(DEVICES), size=b, p=[0.6, 0.3, 0.1])
        clock = rng.uniform(0, spec.days * 86400 * 2 / 3, size=b)
        current = _sample_rows(interest, rng)
        belief = interest.copy()  # observed-history posterior over the current interest [b, T]
        topic_counts = np.zeros((b, t))  # topics chosen so far (the inferred-mixture reference)
        belief_inferred = np.full((b, t), 1.0 / t)
        seen = np.zeros((b, n), dtype=bool)
        prev = np.full(b, -1)
        for step in range(int(n_events[users].max())):
            active = np.flatnonzero(step < n_events[users])
            if step > 0:  # interests drift, and the current interest may switch
                drifting = active[rng.random(len(active)) < spec.drift]
                if len(drifting):
                    interest[drifting] *= 0.7
                    interest[drifting, rng.integers(0, t, size=len(drifting))] += 0.3
                switching = active[rng.random(len(active)) > spec.stickiness]
                current[switching] = _sample_rows(interest[switching], rng)
                belief[active] = spec.stickiness * belief[active] + (1 - spec.stickiness) * interest[active]
            # the inferred-mixture reference: Dirichlet posterior mean of the mixture from the topic counts
            mixture = topic_counts[active] + spec.user_concentration
            mixture /= mixture.sum(axis=1, keepdims=True)
            if step > 0:
                belief_inferred[active] = (
                    spec.stickiness * belief_inferred[active] + (1 - spec.stickiness) * mixture
                )
            scene = _sample_rows(scene_pref[active], rng)
            device = np.where(
                rng.random(len(active)) < 0.85,
                main_device[active],
                rng.integers(0, len(DEVICES), size=len(active)),
            )
            clock[active] += 60 + rng.exponential(mean_gap, size=len(active))
            hour = ((clock[active] // 3600) % 24 // (24 // _HOUR_BUCKETS)).astype(int)
            per_current = _topic_choice(  # [B, T cur, T]
                planted, pop_pow, topic_onehot, interest[active], scene, device, hour, seen[active]
            )
            per_current_inferred = _topic_choice(
                planted, pop_pow, topic_onehot, mixture, scene, device, hour, seen[active]
            )
            after = (scene, seen[active], prev[active])  # what the item choice depends on besides q
            rows_b = np.arange(len(active))
            probs = _next_item_probs(
                spec, planted, pop_pow, topic_onehot, per_current[rows_b, current[active]], *after
            )
            chosen = _sample_rows(probs, rng)
            last = np.flatnonzero(step == n_events[users[active]] - 1)
            if len(last):
                p_last, p_chosen = probs[last], probs[last, chosen[last]]
                oracle_ranks[users[active[last]]] = (p_last >= p_chosen[:, None]).sum(axis=1) - 1
                oracle_scenes[users[active[last]]] = scene[last]
                # the observed-history oracle: the topic choice averaged over the posterior
                q_obs = np.einsum("bk,bkt->bt", belief[active[last]], per_current[last])
                sub = tuple(x[last] for x in after)
                p_obs = _next_item_probs(spec, planted, pop_pow, topic_onehot, q_obs, *sub)
                p_target = p_obs[np.arange(len(last)), chosen[last]]
                observed_ranks[users[active[last]]] = (p_obs >= p_target[:, None]).sum(axis=1) - 1
                q_inf = np.einsum("bk,bkt->bt", belief_inferred[active[last]], per_current_inferred[last])
                p_inf = _next_item_probs(spec, planted, pop_pow, topic_onehot, q_inf, *sub)
                p_target = p_inf[np.arange(len(last)), chosen[last]]
                inferred_ranks[users[active[last]]] = (p_inf >= p_target[:, None]).sum(axis=1) - 1
            fresh = np.flatnonzero(new_items[chosen])  # latest event on a "new" item so far
            if len(fresh):
                q_new = per_current[fresh, current[active[fresh]]]
                sub = tuple(x[fresh] for x in after)
                for ranks_out, weights in ((new_ranks, pop_unknown), (new_known_ranks, pop_pow)):
                    p_new = _next_item_probs(spec, planted, weights, topic_onehot, q_new, *sub)
                    p_target = p_new[np.arange(len(fresh)), chosen[fresh]]
                    ranks_out[users[active[fresh]]] = (p_new >= p_target[:, None]).sum(axis=1) - 1
            # filter: the chosen item's likelihood under each possible current interest
            likelihood = _chosen_likelihood(spec, planted, pop_pow, topic_onehot, per_current, chosen, *after)
            posterior = belief[active] * likelihood
            belief[active] = posterior / posterior.sum(axis=1, keepdims=True)
            likelihood = _chosen_likelihood(
                spec, planted, pop_pow, topic_onehot, per_current_inferred, chosen, *after
            )
            posterior = belief_inferred[active] * likelihood
            belief_inferred[active] = posterior / posterior.sum(axis=1, keepdims=True)
            topic_counts[active, planted.item_topic[chosen]] += 1
            affinity = np.log(interest[active, planted.item_topic[chosen]] * t + 1e-9)
            buy_logit = -1.5 + 0.8 * affinity + planted.scene_conversion[scene]
            seen[active, chosen] = True
            prev[active] = chosen
            for key, value in (
                ("u", users[active]),
                ("i", chosen),
                ("t", clock[active].astype(np.int64)),
                ("s", scene),
                ("d", device),
                ("buy", rng.random(len(active)) < 1 / (1 + np.exp(-buy_logit))),
            ):
                out[key].append(value)
    return _Simulated(
        rows={k: np.concatenate(v) for k, v in out.items()},
        scenes=oracle_scenes,
        oracle=oracle_ranks,
        observed=observed_ranks,
        inferred=inferred_ranks,
        new_items=new_ranks,
        new_known=new_known_ranks,
    )


def _topic_choice(
    planted: _Planted,
    pop_pow: np.ndarray,
    topic_onehot: np.ndarray,
    interest: np.ndarray,
    scene: np.ndarray,
    device: np.ndarray,
    hour: np.ndarray,
    seen: np.ndarray,
) -> np.ndarray:
    """[B, T, T]: the distribution of the next item's topic for each possible current interest (axis 1).

    Topics with no unseen item left get no mass.
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
    topic_mass = np.where(seen, 0.0, pop_pow[scene]) @ topic_onehot  # [B, T] unseen popularity mass
    q = np.exp(logits - logits.max(axis=2, keepdims=True)) * (topic_mass > 0)[:, None, :]
    return q / q.sum(axis=2, keepdims=True)


def _next_item_probs(
    spec: SyntheticSpec,
    planted: _Planted,
    pop_pow: np.ndarray,
    topic_onehot: np.ndarray,
    q: np.ndarray,
    scene: np.ndarray,
    seen: np.ndarray,
    prev: np.ndarray,
) -> np.ndarray:
    """The exact next-item distribution [B, N] given the topic choice q [B, T] (0 on seen items).

    Linear in q, so a posterior-weighted q gives the posterior predictive distribution.
    """
    b = len(q)
    weight = np.where(seen, 0.0, pop_pow[scene])  # [B, N]
    topic_mass = weight @ topic_onehot  # [B, T]
    per_topic = np.divide(q, topic_mass, out=np.zeros_like(q), where=topic_mass > 0)
    by_topic = weight * per_topic[:, planted.item_topic]
    rows = np.arange(b)
    succ, available, series = _sequel(planted, scene, seen, prev)
    probs = (1 - series)[:, None] * by_topic
    probs[rows[available], succ[available]] += series[available]
    unseen = ~seen
    probs = (1 - spec.noise) * probs + spec.noise * unseen / unseen.sum(axis=1, keepdims=True)
    return probs


def _chosen_likelihood(
    spec: SyntheticSpec,
    planted: _Planted,
    pop_pow: np.ndarray,
    topic_onehot: np.ndarray,
    per_current: np.ndarray,
    chosen: np.ndarray,
    scene: np.ndarray,
    seen: np.ndarray,
    prev: np.ndarray,
) -> np.ndarray:
    """[B, T]: p(chosen item | current interest = k) for every k (the forward filter's emission)."""
    rows = np.arange(len(chosen))
    weight = np.where(seen, 0.0, pop_pow[scene])
    topic = planted.item_topic[chosen]
    mass = weight @ topic_onehot  # [B, T]
    own = weight[rows, chosen] / np.maximum(mass[rows, topic], 1e-300)  # [B]
    succ, _, series = _sequel(planted, scene, seen, prev)
    by_topic = per_current[rows, :, topic] * own[:, None]  # [B, T cur]
    follow = (series * (succ == chosen))[:, None]
    uniform = (spec.noise / (~seen).sum(axis=1))[:, None]
    return (1 - spec.noise) * ((1 - series)[:, None] * by_topic + follow) + uniform


def _sequel(
    planted: _Planted, scene: np.ndarray, seen: np.ndarray, prev: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The previous item's sequel (-1: none), whether it is still unseen, and the chance to follow it."""
    succ = np.where(prev >= 0, planted.successor[np.maximum(prev, 0)], -1)
    available = (succ >= 0) & ~seen[np.arange(len(prev)), np.maximum(succ, 0)]
    return succ, available, planted.scene_series[scene] * available


def _sample_rows(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One index per row of a [B, K] probability matrix (inverse CDF)."""
    cdf = np.cumsum(probs, axis=1)
    u = rng.random(len(probs)) * cdf[:, -1]
    return np.minimum((cdf < u[:, None]).sum(axis=1), probs.shape[1] - 1)
