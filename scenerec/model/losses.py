"""Training objectives: next-item softmax (full or sampled with logQ), ID-text alignment, conversion BCE."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F


class SeenPairs(NamedTuple):
    """(target row, item) pairs to keep out of a row's softmax: the items already in its history.

    The data contract collapses repeated (user, item) pairs, so a history item is never the next
    item; evaluation masks the history too. Leaving history items in the softmax would spend the
    model's capacity pushing down exactly the items most like the user's taste.
    """

    rows: torch.Tensor  # [P] index into the M targets
    items: torch.Tensor  # [P] catalogue index


def history_pairs(hist_items: torch.Tensor, target_mask: torch.Tensor, n_items: int) -> SeenPairs:
    """Pairs (m, item) for every target m = (b, t) and every item at history positions <= t.

    `hist_items` [B, L] (pad = n_items), `target_mask` [B, L]; rows follow `target_mask`'s order
    (the order of `tensor[target_mask]`).
    """
    b, length = hist_items.shape
    t, s = torch.tril_indices(length, length, device=hist_items.device)  # t >= s
    row_of = torch.cumsum(target_mask.flatten(), 0).view(b, length) - 1  # [B, L] target index
    items = hist_items[:, s]  # [B, P]
    keep = target_mask[:, t] & (items < n_items)
    rows = row_of[:, t].expand_as(items)
    return SeenPairs(rows=rows[keep], items=items[keep])


def full_softmax(
    query: torch.Tensor,
    items: torch.Tensor,
    targets: torch.Tensor,
    absent: torch.Tensor | None = None,
    seen: SeenPairs | None = None,
    offset: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy over the whole catalogue: [M, Q] queries, [N, Q] items, [M] targets.

    The strongest SASRec objective on catalogues that fit (Klenitskiy & Vasilev, RecSys 2023).
    `absent` [N] marks items left out of the softmax (never seen in training); `seen` the items left
    out of one row's softmax (its history). A row's own target is never masked. `offset` [M, N] is
    added to the logits (a score part that is not a dot product: the item-item part).
    """
    # [M, N] is the largest tensor of a step: built by one (add)mm and masked in place (neither the
    # matrix product's nor the masks' backward needs it), so it is never copied
    logits = query @ items.T if offset is None else torch.addmm(offset, query, items.T)
    if absent is not None:
        logits.masked_fill_(absent[None, :], float("-inf"))
    if seen is not None:
        other = seen.items != targets[seen.rows]
        logits.index_put_((seen.rows[other], seen.items[other]), logits.new_tensor(float("-inf")))
    return F.cross_entropy(logits, targets)


def sampled_softmax(
    query: torch.Tensor,
    items: torch.Tensor,
    targets: torch.Tensor,
    negatives: int,
    popularity: torch.Tensor,
    generator: torch.Generator | None = None,
    absent: torch.Tensor | None = None,
    seen: SeenPairs | None = None,
    offset: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Cross-entropy over the target, shared uniform negatives and the batch's other targets.

    Every candidate's logit is corrected by log of its expected count in the candidate set (Yi et al.,
    RecSys 2019): uniform negatives contribute K/N, in-batch targets M * p(item). Accidental hits
    (a candidate equal to the row's target) and the row's history items (`seen`) are masked.
    `offset(candidates [C])` gives [M, C] terms added to the logits (the item-item part).
    """
    n = items.shape[0]
    uniform = torch.randint(0, n, (negatives,), generator=generator, device=query.device)
    unique_targets = targets.unique()
    candidates = torch.cat([uniform, unique_targets])
    expected = negatives / n + len(targets) * popularity
    log_q = torch.log(expected.clamp(min=1e-12))
    cand_logits = query @ items[candidates].T - log_q[candidates][None, :]
    pos_offset: torch.Tensor | float = 0.0
    if offset is not None:
        extra = offset(candidates)
        cand_logits = cand_logits + extra
        # each row's target is among the in-batch candidates: its column is negatives + rank in unique
        column = negatives + torch.searchsorted(unique_targets, targets)
        pos_offset = extra.gather(1, column[:, None])[:, 0]
    hits = candidates[None, :] == targets[:, None]
    if absent is not None:
        hits = hits | absent[candidates][None, :]
    if seen is not None:  # (row, candidate) pairs whose item is in the row's history
        stride = n + 1
        seen_keys = torch.unique(seen.rows * stride + seen.items)
        keys = torch.arange(len(targets), device=query.device)[:, None] * stride + candidates[None, :]
        hits = hits | torch.isin(keys, seen_keys)
    cand_logits = cand_logits.masked_fill(hits, float("-inf"))
    pos_logit = (query * items[targets]).sum(-1) - log_q[targets] + pos_offset
    logits = torch.cat([pos_logit[:, None], cand_logits], dim=1)
    return F.cross_entropy(logits, torch.zeros_like(targets))


def alignment_infonce(ids: torch.Tensor, generated: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE pulling each item's learned ID vector to the one generated from its text."""
    a, b = F.normalize(ids, dim=-1), F.normalize(generated, dim=-1)
    logits = a @ b.T / temperature
    labels = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
