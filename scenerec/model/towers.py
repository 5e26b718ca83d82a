"""The towers (arches) the joint model is built from. See the package docstring for the notation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from scenerec.config import ModelConfig
from scenerec.model.dropout import Dropout


class TextAdaptor(nn.Module):
    """Frozen text embeddings [N, T] -> item text vectors [N, D].

    UniSRec's adaptor: parametric whitening (x - b) W_k per expert, mixed by a softmax gate over the
    raw embedding, so a frozen encoder's geometry is re-shaped for this catalogue cheaply.
    """

    def __init__(self, text_dim: int, dim: int, experts: int, dropout: float) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(experts, text_dim))
        self.experts = nn.Parameter(torch.empty(experts, text_dim, dim))
        nn.init.xavier_uniform_(self.experts)
        self.gate = nn.Linear(text_dim, experts, bias=False)
        self.dropout = Dropout(dropout)

    def forward(self, text: torch.Tensor) -> torch.Tensor:  # [N, T] -> [N, D]
        whitened = torch.einsum(
            "nkt,ktd->nkd", self.dropout(text)[:, None, :] - self.bias[None], self.experts
        )
        weights = torch.softmax(self.gate(text), dim=-1)  # [N, K]
        return (weights[:, :, None] * whitened).sum(dim=1)


class ItemTower(nn.Module):
    """Every item-side vector: ID embedding, adapted text, set embedding, scene-item terms, bias.

    Items never seen in training (`cold` buffer) take the ID vector generated from their text, so
    the collaborative score of a brand-new item is defined (and trained for, by ID dropout).
    """

    popularity_bucket: torch.Tensor
    cold: torch.Tensor
    text: torch.Tensor

    def __init__(
        self,
        config: ModelConfig,
        text: torch.Tensor | None,
        popularity_bucket: torch.Tensor,
        cold: torch.Tensor,
    ) -> None:
        super().__init__()
        n, d = len(popularity_bucket), config.dim
        self.n_items, self.use_text = n, config.use_text and text is not None
        self.id_embedding = nn.Embedding(n + 1, d, padding_idx=n)  # row N is the history pad
        nn.init.normal_(self.id_embedding.weight, std=0.05)
        with torch.no_grad():
            self.id_embedding.weight[n].zero_()
        self.set_embedding = nn.Embedding(n + 1, d, padding_idx=n)
        nn.init.normal_(self.set_embedding.weight, std=0.05)
        with torch.no_grad():
            self.set_embedding.weight[n].zero_()
        # FPMC's first-order transition: the last item's "what comes next" vector (query side,
        # zero at init) against each item's "as a next item" vector, in a space of their own.
        dt = config.transition_dim
        self.transition = nn.Embedding(n + 1, dt, padding_idx=n)
        nn.init.zeros_(self.transition.weight)
        self.successor = nn.Parameter(torch.empty(n, dt))
        nn.init.normal_(self.successor, std=0.05)
        self.scene_item = nn.Parameter(torch.zeros(n, config.scene_dim))
        self.bias = nn.Parameter(torch.zeros(n))
        self.register_buffer("popularity_bucket", popularity_bucket.long(), persistent=True)
        self.register_buffer("cold", cold.bool(), persistent=True)
        if self.use_text:
            assert text is not None
            self.register_buffer("text", text.float(), persistent=True)
            self.adaptor = TextAdaptor(text.shape[1], d, config.text_experts, config.dropout)
            # text -> (ID vector, scene-item vector, bias) of an item the model has not seen interacted with
            self.generator = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d + config.scene_dim + 1))

    def text_vectors(
        self, table: torch.Tensor | None = None, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        """[N, D] adapted text vectors (zeros without text). `table` [N, T] replaces the `text`
        buffer for one call (joint fine-tuning: some rows re-encoded with gradient); `rows` [R]
        keeps those catalogue rows only ([R, D]: a sampled-softmax step at 10^6 items)."""
        if not self.use_text:
            n = self.n_items if rows is None else len(rows)
            return self.id_embedding.weight.new_zeros(n, self.id_embedding.embedding_dim)
        source = self.text if table is None else table
        return self.adaptor(source if rows is None else source[rows])

    def generated(self, text_vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """ID vector [.., D], scene-item vector [.., Ds] and bias [..] generated from text (cold items)."""
        out = self.generator(text_vectors)
        d, ds = self.id_embedding.embedding_dim, self.scene_item.shape[1]
        return out[..., :d], out[..., d : d + ds], out[..., d + ds]

    def generated_ids(self, text_vectors: torch.Tensor) -> torch.Tensor:
        return self.generated(text_vectors)[0]

    def collaborative(
        self, text_vectors: torch.Tensor, drop: torch.Tensor | None = None, rows: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Effective ID vectors [N, D], successor vectors [N, Dt], scene-item vectors [N, Ds] and
        biases [N] (of the catalogue rows `rows` only, when given: `text_vectors` are theirs).

        Learned for items seen in training; generated from text for cold (or ID-dropped) items,
        whose learned rows never received a positive signal. A cold item follows nothing the
        model knows of: its successor vector is zero (text says nothing about which item it follows).
        """
        learned: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
        successor: torch.Tensor
        if rows is None:
            learned = (self.id_embedding.weight[: self.n_items], self.scene_item, self.bias)
            successor, replace = self.successor, self.cold if drop is None else self.cold | drop
        else:
            learned = (self.id_embedding.weight[rows], self.scene_item[rows], self.bias[rows])
            successor = self.successor[rows]
            replace = self.cold[rows] if drop is None else (self.cold | drop)[rows]
        successor = successor.masked_fill(replace[:, None], 0.0)
        if not self.use_text:
            return learned[0], successor, learned[1], learned[2]
        generated = self.generated(text_vectors)
        ids = torch.where(replace[:, None], generated[0], learned[0])
        scene = torch.where(replace[:, None], generated[1], learned[1])
        return ids, successor, scene, torch.where(replace, generated[2], learned[2])


class CausalBlock(nn.Module):
    """Pre-norm self-attention + feed-forward block with a causal mask (SASRec; pre-norm as eSASRec)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), Dropout(dropout), nn.Linear(2 * dim, dim))
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """[B, L, D], [B, L, L] -> [B, L, D]; `last_only`: the last position's output [B, 1, D] only
        (a request needs no other: the serving graph skips the rest of the last block's work)."""
        b, length, d = x.shape
        q, k, v = (
            self.qkv(self.norm1(x)).view(b, length, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        )
        if last_only:
            q, x, allowed = q[:, :, -1:], x[:, -1:], allowed[:, -1:]
        attn = (q @ k.transpose(-1, -2)) / (d // self.heads) ** 0.5  # [B, H, Lq, L]
        attn = attn.masked_fill(~allowed[:, None], float("-inf"))
        mixed = (self.dropout(torch.softmax(attn, dim=-1)) @ v).transpose(1, 2).reshape(b, q.shape[2], d)
        x = x + self.dropout(self.out(mixed))
        return x + self.dropout(self.ff(self.norm2(x)))


class SequenceEncoder(nn.Module):
    """History [B, L, D] -> state after each position [B, L, D], reading in order or as a running mean."""

    def __init__(self, config: ModelConfig, n_scenes: int) -> None:
        super().__init__()
        self.use_sequence = config.use_sequence
        self.position = nn.Parameter(torch.zeros(config.max_history, config.dim))
        nn.init.normal_(self.position, std=0.02)
        self.history_scene = nn.Embedding(n_scenes + 1, config.dim, padding_idx=n_scenes)
        nn.init.normal_(self.history_scene.weight, std=0.02)
        self.blocks = nn.ModuleList(
            CausalBlock(config.dim, config.heads, config.dropout) for _ in range(config.layers)
        )
        self.norm = nn.LayerNorm(config.dim)
        self.dropout = Dropout(config.dropout)
        self.use_scene = config.use_scene

    def forward(
        self, items: torch.Tensor, scenes: torch.Tensor, valid: torch.Tensor, last_only: bool = False
    ) -> torch.Tensor:
        """`last_only`: the state after the last position [B, D] (a request), computed without the
        other positions' outputs of the last block; equal to `forward(...)[:, -1]`."""
        if not self.use_sequence:
            return masked_mean(items, valid) if last_only else causal_mean(items, valid)
        x = items + self.position[-items.shape[1] :]
        if self.use_scene:
            x = x + self.history_scene(scenes)
        x = self.dropout(x) * valid[:, :, None]
        length = items.shape[1]
        position = torch.arange(length, device=items.device)  # arange comparisons export cleanly to ONNX
        causal = position[None, :] <= position[:, None]
        eye = position[None, :] == position[:, None]
        allowed = causal[None] & (valid[:, None, :] | eye[None])  # a pad position may attend to itself
        for n, block in enumerate(self.blocks):
            x = block(x, allowed, last_only=last_only and n == len(self.blocks) - 1)
        if last_only:
            x = x[:, -1]  # [B, 1, D] from the last block, or [B, L, D] without blocks
        return self.norm(x)


class ContextTower(nn.Module):
    """Scene, device, hour bucket and weekday -> context vector [.., Ds] and PEPNet-style gates."""

    def __init__(self, config: ModelConfig, n_scenes: int, n_devices: int) -> None:
        super().__init__()
        ds = config.scene_dim
        self.scene = nn.Embedding(n_scenes + 1, ds)
        self.device = nn.Embedding(n_devices + 1, ds)
        self.hour = nn.Embedding(config.hour_buckets, ds)
        self.weekday = nn.Embedding(7, ds)
        for table in (self.scene, self.device, self.hour, self.weekday):
            nn.init.normal_(table.weight, std=0.05)
        self.mix = nn.Sequential(nn.Linear(4 * ds, ds), nn.GELU())
        # Gate networks: context + (detached) user state -> per-dimension weights in (0, 2), init 1.
        self.gate_hidden = nn.Sequential(nn.Linear(ds + config.dim, config.dim), nn.GELU())
        self.widths = [config.dim, config.dim, config.transition_dim]
        self.gate_out = nn.Linear(config.dim, sum(self.widths))
        nn.init.zeros_(self.gate_out.weight)
        nn.init.zeros_(self.gate_out.bias)
        self.query = nn.Linear(ds, ds)

    def forward(
        self, scene: torch.Tensor, device: torch.Tensor, hour: torch.Tensor, weekday: torch.Tensor
    ) -> torch.Tensor:
        parts = [self.scene(scene), self.device(device), self.hour(hour), self.weekday(weekday)]
        return self.mix(torch.cat(parts, dim=-1))

    def gate(
        self, context: torch.Tensor, state: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Gates in (0, 2) over D, D and Dt for the sequence, set and transition views (PEPNet's EPNet
        idea: the scene re-weights the shared representation), from context and the detached state."""
        hidden = self.gate_hidden(torch.cat([context, state.detach()], dim=-1))
        seq, as_set, transition = (2 * torch.sigmoid(self.gate_out(hidden))).split(self.widths, dim=-1)
        return seq, as_set, transition


def causal_mean(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Running mean over valid positions [B, L, D] (position t averages positions <= t)."""
    weights = valid.to(x.dtype)[:, :, None]
    return torch.cumsum(x * weights, dim=1) / torch.cumsum(weights, dim=1).clamp(min=1.0)


def masked_mean(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over valid positions [B, L, D] -> [B, D]: `causal_mean(x, valid)[:, -1]` in one reduction."""
    weights = valid.to(x.dtype)[:, :, None]
    return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def l2norm(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1)
