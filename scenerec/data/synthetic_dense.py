"""The dense sampler: each event drawn from its exact next-item distribution over the whole catalogue.

Every step builds the [users, items] distribution of a chunk of users, so its cost grows with users x
items: the default world (5,000 x 2,000) takes about half a minute, 10^5 x 10^5 would take hours.
Small worlds keep it because their logs (and the figures recorded on them) depend on its exact random
sequence; large ones use `synthetic_sparse`, which samples the same distribution in O(topics) per event.
The item texts are written here too, item by item, in the same random sequence as before.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from scenerec.data import schema as c
from scenerec.data.synthetic_vocab import GENERIC_WORDS, TITLE_PATTERNS, TOPICS
from scenerec.data.synthetic_world import (
    Planted,
    References,
    SyntheticSpec,
    advance_users,
    event_counts,
    sample_rows,
    scene_weights,
    topic_choice,
    user_state,
)

ROW_KEYS = ("u", "i", "t", "s", "d", "buy")  # one event: user, item, seconds since epoch, scene, device


def default_chunk(items: int) -> int:
    """Users simulated together: a chunk's [users, items] matrices stay around 4 million cells."""
    return max(64, 4_000_000 // items)


def items_dense(spec: SyntheticSpec, planted: Planted, rng: np.random.Generator) -> pd.DataFrame:
    """Item ids, titles, texts and categories, written item by item from the topics' vocabulary."""
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


def simulate_dense(
    spec: SyntheticSpec,
    planted: Planted,
    rng: np.random.Generator,
    new_items: np.ndarray,
    refs: References,
    chunk: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Sample every user's log, step by step for a chunk of users at a time, yielding each chunk's
    rows (ROW_KEYS) and ranking each user's last item under every reference into `refs` (see
    `synthetic`'s docstring). The references consume no random numbers: the log is the same with or
    without them.
    """
    n, t = spec.items, spec.topics
    topic_onehot = np.eye(t)[planted.item_topic]  # [N, T]
    pop_pow = planted.popularity[None, :] ** planted.scene_pop_exponent[:, None]  # [S, N]
    n_events = event_counts(spec, rng)
    weights = scene_weights(spec)
    mean_gap = spec.days * 86400 / 3 / spec.mean_events
    # new items' weight is the catalogue's mean weight in that scene: their popularity is unknown
    pop_unknown = np.where(new_items[None, :], pop_pow.mean(axis=1, keepdims=True), pop_pow)
    chunk = chunk or default_chunk(n)
    for lo in tqdm(range(0, spec.users, chunk), desc="synthesising users", unit="chunk", disable=None):
        out: dict[str, list[np.ndarray]] = {k: [] for k in ROW_KEYS}
        users = np.arange(lo, min(lo + chunk, spec.users))
        b = len(users)
        interest, scene_pref, main_device, clock, current = user_state(spec, rng, b, weights)
        belief = interest.copy()  # observed-history posterior over the current interest [b, T]
        topic_counts = np.zeros((b, t))  # topics chosen so far (the inferred-mixture reference)
        belief_inferred = np.full((b, t), 1.0 / t)
        seen = np.zeros((b, n), dtype=bool)
        prev = np.full(b, -1)
        state = (interest, current, belief, belief_inferred, scene_pref, main_device, clock)  # advance_users
        for step in range(int(n_events[users].max())):
            active = np.flatnonzero(step < n_events[users])
            mixture, scene, device, hour = advance_users(
                spec, rng, step, active, state, topic_counts, mean_gap
            )
            mass = np.where(seen[active], 0.0, pop_pow[scene]) @ topic_onehot  # [B, T] unseen mass
            per_current = topic_choice(planted, interest[active], scene, device, hour, mass)  # [B, T, T]
            per_current_inferred = topic_choice(planted, mixture, scene, device, hour, mass)
            after = (scene, seen[active], prev[active])  # what the item choice depends on besides q
            rows_b = np.arange(len(active))
            probs = _next_item_probs(
                spec, planted, pop_pow, topic_onehot, per_current[rows_b, current[active]], *after
            )
            chosen = sample_rows(probs, rng)
            last = np.flatnonzero(step == n_events[users[active]] - 1)
            if len(last):
                p_last, p_chosen = probs[last], probs[last, chosen[last]]
                refs.oracle[users[active[last]]] = (p_last >= p_chosen[:, None]).sum(axis=1) - 1
                refs.scenes[users[active[last]]] = scene[last]
                # the observed-history oracle: the topic choice averaged over the posterior
                q_obs = np.einsum("bk,bkt->bt", belief[active[last]], per_current[last])
                sub = tuple(x[last] for x in after)
                p_obs = _next_item_probs(spec, planted, pop_pow, topic_onehot, q_obs, *sub)
                p_target = p_obs[np.arange(len(last)), chosen[last]]
                refs.observed[users[active[last]]] = (p_obs >= p_target[:, None]).sum(axis=1) - 1
                q_inf = np.einsum("bk,bkt->bt", belief_inferred[active[last]], per_current_inferred[last])
                p_inf = _next_item_probs(spec, planted, pop_pow, topic_onehot, q_inf, *sub)
                p_target = p_inf[np.arange(len(last)), chosen[last]]
                refs.inferred[users[active[last]]] = (p_inf >= p_target[:, None]).sum(axis=1) - 1
            fresh = np.flatnonzero(new_items[chosen])  # latest event on a "new" item so far
            if len(fresh):
                q_new = per_current[fresh, current[active[fresh]]]
                sub = tuple(x[fresh] for x in after)
                for ranks_out, weights_new in ((refs.new_items, pop_unknown), (refs.new_known, pop_pow)):
                    p_new = _next_item_probs(spec, planted, weights_new, topic_onehot, q_new, *sub)
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
        yield {k: np.concatenate(v) for k, v in out.items()}


def _next_item_probs(
    spec: SyntheticSpec,
    planted: Planted,
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
    planted: Planted,
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
    planted: Planted, scene: np.ndarray, seen: np.ndarray, prev: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The previous item's sequel (-1: none), whether it is still unseen, and the chance to follow it."""
    succ = np.where(prev >= 0, planted.successor[np.maximum(prev, 0)], -1)
    available = (succ >= 0) & ~seen[np.arange(len(prev)), np.maximum(succ, 0)]
    return succ, available, planted.scene_series[scene] * available
