"""Warm start: a new model begins where a previous one ended, on a newer log and a larger catalogue.

`scenerec train --warm-start MODEL_DIR` reads MODEL_DIR's `checkpoint.pt` (its weights, without
the tables a fit rebuilds) and `id_maps/`, and copies every weight into the fresh model:
- tensors with one row per item (ID, set, transition, successor, scene affinity, bias) row by item
  id; a pad row to the pad row; an item new to the catalogue keeps the row its text generates
  (the cold-start generator's vector for its ID row), so nothing is relearned from zero and new
  items start from their text;
- tensors with one row per scene or device, row by id (a new scene or device keeps its fresh row);
- everything else (towers, attention blocks, the text adaptor) as it is: the shapes must agree,
  so the two models' `model.*` config must too (a mismatch is a ConfigError naming the key).
Not copied: what the fit computes from the new data (popularity buckets, cold flags, text
embeddings, the item-item B, refitted on the new rows).

A model whose text encoder was fine-tuned (`text.finetune`) also keeps the encoder's tensors that
differ from the pretrained one (`text_encoder.*` keys); a warm start embeds the catalogue with that
encoder (`WarmStart.encoder`), so the adaptor reads the vectors it was trained on and new items
start from them, and a fine-tuned run goes on from there.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from scenerec.errors import ConfigError

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
# state-dict keys with one row per item: (key, rows beyond the catalogue: 1 for the pad row)
ITEM_ROWS = {
    "items.id_embedding.weight": 1,
    "items.set_embedding.weight": 1,
    "items.transition.weight": 1,
    "items.successor": 0,
    "items.scene_item": 0,
    "items.bias": 0,
}
SCENE_ROWS = {
    "lambda_scene": 1,
    "item_item_scene": 1,
    "encoder.history_scene.weight": 1,
    "context.scene.weight": 1,
}
DEVICE_ROWS = {"context.device.weight": 1}
REBUILT = ("items.popularity_bucket", "items.cold", "items.text", "item_item.")
TEXT_ENCODER = "text_encoder."  # prefix of the fine-tuned encoder's tensors (not the model's)


def checkpoint_state(
    model: torch.nn.Module, text_encoder: dict[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """What `checkpoint.pt` holds: the weights, without what a fit rebuilds from its data, and the
    fine-tuned text encoder's delta (`scenerec.model.finetune.encoder_delta`; none when frozen)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items() if not k.startswith(REBUILT)}
    return {**state, **{TEXT_ENCODER + k: v for k, v in (text_encoder or {}).items()}}


@dataclass(frozen=True)
class WarmStart:
    """A previous model's weights and the ids their rows belong to."""

    state: dict[str, torch.Tensor]
    items: list[str]
    scenes: list[str]
    devices: list[str]
    model_config: dict[str, Any]
    source: Path

    @classmethod
    def load(cls, model_dir: str | Path) -> WarmStart:
        model_dir = Path(model_dir)
        path = model_dir / CHECKPOINT
        if not path.is_file():
            raise ConfigError(
                f"--warm-start {model_dir}: no {CHECKPOINT} (a model trained by this version has one)"
            )
        state = torch.load(path, map_location="cpu", weights_only=True)
        maps = {}
        for name in ("items", "scenes", "devices"):
            maps[name] = [str(v) for v in json.loads((model_dir / "id_maps" / f"{name}.json").read_text())]
        manifest = json.loads((model_dir / "manifest.json").read_text())
        return cls(
            state, maps["items"], maps["scenes"], maps["devices"], manifest["config"]["model"], model_dir
        )

    def encoder(self, pretrained: Any) -> Any:
        """The text encoder the previous model shipped: `pretrained` (a TextEncoder) with its
        fine-tuned delta, or `pretrained` itself when that model's encoder was frozen."""
        from scenerec.model.finetune import with_delta

        delta = {k[len(TEXT_ENCODER) :]: v for k, v in self.state.items() if k.startswith(TEXT_ENCODER)}
        return with_delta(pretrained, delta)

    def check_config(self, model_config: dict[str, Any]) -> None:
        """The shapes depend on the model config: the two must agree on every key."""
        different = sorted(k for k in model_config if self.model_config.get(k) != model_config[k])
        shaped = [
            k for k in different if k not in ("dropout", "id_dropout", "use_item_item", "item_item_l2s")
        ]
        if shaped:
            key = shaped[0]
            raise ConfigError(
                f"--warm-start {self.source}: model.{key} is {model_config[key]!r} here and "
                f"{self.model_config.get(key)!r} in the previous model (set it back, or train from scratch)"
            )

    def apply(self, model: Any, items: list[str], scenes: list[str], devices: list[str]) -> dict[str, int]:
        """Copy the weights into `model` (a fresh JointModel of the new catalogue); counts back."""
        target = model.state_dict()
        maps = {
            **{k: (self.items, items, pad) for k, pad in ITEM_ROWS.items()},
            **{k: (self.scenes, scenes, pad) for k, pad in SCENE_ROWS.items()},
            **{k: (self.devices, devices, pad) for k, pad in DEVICE_ROWS.items()},
        }
        with torch.no_grad():
            for key, value in self.state.items():
                if key not in target:
                    continue
                if key in maps:
                    old_ids, new_ids, pad = maps[key]
                    _copy_rows(target[key], value, old_ids, new_ids, pad)
                elif target[key].shape == value.shape:
                    target[key].copy_(value)
                else:
                    raise ConfigError(
                        f"--warm-start {self.source}: {key} has shape {tuple(value.shape)} there and "
                        f"{tuple(target[key].shape)} here"
                    )
            old = {item: k for k, item in enumerate(self.items)}
            new_rows = torch.tensor([k for k, item in enumerate(items) if item not in old], dtype=torch.long)
            if len(new_rows) and model.config.use_text:  # new items start from their text
                generated = model.items.generated_ids(model.items.text_vectors()[new_rows])
                model.items.id_embedding.weight[new_rows] = generated
        kept = len(items) - len(new_rows)
        log.info(
            "warm start from %s: %d items kept, %d new (from their text)", self.source, kept, len(new_rows)
        )
        return {"items_kept": kept, "items_new": len(new_rows)}


def _copy_rows(
    target: torch.Tensor, source: torch.Tensor, old_ids: list[str], new_ids: list[str], pad: int
) -> None:
    """target[row of id] = source[row of id] for every id in both; pad rows (after the ids) likewise."""
    old = {value: k for k, value in enumerate(old_ids)}
    pairs = [(k, old[value]) for k, value in enumerate(new_ids) if value in old]
    if pairs:
        to, frm = (torch.tensor(p, dtype=torch.long) for p in zip(*pairs, strict=True))
        target[to] = source[frm]
    for extra in range(pad):
        target[len(new_ids) + extra] = source[len(old_ids) + extra]
