"""The byte-threshold dropout: keep rate, scale, seeding, identity in eval mode."""

from __future__ import annotations

import pytest
import torch

from scenerec.model.dropout import Dropout


def test_keeps_the_configured_share_and_preserves_the_mean() -> None:
    torch.manual_seed(0)
    layer = Dropout(0.2).train()
    out = layer(torch.ones(200_000))
    kept = (out > 0).float().mean().item()
    assert abs(kept - (1 - 51 / 256)) < 0.005  # 0.2 rounds to 51/256
    assert abs(out.mean().item() - 1.0) < 0.01
    values = out.unique()
    assert len(values) == 2 and values[0] == 0 and abs(values[1].item() - 256 / 205) < 1e-6


def test_is_seeded_by_torch_and_the_identity_in_eval_mode() -> None:
    x = torch.randn(3, 50, 7)
    layer = Dropout(0.3).train()
    torch.manual_seed(5)
    first = layer(x)
    torch.manual_seed(5)
    assert torch.equal(first, layer(x))
    assert not torch.equal(first, layer(x))  # the next draw differs
    assert torch.equal(layer.eval()(x), x)


def test_gradient_flows_through_kept_elements_only() -> None:
    x = torch.randn(1000, requires_grad=True)
    out = Dropout(0.5).train()(x)
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.equal(grad == 0, out.detach() == 0)


def test_rejects_a_probability_outside_0_1() -> None:
    with pytest.raises(ValueError, match=r"0 <= p < 1"):
        Dropout(1.0)
