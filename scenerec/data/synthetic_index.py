"""The sparse sampler's catalogue index: per scene and topic, items by weight, to draw and to rank.

`rank_chosen` counts the items at least as likely as the chosen one without building the event's
distribution (see `synthetic_sparse`): within a topic an unseen item's probability is monotone in its
weight, so a binary search over the topic's sorted weights counts them, corrected for the items the
user has seen and for the sequel.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from scenerec.data.synthetic_world import Planted, SyntheticSpec

_TOLERANCE = 1e-9  # relative: p_j >= p_chosen * (1 - tolerance) counts as at least as likely


class TopicIndex:
    """Per (scene, topic): the topic's items by weight (ascending), their cumulative weights, totals."""

    def __init__(self, planted: Planted, weights: np.ndarray) -> None:
        s_count = weights.shape[0]
        t_count = planted.scene_bias.shape[1]
        self.weights = weights  # [S, N]
        self.item_topic = planted.item_topic
        self.topics = t_count
        order = np.lexsort((weights, np.broadcast_to(planted.item_topic, weights.shape)), axis=1)  # [S, N]
        self.sorted_items = order
        self.sorted_weights = np.take_along_axis(weights, order, axis=1)
        sizes = np.bincount(planted.item_topic, minlength=t_count)
        self.size = sizes  # [T]
        self.start = np.concatenate([[0], np.cumsum(sizes)[:-1]])  # [T] first position of each topic
        self.cumulative = np.cumsum(self.sorted_weights, axis=1)  # [S, N] running over the whole row
        before = np.concatenate([np.zeros((s_count, 1)), self.cumulative], axis=1)
        self.base = before[:, self.start]  # [S, T] cumulative weight before each topic
        self.total = before[:, self.start + sizes] - self.base  # [S, T]

    def topic_of(self, items: np.ndarray) -> np.ndarray:
        return self.item_topic[items]

    def draw(self, scene: np.ndarray, topic: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Items of `topic` drawn proportionally to their weight in `scene`, seen or not."""
        target = self.base[scene, topic] + rng.random(len(scene)) * self.total[scene, topic]
        pos = np.empty(len(scene), dtype=np.int64)
        for s in np.unique(scene):
            rows = np.flatnonzero(scene == s)
            pos[rows] = np.searchsorted(self.cumulative[s], target[rows], side="right")
        lo, hi = self.start[topic], self.start[topic] + self.size[topic] - 1
        return self.sorted_items[scene, np.clip(pos, lo, hi)]

    def at_least(self, scene: np.ndarray, threshold: np.ndarray) -> np.ndarray:
        """[B]: items of every topic t with weight >= threshold[b, t] in scene[b], summed over topics."""
        count = np.zeros(len(scene), dtype=np.int64)
        for s in np.unique(scene):
            rows = np.flatnonzero(scene == s)
            for t in range(self.topics):
                lo, size = self.start[t], self.size[t]
                segment = self.sorted_weights[s, lo : lo + size]
                count[rows] += size - np.searchsorted(segment, threshold[rows, t], side="left")
        return count


@dataclass(frozen=True)
class Event:
    """One step's events of a batch of users: what ranking the chosen item depends on."""

    scene: np.ndarray  # [B]
    seen: np.ndarray  # [B, step] the items seen before
    succ: np.ndarray  # [B] the previous item's sequel, -1: none
    available: np.ndarray  # [B] the sequel is unseen
    series: np.ndarray  # [B] the chance to follow it (0 when not available)
    chosen: np.ndarray  # [B]

    def at(self, rows: np.ndarray) -> Event:
        return Event(*(getattr(self, f.name)[rows] for f in dataclasses.fields(self)))


def rank_chosen(
    spec: SyntheticSpec,
    index: TopicIndex,
    q: np.ndarray,
    mass: np.ndarray,
    event: Event,
    unseen: int,
) -> np.ndarray:
    """[B]: how many other items are at least as likely as `chosen` under the event's distribution
    with topic choice q and the index's weights (the dense sampler's `(p >= p_chosen).sum() - 1`)."""
    scene, seen, succ, available = event.scene, event.seen, event.succ, event.available
    series, chosen = event.series, event.chosen
    rows = np.arange(len(q))
    noise = spec.noise / unseen
    coef = np.divide((1 - spec.noise) * (1 - series)[:, None] * q, mass, out=np.zeros_like(q), where=mass > 0)
    bonus = (1 - spec.noise) * series * available
    topic = index.topic_of(chosen)
    p_chosen = coef[rows, topic] * index.weights[scene, chosen] + noise + bonus * (chosen == succ)
    level = p_chosen * (1 - _TOLERANCE)
    with np.errstate(divide="ignore", invalid="ignore"):
        threshold = (level - noise)[:, None] / coef  # p_j >= level  <=>  w_j >= threshold (coef > 0)
    threshold = np.where(np.isnan(threshold), -np.inf, threshold)
    count = index.at_least(scene, threshold)
    if seen.shape[1]:  # seen items have p = 0: take back those the weights counted
        seen_topic = index.topic_of(np.maximum(seen, 0))
        seen_weight = index.weights[scene[:, None], np.maximum(seen, 0)]
        counted = (seen >= 0) & (seen_weight >= threshold[rows[:, None], seen_topic])
        count -= counted.sum(axis=1)
    has = np.flatnonzero(available)  # the sequel: counted by its weight, but more likely by `bonus`
    if len(has):
        s_item, s_topic = succ[has], index.topic_of(succ[has])
        s_weight = index.weights[scene[has], s_item]
        by_weight = s_weight >= threshold[has, s_topic]
        with_bonus = coef[has, s_topic] * s_weight + noise + bonus[has] >= level[has]
        count[has] += with_bonus.astype(np.int64) - by_weight
    return count - 1
