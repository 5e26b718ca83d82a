"""The training objectives against brute-force versions of the same sums."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from scenerec.model.losses import SeenPairs, history_pairs, sampled_softmax, seen_mask, window_softmax

N = 6  # catalogue; index N is the history pad


def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two left-padded windows: inputs [B, L] and next-item targets [B, L] (-1: none)."""
    hist = torch.tensor([[N, 0, 1, 2], [N, N, 3, 4]])
    targets = torch.tensor([[-1, 1, 2, 5], [-1, -1, 4, 0]])
    return hist, targets, targets >= 0


def test_history_pairs_list_every_earlier_item_of_each_target() -> None:
    hist, _, mask = batch()
    pairs = history_pairs(hist, mask, N)
    got = sorted(zip(pairs.rows.tolist(), pairs.items.tolist(), strict=True))
    # targets in mask order: (0,1)->1 sees {0}; (0,2)->2 sees {0,1}; (0,3)->5 sees {0,1,2};
    # (1,2)->4 sees {3}; (1,3)->0 sees {3,4}
    assert got == [(0, 0), (1, 0), (1, 1), (2, 0), (2, 1), (2, 2), (3, 3), (4, 3), (4, 4)]


def brute_force(
    query: torch.Tensor, items: torch.Tensor, targets: torch.Tensor, hist: torch.Tensor, offset: torch.Tensor
) -> torch.Tensor:
    """Mean over every (window, position) with a target of -log softmax, history masked, row by row."""
    losses = []
    for b in range(targets.shape[0]):
        for t in range(targets.shape[1]):
            target = int(targets[b, t])
            if target < 0:
                continue
            logits = query[b, t] @ items.T + offset[b, t, :N]
            seen = {int(i) for i in hist[b, : t + 1] if i < N and i != target}
            masked = logits.masked_fill(torch.tensor([i in seen for i in range(N)]), float("-inf"))
            losses.append(-F.log_softmax(masked, 0)[target])
    return torch.stack(losses).mean()


def test_window_softmax_leaves_history_items_out_of_each_row_and_adds_the_offset() -> None:
    hist, targets, _ = batch()
    torch.manual_seed(0)
    query = torch.randn(*hist.shape, 3, requires_grad=True)
    items = torch.randn(N, 3, requires_grad=True)
    weight = torch.rand(*hist.shape, requires_grad=True)
    table = torch.randn(*hist.shape, N + 1)
    got = window_softmax(query, items, targets, hist_items=hist, offset=(weight, table))
    expected = brute_force(query, items, targets, hist, weight[..., None] * table)
    assert torch.allclose(got, expected, atol=1e-6)
    # the hand-written backward agrees with autograd through the brute force
    for mine, reference in zip(
        torch.autograd.grad(got, [query, items, weight]),
        torch.autograd.grad(expected, [query, items, weight]),
        strict=True,
    ):
        assert torch.allclose(mine, reference, atol=1e-6)
    unmasked = window_softmax(query, items, targets, offset=(weight, table))
    assert not torch.allclose(got, unmasked, atol=1e-4)  # masking changed it


def test_window_softmax_keeps_a_target_that_is_also_in_its_history() -> None:
    hist, targets, _ = batch()
    targets = targets.clone()
    targets[0, 3] = 0  # item 0 is at position 1 of this window's history
    torch.manual_seed(2)
    query, items = torch.randn(*hist.shape, 3), torch.randn(N, 3)
    got = window_softmax(query, items, targets, hist_items=hist)
    assert torch.isfinite(got)
    assert torch.allclose(got, brute_force(query, items, targets, hist, torch.zeros(*hist.shape, N + 1)))


def test_sampled_softmax_masks_history_items_among_the_candidates() -> None:
    hist, targets, mask = batch()
    torch.manual_seed(1)
    query, items = torch.randn(int(mask.sum()), 3), torch.randn(N, 3)
    flat, popularity = targets[mask], torch.full((N,), 1.0 / N)
    seen = history_pairs(hist, mask, N)
    masked = sampled_softmax(query, items, flat, 64, popularity, torch.Generator().manual_seed(3), seen=seen)
    plain = sampled_softmax(query, items, flat, 64, popularity, torch.Generator().manual_seed(3))
    # with 64 uniform draws over 6 items every item is a candidate: the masked loss drops the history
    # items' mass from every row's denominator, so it is strictly lower
    assert masked < plain
    assert torch.isfinite(masked)


def test_seen_mask_equals_membership_of_every_row_and_candidate_with_repeated_candidates() -> None:
    g = torch.Generator().manual_seed(3)
    rows, n = 40, 30
    seen = SeenPairs(
        rows=torch.randint(0, rows, (200,), generator=g), items=torch.randint(0, n, (200,), generator=g)
    )
    candidates = torch.randint(0, n, (25,), generator=g)  # repeats: uniform draws with replacement
    assert len(candidates.unique()) < len(candidates)
    history = [set(seen.items[seen.rows == r].tolist()) for r in range(rows)]
    want = torch.tensor([[int(c) in history[r] for c in candidates] for r in range(rows)])
    got = seen_mask(seen, candidates, rows)
    assert got.any() and torch.equal(got, want)
    nothing = SeenPairs(rows=torch.zeros(0, dtype=torch.int64), items=torch.zeros(0, dtype=torch.int64))
    assert not seen_mask(nothing, candidates, rows).any()


def test_sampled_softmax_with_a_sample_of_in_batch_targets() -> None:
    """`in_batch` >= M changes nothing; a smaller sample is seeded, logQ-corrected by S, and keeps
    the item-item offset of each row's own target (it may not be among the sampled candidates)."""
    g = torch.Generator().manual_seed(0)
    q, items = torch.randn(40, 5, generator=g), torch.randn(30, 5, generator=g)
    targets = torch.randint(0, 30, (40,), generator=g)
    uniform = torch.randint(0, 30, (8,), generator=g)
    popularity = torch.softmax(torch.randn(30, generator=g), 0)
    table = torch.randn(40, 30, generator=g)

    def offset(candidates: torch.Tensor) -> torch.Tensor:
        return table[:, candidates]

    def loss(in_batch: int, seed: int = 1, **kw: object) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return sampled_softmax(q, items, targets, uniform, popularity, generator=gen, in_batch=in_batch, **kw)

    assert torch.equal(loss(0), loss(40)) and torch.equal(loss(0), loss(100))
    assert torch.equal(loss(10), loss(10)) and not torch.equal(loss(10), loss(10, seed=2))
    # brute force of one sample: the logits over the target, the uniform draws and the sampled targets
    gen = torch.Generator().manual_seed(1)
    shared = targets[torch.randperm(40, generator=gen)[:10]]
    candidates = torch.cat([uniform, shared.unique()])
    log_q = torch.log(8 / 30 + 10 * popularity)
    logits = q @ items[candidates].T - log_q[candidates] + table[:, candidates]
    logits[candidates[None, :] == targets[:, None]] = float("-inf")
    pos = (q * items[targets]).sum(-1) - log_q[targets] + table[torch.arange(40), targets]
    want = F.cross_entropy(torch.cat([pos[:, None], logits], 1), torch.zeros(40, dtype=torch.int64))
    assert torch.allclose(loss(10, offset=offset), want, atol=1e-6)
