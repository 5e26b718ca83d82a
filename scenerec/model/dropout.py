"""Dropout whose mask costs a quarter of torch's on CPU.

`nn.Dropout` draws one random number per element (`bernoulli_`, ~10 ns an element here); a
training step of the joint model drew ~11 such masks, about a tenth of its time. This one draws
one 64-bit integer per 7 elements and compares its bytes with a threshold: the drop probability is
rounded to a multiple of 1/256 (0.2 -> 51/256 = 0.199), which no recipe is sensitive to. Seeded
by torch's global generator like `nn.Dropout`, so training stays deterministic. The identity in
eval mode (so every exported graph is unchanged).
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import nn

_BYTES_PER_DRAW = 7  # the low 7 bytes of a draw in [0, 2^62) are uniform


class Dropout(nn.Module):
    """Inverted dropout with byte-resolution probability (see the module docstring)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout: expected 0 <= p < 1, got {p}")
        self.p = p
        self.threshold = round(p * 256)  # a byte below it drops its element
        self.scale = 256.0 / (256 - self.threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.threshold == 0:
            return x
        if sys.byteorder != "little" or x.device.type != "cpu":
            return F.dropout(x, self.threshold / 256, training=True)
        return x * keep_mask(x.shape, self.threshold, x.device, x.dtype, self.scale)

    def extra_repr(self) -> str:
        return f"p={self.threshold / 256:.4f}"


def keep_mask(
    shape: torch.Size, threshold: int, device: torch.device, dtype: torch.dtype, scale: float
) -> torch.Tensor:
    """[shape] of 0 (dropped) and `scale` (kept), each element kept with probability 1 - threshold/256."""
    n = shape.numel()
    draws = torch.randint(0, 2**62, (-(-n // _BYTES_PER_DRAW),), dtype=torch.int64, device=device)
    uniform = draws.view(torch.uint8).view(-1, 8)[:, :_BYTES_PER_DRAW].reshape(-1)[:n]
    return (uniform >= threshold).view(shape).to(dtype).mul_(scale)
