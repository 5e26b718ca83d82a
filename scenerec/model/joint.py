"""The joint model: score(u, i, s) = F_cf + lambda(s, pop(i)) * M_text + scene terms.

Every part is a dot product between a query-side and an item-side vector, so
- retrieval over the whole catalogue is one matrix product of the concatenated vectors [B, Q] x [Q, N];
- the score splits exactly into its collaborative, text and scene parts (the explanation);
- everything item-side is precomputed at export time; a request computes only the query side.

    F_cf    = <g_seq * W u_seq + g_set * u_set, e_i>      e_i: ID vector (generated from text if cold)
            + <g_tr * v_last, n_i>                        FPMC transition: last item -> next item
    M_text  = <W_t [u_seq; text profile], w_pop(i) t_i>  t_i: adapted frozen text embedding
    lambda  = softplus(theta_scene)                       learned per scene; w_pop per popularity bucket
    scene   = <W_s ctx, z_i> + b_i                        scene-specific item affinity and item bias
    item_item = w_ii(s) * sum_{j in history} B[j, i]     EASE's closed-form B (sparse), see item_item.py

The item-item part is the one that is not a dot product: retrieval adds it as a gather of the
history's B rows and a scatter-add, still one pass over the catalogue.

The conversion head (ESMM's CVR tower) scores p(conversion | interaction) from the same parts.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from scenerec.config import ModelConfig
from scenerec.model.dropout import Dropout
from scenerec.model.item_item import ItemItem, Neighbours, no_neighbours
from scenerec.model.towers import ContextTower, ItemTower, SequenceEncoder, causal_mean, masked_mean


class ItemSide(NamedTuple):
    ids: torch.Tensor  # [N, D]
    successor: torch.Tensor  # [N, Dt] each item as the next one after another (0 if cold)
    raw_text: torch.Tensor  # [N, D] adapted text vectors (what the history encoder reads)
    text: torch.Tensor  # [N, D], the same scaled by w_pop(i) (what the text score reads)
    scene: torch.Tensor  # [N, Ds]
    bias: torch.Tensor  # [N]

    def collaborative(self) -> torch.Tensor:
        """[N, D + Dt] what the collaborative query is scored against: ID and successor vectors."""
        return torch.cat([self.ids, self.successor], dim=-1)

    def vectors(self) -> torch.Tensor:
        """[N, Q] item retrieval vectors."""
        return torch.cat([self.ids, self.successor, self.text, self.scene, self.bias[:, None]], dim=-1)


class QuerySide(NamedTuple):
    cf: torch.Tensor  # [..., D + Dt] taste (sequence and set) and transition from the last item
    text: torch.Tensor  # [..., D], already scaled by lambda(scene)
    scene: torch.Tensor  # [..., Ds]
    context: torch.Tensor  # [..., Ds] context vector (for the conversion head)
    lam: torch.Tensor  # [...] lambda(scene)
    item_item: torch.Tensor  # [...] w_ii(scene), the weight of the item-item part

    def vectors(self) -> torch.Tensor:
        """[..., Q] query retrieval vectors (the trailing 1 multiplies the item bias)."""
        ones = torch.ones_like(self.lam)[..., None]
        return torch.cat([self.cf, self.text, self.scene, ones], dim=-1)


class JointModel(nn.Module):
    def __init__(
        self,
        config: ModelConfig,
        n_items: int,
        n_scenes: int,
        n_devices: int,
        text: torch.Tensor | None,
        popularity_bucket: torch.Tensor,
        cold: torch.Tensor,
        neighbours: Neighbours | None = None,
    ) -> None:
        super().__init__()
        self.config, self.n_items, self.n_scenes = config, n_items, n_scenes
        d, ds = config.dim, config.scene_dim
        self.items = ItemTower(config, text if config.use_text else None, popularity_bucket, cold)
        self.encoder = SequenceEncoder(config, n_scenes)
        self.context = ContextTower(config, n_scenes, n_devices)
        self.seq_projection = nn.Linear(d, d)
        self.text_query = nn.Linear(2 * d, d)
        inverse_softplus = math.log(math.expm1(config.lambda_init)) if config.lambda_init > 0 else -20.0
        self.lambda_scene = nn.Parameter(
            torch.full((n_scenes + 1,), inverse_softplus), requires_grad=config.learn_lambda
        )
        self.lambda_popularity = nn.Parameter(
            torch.zeros(config.popularity_buckets), requires_grad=config.learn_lambda
        )
        use_ii = config.use_item_item and neighbours is not None
        self.item_item = ItemItem(neighbours if use_ii and neighbours is not None else no_neighbours(n_items))
        # log w_ii per scene (set from the valid split before training: item_item.initial_weight)
        self.item_item_scene = nn.Parameter(torch.zeros(n_scenes + 1), requires_grad=use_ii)
        self.query_dim = 2 * d + config.transition_dim + ds + 1  # Q
        # reads cf (D + Dt), text (D) and context (Ds): the query's width without the bias slot
        self.conversion = nn.Sequential(nn.Linear(self.query_dim - 1, d), nn.GELU(), nn.Linear(d, 1))
        self.dropout = Dropout(config.dropout)

    # ---- item side -------------------------------------------------------------------------
    def item_side(
        self,
        drop: torch.Tensor | None = None,
        text_table: torch.Tensor | None = None,
        rows: torch.Tensor | None = None,
    ) -> ItemSide:
        """All item vectors; `drop` [N] marks items whose ID vector is replaced by the generated one;
        `text_table` [N, T] replaces the text embeddings for this call (joint fine-tuning); `rows`
        [R] computes those catalogue rows only (a sampled-softmax step: cost and memory follow the
        batch and its negatives, not the catalogue)."""
        text = self.items.text_vectors(text_table, rows)
        ids, successor, scene, bias = self.items.collaborative(text, drop, rows)
        bucket = self.items.popularity_bucket if rows is None else self.items.popularity_bucket[rows]
        weight = torch.exp(self.lambda_popularity)[bucket]
        return ItemSide(
            ids=ids, successor=successor, raw_text=text, text=text * weight[:, None], scene=scene, bias=bias
        )

    # ---- query side ------------------------------------------------------------------------
    def query_side(
        self,
        hist_items: torch.Tensor,
        hist_scenes: torch.Tensor,
        scene: torch.Tensor,
        device: torch.Tensor,
        hour: torch.Tensor,
        weekday: torch.Tensor,
        items: ItemSide | None = None,
        item_rows: torch.Tensor | None = None,
    ) -> QuerySide:
        """Query vectors after every history position ([B, L] context) or for the request ([B] context).

        With [B] context the result is for the last position only: shapes [B, ...] instead of [B, L, ...].
        `items` of some catalogue rows only (`item_side(rows=)`): `item_rows` [B, L] is where each
        history item is among them (the pad: len(items.ids)).
        """
        items = items if items is not None else self.item_side()
        per_request = scene.dim() == 1
        valid = hist_items < self.n_items
        zero = torch.zeros_like(items.ids[:1])  # the pad row N
        at = hist_items if item_rows is None else item_rows
        ids = torch.cat([items.ids, zero])[at]
        text = torch.cat([items.raw_text, zero])[at]
        # [B, L, D] after every position, or [B, D] after the last one (a request: less work)
        state = self.encoder(self.dropout(ids + text), hist_scenes, valid, last_only=per_request)
        mean = masked_mean if per_request else causal_mean
        as_set = mean(self.items.set_embedding(hist_items), valid)
        profile = mean(text, valid)
        seq = self.seq_projection(state)
        if not self.config.use_scene:
            scene = torch.zeros_like(scene)
            device, hour, weekday = (
                torch.zeros_like(device),
                torch.zeros_like(hour),
                torch.zeros_like(weekday),
            )
        ctx = self.context(scene, device, hour, weekday)
        # FPMC-style transition from the latest item (order-aware: off in the no_sequence ablation)
        # position t reads item t: [B, L, D], or the last item's row [B, D] for a request
        transition = self.items.transition(hist_items[:, -1] if per_request else hist_items)
        if not self.config.use_sequence:
            transition = torch.zeros_like(transition)
        if self.config.use_scene:
            g_seq, g_set, g_transition = self.context.gate(ctx, state)
            taste = g_seq * seq + (g_set * as_set if self.config.use_set else 0.0)
            cf = torch.cat([taste, g_transition * transition], dim=-1)
            scene_query = self.context.query(ctx)
        else:
            cf = torch.cat([seq + (as_set if self.config.use_set else 0.0), transition], dim=-1)
            scene_query = torch.zeros_like(ctx)
        lam = F.softplus(self.lambda_scene[scene])
        if not self.config.learn_lambda:
            lam = torch.full_like(lam, self.config.lambda_init)
        text_query = self.text_query(torch.cat([state, profile], dim=-1)) * lam[..., None]
        if not self.config.use_text:
            text_query = torch.zeros_like(text_query)
        item_item = torch.exp(self.item_item_scene[scene])
        if not self.item_item.active:
            item_item = torch.zeros_like(item_item)
        return QuerySide(cf=cf, text=text_query, scene=scene_query, context=ctx, lam=lam, item_item=item_item)

    # ---- scoring ---------------------------------------------------------------------------
    def retrieval_scores(
        self, query: QuerySide, item_vectors: torch.Tensor, hist_items: torch.Tensor
    ) -> torch.Tensor:
        """[B, N] the full score of every item for a request: one dot product plus the item-item part."""
        scores = query.vectors() @ item_vectors.T
        return scores + query.item_item[:, None] * self.item_item.scores(hist_items, per_request=True)

    def score_parts(
        self, query: QuerySide, items: ItemSide, candidates: torch.Tensor, hist_items: torch.Tensor
    ) -> torch.Tensor:
        """[B, C, 4] collaborative, text, scene and item-item parts of each candidate's score
        ([B, C] indices; `hist_items` [B, L] the request's history, pad N)."""
        cf = torch.einsum("bd,bcd->bc", query.cf, items.collaborative()[candidates])
        text = torch.einsum("bd,bcd->bc", query.text, items.text[candidates])
        scene = torch.einsum("bd,bcd->bc", query.scene, items.scene[candidates]) + items.bias[candidates]
        item_item = self.item_item.scores(hist_items, per_request=True).gather(1, candidates)
        return torch.stack([cf, text, scene, query.item_item[:, None] * item_item], dim=-1)

    def conversion_logit(self, query: QuerySide, items: ItemSide, candidates: torch.Tensor) -> torch.Tensor:
        """Logit of p(conversion | interaction); `candidates` has the query's leading shape + C."""
        lead = query.cf.dim() - 1
        expand = (slice(None),) * lead + (None,)
        features = torch.cat(
            [
                query.cf[expand] * items.collaborative()[candidates],
                query.text[expand] * items.raw_text[candidates],
                query.context[expand].expand(*candidates.shape, query.context.shape[-1]),
            ],
            dim=-1,
        )
        return self.conversion(features)[..., 0]
