"""Training objectives: next-item softmax (full or sampled with logQ), ID-text alignment, conversion BCE."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def full_softmax(
    query: torch.Tensor, items: torch.Tensor, targets: torch.Tensor, absent: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy over the whole catalogue: [M, Q] queries, [N, Q] items, [M] targets.

    The strongest SASRec objective on catalogues that fit (Klenitskiy & Vasilev, RecSys 2023).
    `absent` [N] marks items left out of the softmax (never seen in training).
    """
    logits = query @ items.T
    if absent is not None:
        logits = logits.masked_fill(absent[None, :], float("-inf"))
    return F.cross_entropy(logits, targets)


def sampled_softmax(
    query: torch.Tensor,
    items: torch.Tensor,
    targets: torch.Tensor,
    negatives: int,
    popularity: torch.Tensor,
    generator: torch.Generator | None = None,
    absent: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy over the target, shared uniform negatives and the batch's other targets.

    Every candidate's logit is corrected by log of its expected count in the candidate set (Yi et al.,
    RecSys 2019): uniform negatives contribute K/N, in-batch targets M * p(item). Accidental hits
    (a candidate equal to the row's target) are masked.
    """
    n = items.shape[0]
    uniform = torch.randint(0, n, (negatives,), generator=generator, device=query.device)
    candidates = torch.cat([uniform, targets.unique()])
    expected = negatives / n + len(targets) * popularity
    log_q = torch.log(expected.clamp(min=1e-12))
    cand_logits = query @ items[candidates].T - log_q[candidates][None, :]
    hits = candidates[None, :] == targets[:, None]
    if absent is not None:
        hits = hits | absent[candidates][None, :]
    cand_logits = cand_logits.masked_fill(hits, float("-inf"))
    pos_logit = (query * items[targets]).sum(-1) - log_q[targets]
    logits = torch.cat([pos_logit[:, None], cand_logits], dim=1)
    return F.cross_entropy(logits, torch.zeros_like(targets))


def alignment_infonce(ids: torch.Tensor, generated: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE pulling each item's learned ID vector to the one generated from its text."""
    a, b = F.normalize(ids, dim=-1), F.normalize(generated, dim=-1)
    logits = a @ b.T / temperature
    labels = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
