"""Joint fine-tuning of the text encoder by the recommender's own loss (`text.finetune`).

The frozen path reads a constant table of item text embeddings [N, T]. Fine-tuning keeps that
table (the `items.text` buffer: what validation, retrieval's full softmax and the export read) and,
at every step, re-encodes a seeded sample of the batch's target items *with gradient*, so the
loss (next-item softmax, ID-text alignment, conversion) reaches the encoder through those rows:

    table [N, T] (no gradient) --index_copy(rows, encode(rows))--> adaptor --> item side --> loss

Two modes, one data path. Each keeps, per item, the input of the first layer that trains:
- `top_layers` (the CPU default): the top `text.finetune_layers` transformer layers train; the
  lower layers are frozen, so their outputs are computed once per fit and cached, trimmed to each
  text's true length (a ragged [tokens, T] float32 tensor plus offsets: 2,000 synthetic items of
  ~14 tokens hold 43 MB; padding to max_length would hold 390 MB). A step and a refresh run only
  the top layers.
- `lora`: LoRA adapters (peft) of rank `text.lora_rank` on every Linear of every layer; the
  embeddings are frozen, so the cache is the embedding layer's output and a refresh re-encodes the
  whole catalogue through every layer.

The table is refreshed without gradient every `text.refresh_steps` steps and always at the end of
an epoch, before validation: the checkpoint kept for the best epoch then holds a table made by that
epoch's encoder, and the exported `text_encoder.onnx` (the fine-tuned transformer, LoRA merged)
reproduces the table's rows within float error. Between refreshes each step writes the rows it
re-encoded back into the table.

The encoder runs without its dropout (eval mode) while it trains: the batch's rows then get exactly
the vectors a refresh would give them, so a target is never scored against neighbours of another
noise draw; the small learning rate (`text.lr`) and the few trained weights are the regulariser.
Pooling is `scenerec.text.pool`, the frozen encoder's own, so frozen and fine-tuned vectors share
one definition.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from typing import Any

import torch
from torch import nn

from scenerec.config import TextConfig
from scenerec.errors import ConfigError
from scenerec.text import TextEncoder, pool

log = logging.getLogger(__name__)

# The split into cached lower layers and trained top layers is checked on this many catalogue texts.
_SPLIT_CHECK_ITEMS = 8
_SPLIT_TOLERANCE = 1e-5


def transformer_layers(model: nn.Module) -> nn.ModuleList | None:
    """The stack of transformer layers of a BERT-class model (`encoder.layer`), or None."""
    encoder = getattr(model, "encoder", None)
    layers = getattr(encoder, "layer", None)
    return layers if isinstance(layers, nn.ModuleList) and len(layers) > 0 else None


def check_finetune(config: TextConfig, encoder: TextEncoder) -> None:
    """Fail before any training when `config` asks for what `encoder` does not have (ConfigError)."""
    if not config.finetune:
        return
    layers = transformer_layers(encoder.module.model)
    if layers is None:
        raise ConfigError(
            f"config key 'text.finetune': the encoder {encoder.directory} has no transformer layers "
            "scenerec can train (expected a BERT-class model with encoder.layer: BERT, MiniLM, RoBERTa)"
        )
    if config.finetune_mode == "top_layers" and config.finetune_layers > len(layers):
        raise ConfigError(
            f"config key 'text.finetune_layers': expected at most {len(layers)} (the transformer layers "
            f"of {encoder.directory}), got {config.finetune_layers}"
        )


def _lora_targets(model: nn.Module, layers: nn.ModuleList) -> list[str]:
    """Qualified names of every Linear inside the transformer layers (not the unused pooler)."""
    inside = {id(m) for layer in layers for m in layer.modules() if isinstance(m, nn.Linear)}
    return [name for name, module in model.named_modules() if id(module) in inside]


class TextTuner(nn.Module):
    """A trainable copy of `encoder`'s transformer over one catalogue's texts (see the module doc).

    Args:
        encoder: The frozen encoder; its module is deep-copied, never changed.
        texts: The catalogue's texts, one per item index (what `scenerec.train` embeds).
        config: `text.*`: mode, layers or LoRA rank, items per step.
        seed: Seeds the choice of the items re-encoded at each step.
        device: Where the copy and its cache live.

    The cache is kept as plain tensors, not buffers: DistributedDataParallel would broadcast
    buffers from rank 0 at every step, and every rank computes the same cache itself.
    """

    def __init__(
        self,
        encoder: TextEncoder,
        texts: list[str],
        config: TextConfig,
        seed: int,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        check_finetune(config, encoder)
        self.config, self.pooling, self.normalize = config, encoder.pooling, encoder.normalize
        model = copy.deepcopy(encoder.module.model)
        for p in model.parameters():
            p.requires_grad_(False)
        layers = transformer_layers(model)
        assert layers is not None  # check_finetune
        self.peft: nn.Module | None = None
        if config.finetune_mode == "lora":
            from peft import LoraConfig, get_peft_model

            lora = LoraConfig(
                r=config.lora_rank,
                lora_alpha=config.lora_alpha,
                lora_dropout=0.0,  # eval mode throughout, see the module doc
                target_modules=_lora_targets(model, layers),
                bias="none",
            )
            self.peft = get_peft_model(model, lora)  # LoRA layers replace the Linears in `model`
            self.start = 0
        else:
            self.start = len(layers) - config.finetune_layers
            for p in layers[self.start :].parameters():
                p.requires_grad_(True)
        self.model = model.to(device).eval()
        self.hf_config: Any = model.config
        self.device = torch.device(device)
        self.generator = torch.Generator().manual_seed(seed)
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None
        self._cache_inputs(encoder, texts)
        self._check_split(encoder, texts)

    # ---- the cache: the input of the first trained layer, per item -------------------------
    @torch.no_grad()
    def _cache_inputs(self, encoder: TextEncoder, texts: list[str]) -> None:
        order = sorted(range(len(texts)), key=lambda i: (len(texts[i]), texts[i]))
        lengths = torch.zeros(len(texts), dtype=torch.long)
        pieces: dict[int, torch.Tensor] = {}
        for lo in range(0, len(order), encoder.batch_size):
            rows = order[lo : lo + encoder.batch_size]
            batch = {k: v.to(self.device) for k, v in encoder.tokenize([texts[i] for i in rows]).items()}
            hidden = self._lower(batch["input_ids"], batch["attention_mask"])
            for k, row in enumerate(rows):
                n = int(batch["attention_mask"][k].sum())
                lengths[row] = n
                pieces[row] = hidden[k, :n].clone()
        offsets = torch.zeros(len(texts) + 1, dtype=torch.long)
        offsets[1:] = torch.cumsum(lengths, 0)
        width = int(self.hf_config.hidden_size)
        flat = [pieces[i] for i in range(len(texts))] + [torch.zeros(1, width, device=self.device)]  # pad
        self.hidden = torch.cat(flat).float()  # [tokens + 1, T]
        self.offsets, self.lengths = offsets.to(self.device), lengths.to(self.device)  # [N + 1], [N]
        log.info(
            "text fine-tuning (%s): %d items, %d tokens cached at layer %d (%.0f MB)",
            self.config.finetune_mode,
            len(texts),
            int(lengths.sum()),
            self.start,
            self.hidden.numel() * 4 / 2**20,
        )

    def _mask(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        """The layers' attention mask, built as the model itself builds it (eager, sdpa: its choice)."""
        from transformers.masking_utils import create_bidirectional_mask

        return create_bidirectional_mask(
            config=self.hf_config, inputs_embeds=hidden, attention_mask=attention_mask
        )

    def _run(self, layers: Any, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = self._mask(hidden, attention_mask)
        for layer in layers:
            out = layer(hidden, mask)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    @property
    def layers(self) -> nn.ModuleList:
        layers = transformer_layers(self.model)
        assert layers is not None
        return layers

    def _lower(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Embeddings and the frozen layers below `start`: [B, L] ids -> [B, L, T] hidden states."""
        embeddings: Any = self.model.embeddings
        hidden = embeddings(input_ids=input_ids)
        return self._run(self.layers[: self.start], hidden, attention_mask)

    def _check_split(self, encoder: TextEncoder, texts: list[str]) -> None:
        """Cached lower layers + top layers must give the encoder's own vectors (before training)."""
        sample = texts[:_SPLIT_CHECK_ITEMS]
        if not sample:
            return
        batch = encoder.tokenize(sample)
        with torch.no_grad():
            expected = encoder.module(batch["input_ids"], batch["attention_mask"])
            got = self.encode(torch.arange(len(sample))).cpu()
        error = float((got - expected).abs().max())
        if error > _SPLIT_TOLERANCE:
            raise ConfigError(
                f"config key 'text.finetune': the encoder {encoder.directory} does not reproduce its "
                f"own vectors when its layers run one by one (max error {error:.1e}): it cannot be "
                "fine-tuned here"
            )

    # ---- encoding items --------------------------------------------------------------------
    def encode(self, rows: torch.Tensor) -> torch.Tensor:
        """[R] item indices -> [R, T] pooled vectors through the trained layers (with gradient
        unless called under no_grad)."""
        rows = rows.to(self.lengths.device)
        lengths = self.lengths[rows]
        position = torch.arange(int(lengths.max()), device=rows.device)
        valid = position[None, :] < lengths[:, None]  # [R, L] right-padded, as the tokenizer pads
        pad = self.hidden.shape[0] - 1
        index = torch.where(valid, self.offsets[rows][:, None] + position[None, :], pad)
        attention_mask = valid.long()
        hidden = self._run(self.layers[self.start :], self.hidden[index], attention_mask)
        return pool(hidden, attention_mask, self.pooling, self.normalize)

    @torch.no_grad()
    def table(self, batch_size: int = 64) -> torch.Tensor:
        """[N, T] every item's vector under the current weights (batched by length)."""
        n = len(self.lengths)
        order = torch.argsort(self.lengths, stable=True)
        out = torch.empty(n, self.hidden.shape[1], device=self.hidden.device)
        for lo in range(0, n, batch_size):
            rows = order[lo : lo + batch_size]
            out[rows] = self.encode(rows)
        return out

    def batch_table(self, table: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """`table` [N, T] with a seeded sample of `targets`' items re-encoded with gradient."""
        rows = targets.unique()
        if len(rows) > self.config.finetune_items:
            pick = torch.randperm(len(rows), generator=self.generator)[: self.config.finetune_items]
            rows = rows[pick.to(rows.device)].sort().values
        fresh = self.encode(rows).to(table.dtype)
        self._last = (rows, fresh.detach())
        return table.detach().index_copy(0, rows, fresh)

    @torch.no_grad()
    def write_back(self, table: torch.Tensor) -> None:
        """Put the rows the last step re-encoded into `table` (in place): fresher than the refresh's."""
        if self._last is not None:
            rows, fresh = self._last
            table.index_copy_(0, rows, fresh)
            self._last = None

    @torch.no_grad()
    def refresh(self, table: torch.Tensor) -> None:
        """Recompute every row of `table` (in place) with the current weights."""
        table.copy_(self.table())
        self._last = None

    # ---- weights ---------------------------------------------------------------------------
    def train(self, mode: bool = True) -> TextTuner:
        super().train(mode)
        self.model.eval()  # no dropout in the encoder, ever (see the module doc)
        return self

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """A copy of the trained tensors (the best epoch's checkpoint)."""
        return {n: p.detach().clone() for n, p in self.named_parameters() if p.requires_grad}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        params = dict(self.named_parameters())
        with torch.no_grad():
            for name, value in state.items():
                params[name].copy_(value)

    def export_model(self) -> nn.Module:
        """A plain transformer with the trained weights (LoRA merged into its Linears), on CPU."""
        if self.peft is not None:
            merged: nn.Module = copy.deepcopy(self.peft).merge_and_unload()  # type: ignore[operator]
        else:
            merged = copy.deepcopy(self.model)
        for p in merged.parameters():
            p.requires_grad_(False)
        return merged.cpu().eval()

    def tuned_encoder(self, encoder: TextEncoder) -> TextEncoder:
        """`encoder` carrying the fine-tuned transformer (what `text_encoder.onnx` exports)."""
        model, pretrained = self.export_model(), encoder.pretrained  # a warm start's encoder: tuned
        return pretrained.tuned(model, delta_digest(_delta(model, pretrained.module.model)))


# ---- the fine-tuned encoder as a delta of the pretrained one (checkpoint.pt, warm starts) --------
def _delta(model: nn.Module, pretrained: nn.Module) -> dict[str, torch.Tensor]:
    reference = pretrained.state_dict()
    return {
        name: value.detach().cpu().clone()
        for name, value in model.state_dict().items()
        if not torch.equal(value.cpu(), reference[name].cpu())
    }


def encoder_delta(tuned: TextEncoder, pretrained: TextEncoder) -> dict[str, torch.Tensor]:
    """The transformer tensors of `tuned` that differ from `pretrained`'s ({} for the same encoder):
    the top layers, or every LoRA-merged Linear. `checkpoint.pt` keeps them, so a warm start goes on
    from the fine-tuned encoder (`with_delta`)."""
    if tuned.module is pretrained.module:
        return {}
    return _delta(tuned.module.model, pretrained.module.model)


def delta_digest(delta: dict[str, torch.Tensor]) -> str:
    """sha256 of a delta's names and bytes: mixed into the tuned encoder's fingerprint."""
    digest = hashlib.sha256()
    for name, value in sorted(delta.items()):
        digest.update(name.encode())
        digest.update(value.numpy().tobytes())
    return digest.hexdigest()


def with_delta(pretrained: TextEncoder, delta: dict[str, torch.Tensor]) -> TextEncoder:
    """`pretrained` with `delta` (from `encoder_delta`) applied: the fine-tuned encoder again, with
    the same fingerprint. Raises ConfigError when the delta names tensors this encoder lacks."""
    if not delta:
        return pretrained
    model = copy.deepcopy(pretrained.module.model)
    state = model.state_dict()
    wrong = sorted(k for k, v in delta.items() if k not in state or state[k].shape != v.shape)
    if wrong:
        raise ConfigError(
            f"the fine-tuned text encoder's weights ({wrong[0]}, ...) do not fit the encoder "
            f"{pretrained.directory}: set text.encoder to the one the previous model was trained from"
        )
    model.load_state_dict({**state, **delta})
    for p in model.parameters():
        p.requires_grad_(False)
    return pretrained.tuned(model.eval(), delta_digest(delta))
