"""Training objectives: next-item softmax (full or sampled with logQ), ID-text alignment, conversion BCE."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

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


def seen_mask(seen: SeenPairs, candidates: torch.Tensor, rows: int) -> torch.Tensor:
    """[rows, C] True where candidate c's item is in row m's history (`seen`'s pairs).

    Each pair is placed by binary search in the sorted candidates, so the cost follows the P pairs
    (x log C), not rows x C: at a batch of ~10^4 target rows and ~5,000 candidates, testing every
    (row, candidate) key for membership was most of a sampled-softmax step. A candidate drawn more
    than once (uniform negatives repeat) is masked at each of its columns.
    """
    mask = torch.zeros(rows, len(candidates), dtype=torch.bool, device=candidates.device)
    ordered, column = torch.sort(candidates)
    lo = torch.searchsorted(ordered, seen.items)
    copies = torch.searchsorted(ordered, seen.items, right=True) - lo  # columns holding the item
    for j in range(int(copies.max()) if len(copies) else 0):
        at = copies > j
        mask[seen.rows[at], column[lo[at] + j]] = True
    return mask


class _MaskedLogits(torch.autograd.Function):
    """logits = weight[:, None] * table + query @ items.T with masked entries set to -inf.

    One [R, W] tensor is allocated and everything is written into it in place, outside autograd:
    the table (a constant, never copied or differentiated: its only gradient is the per-row
    weight's) and the masks. A masked entry's softmax gradient is 0 already, so backward needs no
    mask; in-place masking under autograd would copy the whole gradient once per mask instead."""

    @staticmethod
    def forward(
        ctx: Any,
        query: torch.Tensor,
        items: torch.Tensor,
        weight: torch.Tensor | None,
        table: torch.Tensor | None,
        columns: torch.Tensor | None,
        entries: torch.Tensor | None,
    ) -> torch.Tensor:
        ctx.save_for_backward(query, items, table)
        if weight is None or table is None:
            logits = query @ items.T
        else:
            logits = (table * weight[:, None]).addmm_(query, items.T)
        if columns is not None:  # [W] bool: columns out of every row's softmax
            logits.masked_fill_(columns[None, :], float("-inf"))
        if entries is not None:  # flat indices of single entries out of their row's softmax
            logits.view(-1).index_fill_(0, entries, float("-inf"))
        return logits

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        query, items, table = ctx.saved_tensors
        need_query, need_items, need_weight = ctx.needs_input_grad[:3]
        return (
            grad @ items if need_query else None,
            grad.T @ query if need_items else None,
            torch.einsum("rw,rw->r", grad, table) if need_weight and table is not None else None,
            None,
            None,
            None,
        )


def window_softmax(
    query: torch.Tensor,
    items: torch.Tensor,
    targets: torch.Tensor,
    hist_items: torch.Tensor | None = None,
    absent: torch.Tensor | None = None,
    offset: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Cross-entropy over the whole catalogue at every position of a batch of windows.

    `query` [B, L, Q] (the query after each position), `items` [N, Q], `targets` [B, L] (the next
    item, -1 where a position has none). The strongest SASRec objective on catalogues that fit
    (Klenitskiy & Vasilev, RecSys 2023). `hist_items` [B, L] (pad N): each position's history items
    (positions <= t) are left out of its softmax, never its own target. `absent` [N] marks items
    left out of every softmax (never seen in training). `offset` = (weight [B, L], table
    [B, L, N + 1]) adds weight * table to the logits (a score part that is not a dot product: the
    item-item part; column N, the pad's, is dropped).

    [B * L, N + 1] is the largest tensor of a step: the logits keep every position (padding is a few
    percent after length bucketing) and a pad column, so no step copies a [M, N] slice of anything.
    """
    b, length, width = query.shape[0], query.shape[1], items.shape[0] + 1
    padded = torch.cat([items, items.new_zeros(1, items.shape[1])])  # column N: the pad, masked
    columns = torch.zeros(width, dtype=torch.bool, device=query.device)
    columns[-1] = True
    if absent is not None:
        columns[:-1] = absent
    entries = None
    if hist_items is not None:
        t, s = torch.tril_indices(length, length, device=query.device)  # position t sees history s <= t
        seen = hist_items[:, s]  # [B, P]
        seen = torch.where(seen == targets[:, t], width - 1, seen)  # a row's own target stays in
        row = torch.arange(b, device=query.device)[:, None] * length + t[None, :]
        entries = (row * width + seen).reshape(-1)
    weight, table = offset if offset is not None else (None, None)
    logits = _MaskedLogits.apply(
        query.reshape(b * length, -1),
        padded,
        None if weight is None else weight.reshape(-1),
        None if table is None else table.reshape(b * length, width),
        columns,
        entries,
    )
    flat = targets.reshape(-1)
    return F.cross_entropy(logits, torch.where(flat >= 0, flat, torch.full_like(flat, -100)))


def sampled_softmax(
    query: torch.Tensor,
    items: torch.Tensor,
    targets: torch.Tensor,
    negatives: int | torch.Tensor,
    popularity: torch.Tensor,
    generator: torch.Generator | None = None,
    absent: torch.Tensor | None = None,
    seen: SeenPairs | None = None,
    offset: Callable[[torch.Tensor], torch.Tensor] | None = None,
    n_catalogue: int | None = None,
    in_batch: int = 0,
) -> torch.Tensor:
    """Cross-entropy over the target, shared uniform negatives and the batch's other targets.

    Every candidate's logit is corrected by log of its expected count in the candidate set (Yi et al.,
    RecSys 2019): uniform negatives contribute K/N, in-batch targets S * p(item), where S is the
    number of target positions they are taken from: all M, or a uniform sample of `in_batch` of them
    (0 = all; a sample keeps the logits [M, K + S] instead of [M, K + M]). Accidental hits
    (a candidate equal to the row's target) and the row's history items (`seen`) are masked.
    `offset(candidates [C])` gives [M, C] terms added to the logits (the item-item part).

    `items` [N, Q] is the catalogue, or (a large one) only the rows one step reads: then `targets`,
    `negatives` (the K uniform draws over the whole catalogue, as row indices), `popularity`,
    `absent` and `seen` index those rows, and `n_catalogue` is the catalogue's size N for K/N.
    """
    n = items.shape[0]
    if isinstance(negatives, int):
        uniform = torch.randint(0, n, (negatives,), generator=generator, device=query.device)
    else:
        uniform = negatives
    k = len(uniform)
    shared = targets
    if 0 < in_batch < len(targets):
        shared = targets[torch.randperm(len(targets), generator=generator, device=targets.device)[:in_batch]]
    in_batch_items = shared.unique()
    candidates = torch.cat([uniform, in_batch_items])
    expected = k / (n_catalogue or n) + len(shared) * popularity
    log_q = torch.log(expected.clamp(min=1e-12))
    cand_logits = query @ items[candidates].T - log_q[candidates][None, :]
    pos_offset: torch.Tensor | float = 0.0
    if offset is not None:
        extra = offset(candidates)
        cand_logits = cand_logits + extra
        # each row's own target, among every target's items (sorted, so its column is its rank there)
        unique_targets = targets.unique()
        column = torch.searchsorted(unique_targets, targets)
        pos_offset = offset(unique_targets).gather(1, column[:, None])[:, 0]
    hits = candidates[None, :] == targets[:, None]
    if absent is not None:
        hits = hits | absent[candidates][None, :]
    if seen is not None:  # (row, candidate) pairs whose item is in the row's history
        hits = hits | seen_mask(seen, candidates, len(targets))
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
