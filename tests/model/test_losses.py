"""The training objectives against brute-force versions of the same sums."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from scenerec.model.losses import full_softmax, history_pairs, sampled_softmax

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


def test_full_softmax_leaves_history_items_out_of_each_row() -> None:
    hist, targets, mask = batch()
    torch.manual_seed(0)
    query, items = torch.randn(int(mask.sum()), 3), torch.randn(N, 3)
    flat = targets[mask]
    got = full_softmax(query, items, flat, seen=history_pairs(hist, mask, N))
    logits = query @ items.T
    seen = [{0}, {0, 1}, {0, 1, 2}, {3}, {3, 4}]
    expected = torch.stack(
        [
            -F.log_softmax(logits[m].masked_fill(torch.tensor([i in seen[m] for i in range(N)]), -1e30), 0)[t]
            for m, t in enumerate(flat.tolist())
        ]
    ).mean()
    assert torch.allclose(got, expected, atol=1e-6)
    assert not torch.allclose(got, full_softmax(query, items, flat), atol=1e-4)  # masking changed it


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
