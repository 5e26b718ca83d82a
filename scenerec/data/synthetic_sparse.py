"""The sparse sampler: the same next-item distribution as `synthetic_dense`, in O(topics) per event.

The distribution of an event is a mixture (see `synthetic_dense._next_item_probs`): with probability
`noise` a uniformly random unseen item; else, with the scene's series chance (when the previous item's
sequel is unseen), that sequel; else a topic from the topic choice q, then an unseen item of that topic
with probability proportional to its popularity weight. Each part is sampled exactly: the item of a
topic from the topic's cumulative weights, a seen item rejected and drawn again (a user sees at most
`max_events` items). What the dense sampler sums over the catalogue (each topic's unseen mass) is kept
per user as the topic totals minus the weights seen so far.

The references rank the chosen item among all items without building the distribution: an unseen
item j of topic t has p_j = a * q_t / mass_t * w_j + noise / unseen (plus the series chance for the
sequel), monotone in w_j within a topic, so the items at least as likely as the chosen one are counted
per topic by a binary search over the topic's sorted weights, then corrected for the items the user
has seen and for the sequel. Ties count against the chosen item, as in the dense ranking; a relative
tolerance of 1e-9 absorbs the two computations' rounding.

Its random sequence differs from the dense sampler's, so a world gets one sampler for good: `synthetic`
picks dense for small worlds (their logs and the figures recorded on them stay as they were).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from scenerec.data import schema as c
from scenerec.data.synthetic_index import Event, TopicIndex, rank_chosen
from scenerec.data.synthetic_vocab import GENERIC_WORDS, TITLE_PATTERNS, TOPICS
from scenerec.data.synthetic_world import (
    Planted,
    References,
    SyntheticSpec,
    advance_users,
    event_counts,
    sample_rows,
    scene_weights,
    user_state,
)

DEFAULT_CHUNK = 20_000  # users simulated together: [users, topics, topics] arrays of ~40 MB
_MAX_REJECTIONS = 64  # then the rest of a topic draw is sampled from its unseen items explicitly


class _TopicChoice:
    """`synthetic_world.topic_choice` without its [B, T, T] array: the same distribution in closed form.

    For current interest k the topic choice is q[k, t] = (a_t + f w_t [k = t]) / z_k with
    w_t = exp(scene + device + hour bias of t) (0 for a topic with nothing unseen), f the scene's focus,
    a_t = ((1 - f) interest_t + 1e-12) w_t and z_k = sum_t a_t + f w_k: what the log-space softmax of
    `topic_choice` computes, in O(B T) instead of O(B T^2).
    """

    def __init__(
        self,
        planted: Planted,
        interest: np.ndarray,
        scene: np.ndarray,
        device: np.ndarray,
        hour: np.ndarray,
        mass: np.ndarray,
    ) -> None:
        bias = planted.scene_bias[scene] + planted.device_bias[device] + planted.hour_bias[hour]
        w = np.exp(bias - bias.max(axis=1, keepdims=True)) * (mass > 0)
        focus = planted.scene_focus[scene][:, None]
        self.a = ((1 - focus) * interest + 1e-12) * w  # [B, T]
        self.fw = focus * w  # [B, T]
        self.z = self.a.sum(axis=1, keepdims=True) + self.fw  # [B, T cur]

    def given(self, current: np.ndarray) -> np.ndarray:
        """[B, T]: the topic choice of each row's current interest."""
        rows = np.arange(len(current))
        q = self.a.copy()
        q[rows, current] += self.fw[rows, current]
        return q / self.z[rows, current][:, None]

    def of_topic(self, topic: np.ndarray) -> np.ndarray:
        """[B, T cur]: the chance of each row's `topic` under every possible current interest."""
        rows = np.arange(len(topic))
        numerator = np.repeat(self.a[rows, topic][:, None], self.a.shape[1], axis=1)
        numerator[rows, topic] += self.fw[rows, topic]
        return numerator / self.z

    def averaged(self, rows: np.ndarray, belief: np.ndarray) -> np.ndarray:
        """[R, T]: the topic choice averaged over a posterior `belief` [R, T cur] of rows `rows`."""
        weight = belief / self.z[rows]
        return self.a[rows] * weight.sum(axis=1, keepdims=True) + self.fw[rows] * weight


def simulate_sparse(
    spec: SyntheticSpec,
    planted: Planted,
    rng: np.random.Generator,
    new_items: np.ndarray,
    refs: References,
    chunk: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Sample every user's log a chunk of users at a time, yielding each chunk's rows (as the dense
    sampler does) and filling `refs`; memory grows with the chunk, not with the world."""
    n, t = spec.items, spec.topics
    pop_pow = planted.popularity[None, :] ** planted.scene_pop_exponent[:, None]  # [S, N]
    pop_unknown = np.where(new_items[None, :], pop_pow.mean(axis=1, keepdims=True), pop_pow)
    known, unknown = TopicIndex(planted, pop_pow), TopicIndex(planted, pop_unknown)
    n_events = event_counts(spec, rng)
    weights = scene_weights(spec)
    mean_gap = spec.days * 86400 / 3 / spec.mean_events
    chunk = chunk or DEFAULT_CHUNK
    for lo in tqdm(range(0, spec.users, chunk), desc="synthesising users", unit="chunk", disable=None):
        users = np.arange(lo, min(lo + chunk, spec.users))
        b, steps = len(users), int(n_events[users].max())
        interest, scene_pref, main_device, clock, current = user_state(spec, rng, b, weights)
        belief = interest.copy()
        topic_counts = np.zeros((b, t))
        belief_inferred = np.full((b, t), 1.0 / t)
        seen_items = np.full((b, steps), -1, dtype=np.int64)  # in order; a user's first `step` are set
        seen_mass = np.zeros((b, spec.scenes, t))  # weight seen so far, per scene and topic
        seen_mass_unknown = np.zeros((b, spec.scenes, t))
        prev = np.full(b, -1)
        out: dict[str, list[np.ndarray]] = {k: [] for k in ("u", "i", "t", "s", "d", "buy")}
        state = (interest, current, belief, belief_inferred, scene_pref, main_device, clock)  # advance_users
        for step in range(steps):
            active = np.flatnonzero(step < n_events[users])
            mixture, scene, device, hour = advance_users(
                spec, rng, step, active, state, topic_counts, mean_gap
            )
            seen = seen_items[active, :step]  # [B, step]
            mass = _unseen_mass(known, scene, seen_mass[active, scene], topic_counts[active])
            per_current = _TopicChoice(planted, interest[active], scene, device, hour, mass)
            per_current_inferred = _TopicChoice(planted, mixture, scene, device, hour, mass)
            q = per_current.given(current[active])
            succ, available, series = _sequel(planted, scene, seen, prev[active])
            chosen = _draw(spec, known, rng, q, scene, seen, succ, series)
            event = Event(scene, seen, succ, available, series, chosen)
            last = np.flatnonzero(step == n_events[users[active]] - 1)
            if len(last):
                who = users[active[last]]
                refs.scenes[who] = scene[last]
                sub = event.at(last)
                refs.oracle[who] = rank_chosen(spec, known, q[last], mass[last], sub, n - step)
                q_obs = per_current.averaged(last, belief[active[last]])
                refs.observed[who] = rank_chosen(spec, known, q_obs, mass[last], sub, n - step)
                q_inf = per_current_inferred.averaged(last, belief_inferred[active[last]])
                refs.inferred[who] = rank_chosen(spec, known, q_inf, mass[last], sub, n - step)
            fresh = np.flatnonzero(new_items[chosen])
            if len(fresh):
                who = users[active[fresh]]
                sub = event.at(fresh)
                at = active[fresh]
                mass_unknown = _unseen_mass(
                    unknown, scene[fresh], seen_mass_unknown[at, scene[fresh]], topic_counts[at]
                )
                refs.new_items[who] = rank_chosen(spec, unknown, q[fresh], mass_unknown, sub, n - step)
                refs.new_known[who] = rank_chosen(spec, known, q[fresh], mass[fresh], sub, n - step)
            follow = series * (succ == chosen)
            for belief_now, choice in ((belief, per_current), (belief_inferred, per_current_inferred)):
                likelihood = _chosen_likelihood(
                    spec, known, mass, choice, chosen, scene, follow, series, step
                )
                posterior = belief_now[active] * likelihood
                belief_now[active] = posterior / posterior.sum(axis=1, keepdims=True)
            topic = planted.item_topic[chosen]
            topic_counts[active, topic] += 1
            seen_mass[active, :, topic] += pop_pow[:, chosen].T
            seen_mass_unknown[active, :, topic] += pop_unknown[:, chosen].T
            affinity = np.log(interest[active, topic] * t + 1e-9)
            buy_logit = -1.5 + 0.8 * affinity + planted.scene_conversion[scene]
            seen_items[active, step] = chosen
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


def _unseen_mass(
    index: TopicIndex, scene: np.ndarray, seen_mass: np.ndarray, seen_per_topic: np.ndarray
) -> np.ndarray:
    """[B, T]: each topic's unseen weight in the user's scene; exactly 0 once every item of it is seen."""
    left = index.total[scene] - seen_mass
    return np.where(seen_per_topic < index.size[None, :], np.maximum(left, 1e-300), 0.0)


def _is_seen(seen: np.ndarray, items: np.ndarray) -> np.ndarray:
    return (seen == items[:, None]).any(axis=1)


def _sequel(
    planted: Planted, scene: np.ndarray, seen: np.ndarray, prev: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The previous item's sequel (-1: none), whether it is still unseen, and the chance to follow it."""
    succ = np.where(prev >= 0, planted.successor[np.maximum(prev, 0)], -1)
    available = (succ >= 0) & ~_is_seen(seen, succ)
    return succ, available, planted.scene_series[scene] * available


def _draw(
    spec: SyntheticSpec,
    index: TopicIndex,
    rng: np.random.Generator,
    q: np.ndarray,
    scene: np.ndarray,
    seen: np.ndarray,
    succ: np.ndarray,
    series: np.ndarray,
) -> np.ndarray:
    """One unseen item per row from the event's mixture: noise, sequel, or topic then item."""
    u = rng.random(len(q))
    noisy = u < spec.noise
    follow = ~noisy & ((u - spec.noise) < (1 - spec.noise) * series)
    chosen = np.where(follow, succ, -1)
    rows = np.flatnonzero(noisy)
    while len(rows):  # uniform over unseen items
        chosen[rows] = rng.integers(0, spec.items, size=len(rows))
        rows = rows[_is_seen(seen[rows], chosen[rows])]
    rows = np.flatnonzero(~noisy & ~follow)
    topic = np.full(len(q), -1)
    topic[rows] = sample_rows(q[rows], rng)
    for _ in range(_MAX_REJECTIONS):
        if not len(rows):
            break
        chosen[rows] = index.draw(scene[rows], topic[rows], rng)
        rows = rows[_is_seen(seen[rows], chosen[rows])]
    for r in rows:  # a topic whose weight is mostly seen already: sample its unseen items explicitly
        lo, size = index.start[topic[r]], index.size[topic[r]]
        members = index.sorted_items[scene[r], lo : lo + size]
        w = np.where(np.isin(members, seen[r]), 0.0, index.sorted_weights[scene[r], lo : lo + size])
        at = int(np.searchsorted(np.cumsum(w), rng.random() * w.sum(), side="right"))
        chosen[r] = members[min(at, size - 1)]
    return chosen


def _chosen_likelihood(
    spec: SyntheticSpec,
    index: TopicIndex,
    mass: np.ndarray,
    per_current: _TopicChoice,
    chosen: np.ndarray,
    scene: np.ndarray,
    follow: np.ndarray,
    series: np.ndarray,
    step: int,
) -> np.ndarray:
    """[B, T]: p(chosen item | current interest = k) for every k (the forward filter's emission)."""
    rows = np.arange(len(chosen))
    topic = index.topic_of(chosen)
    own = index.weights[scene, chosen] / np.maximum(mass[rows, topic], 1e-300)
    by_topic = per_current.of_topic(topic) * own[:, None]
    uniform = spec.noise / (spec.items - step)
    return (1 - spec.noise) * ((1 - series)[:, None] * by_topic + follow[:, None]) + uniform


def items_sparse(spec: SyntheticSpec, planted: Planted, rng: np.random.Generator) -> pd.DataFrame:
    """The items table of `synthetic_dense.items_dense` (same rules), drawn a whole catalogue at once."""
    topic_names = list(TOPICS)[: spec.topics]
    own_words = [TOPICS[name][1] for name in topic_names]
    vocab = np.array([w for words in own_words for w in words] + list(GENERIC_WORDS), dtype=object)
    lengths = np.array([len(words) for words in own_words])
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    generic_at, n_generic = int(lengths.sum()), len(GENERIC_WORDS)
    n_words = rng.integers(8, 15, size=spec.items)
    topic = np.repeat(planted.item_topic, n_words)
    roll, pick = rng.random(len(topic)), rng.random(len(topic))
    other = rng.integers(0, len(own_words), size=len(topic))
    source = np.where(roll < 0.6, topic, other)  # a topic's own word, or another topic's
    word = offsets[source] + (pick * lengths[source]).astype(np.int64)
    word = np.where((roll >= 0.6) & (roll < 0.85), generic_at + (pick * n_generic).astype(np.int64), word)
    ends = np.cumsum(n_words)
    words = vocab[word]
    texts = [" ".join(words[end - k : end]) for end, k in zip(ends.tolist(), n_words.tolist(), strict=True)]
    own_len = lengths[planted.item_topic]
    first = (rng.random(spec.items) * own_len).astype(np.int64)
    second = (rng.random(spec.items) * (own_len - 1)).astype(np.int64)
    second += second >= first  # two distinct words of the item's own topic
    a = vocab[offsets[planted.item_topic] + first]
    b = vocab[offsets[planted.item_topic] + second]
    pattern = rng.integers(0, len(TITLE_PATTERNS), size=spec.items)
    generic = vocab[generic_at + rng.integers(0, n_generic, size=spec.items)]
    titles = [
        TITLE_PATTERNS[p].format(a=x.title(), b=y.title(), generic=g.title())
        for p, x, y, g in zip(pattern.tolist(), a, b, generic, strict=True)
    ]
    width = len(str(spec.items - 1))
    categories = np.array([TOPICS[name][0] for name in topic_names], dtype=object)
    return pd.DataFrame(
        {
            c.ITEM_ID: [f"i{k:0{width}d}" for k in range(spec.items)],
            c.TITLE: titles,
            c.TEXT: texts,
            c.CATEGORY: categories[planted.item_topic],
        }
    )
