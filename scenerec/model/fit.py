"""Fitting one joint model: seeded, early-stopped on valid NDCG@10, best checkpoint kept."""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from scenerec.config import Config
from scenerec.data import schema as c
from scenerec.data.dataset import ITEM_IDX, Dataset
from scenerec.data.split import EvalCases
from scenerec.distributed import from_rank_zero, rank_and_world
from scenerec.evaluate import evaluate
from scenerec.model.calibrate import calibrate_item_item, calibrate_lambda
from scenerec.model.item_item import (
    ItemItem,
    Neighbours,
    choose_l2,
    cross_fitted_neighbours,
    ease_neighbours,
    initial_weight,
    rows_with_valid,
)
from scenerec.model.joint import JointModel
from scenerec.model.losses import alignment_infonce, history_pairs, sampled_softmax, window_softmax
from scenerec.model.scorer import TorchScorer
from scenerec.model.sequences import Windows, build_windows
from scenerec.model.warm_start import WarmStart

if TYPE_CHECKING:  # transformers (via scenerec.text) is imported only when fine-tuning
    from scenerec.model.finetune import TextTuner
    from scenerec.text import TextEncoder

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    model: JointModel
    best_epoch: int
    best_valid: dict[str, float]
    epochs: list[dict[str, float | None]] = field(default_factory=list)
    seconds: float = 0.0
    samples_per_second: float = 0.0
    device: str = "cpu"
    lambda_scale: dict[str, float] = field(default_factory=dict)  # per scene, chosen on valid
    item_item: dict[str, Any] = field(default_factory=dict)  # B's L2, K, initial weight, valid factors
    warm_start: dict[str, int] = field(default_factory=dict)  # items kept / new, when warm-started
    # joint fine-tuning (text.finetune): the encoder as trained (what text_encoder.onnx exports) and
    # the catalogue's text table it made (the model's `items.text`); None for a frozen encoder
    text_encoder: TextEncoder | None = None
    text: torch.Tensor | None = None


def resolve_device(requested: str) -> torch.device:
    """The torch device for "cpu", "cuda" or "auto"; a CUDA request without a GPU falls back loudly."""
    if requested not in ("cpu", "cuda", "auto"):
        raise ValueError(f"train.device: expected cpu, cuda or auto, got {requested!r}")
    if requested == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if requested == "cuda":
        log.warning("train.device=cuda requested but no CUDA device is available: training on CPU")
    return torch.device("cpu")


def item_statistics(
    rows: pd.DataFrame, n_items: int, buckets: int
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Popularity bucket [N], cold mask [N] (never in training) and counts, from the training rows."""
    counts = np.bincount(rows[ITEM_IDX].to_numpy(), minlength=n_items)
    warm = counts > 0
    quantiles = np.linspace(0, 1, buckets + 1)[1:-1]
    edges: np.ndarray = np.quantile(np.log1p(counts[warm]), quantiles) if warm.any() else np.zeros(0)
    bucket = np.where(warm, np.searchsorted(edges, np.log1p(counts), side="right"), 0)
    return torch.as_tensor(bucket), torch.as_tensor(~warm), counts


def build_model(
    dataset: Dataset,
    rows: pd.DataFrame,
    config: Config,
    text: torch.Tensor | None,
    neighbours: Neighbours | None = None,
) -> JointModel:
    """A fresh model for this catalogue, with item statistics from the training rows."""
    bucket, cold, _ = item_statistics(rows, dataset.vocab.n_items, config.model.popularity_buckets)
    return JointModel(
        config.model,
        dataset.vocab.n_items,
        len(dataset.vocab.scenes),
        len(dataset.vocab.devices),
        text,
        bucket,
        cold,
        neighbours,
    )


def item_item_neighbours(
    dataset: Dataset, train_rows: pd.DataFrame, valid_cases: EvalCases, config: Config
) -> Neighbours | None:
    """EASE's sparse B for the model's item-item part (L2 chosen on valid), or None when it is off."""
    mc, n_items = config.model, dataset.vocab.n_items
    if not mc.use_item_item:
        return None
    if n_items > mc.item_item_max_items:
        log.warning(
            "item-item part off: %d items exceed model.item_item_max_items=%d (B needs a dense inverse)",
            n_items,
            mc.item_item_max_items,
        )
        return None
    return choose_l2(
        train_rows,
        valid_cases,
        n_items,
        mc.item_item_l2s,
        mc.item_item_neighbors,
        mc.max_history,
        config.eval,
        dataset.item_categories(),
    )


def fit(
    dataset: Dataset,
    train_rows: pd.DataFrame,
    valid_cases: EvalCases,
    config: Config,
    text: torch.Tensor | None,
    desc: str = "training",
    warm: WarmStart | None = None,
    encoder: TextEncoder | None = None,
) -> FitResult:
    """Train on `train_rows`, early-stop on `valid_cases`; returns the best model (in eval mode).
    `warm`: start from a previous model's weights instead of a fresh initialisation.
    `encoder`: the frozen text encoder `text` was made with; with `text.finetune` a copy of it is
    trained with the model (`scenerec.model.finetune`), else it is not read.

    Deterministic on CPU: torch's deterministic algorithms are on while fitting (some CPU backward
    kernels accumulate in thread order otherwise), then restored.
    """
    previous = torch.are_deterministic_algorithms_enabled()
    previous_fill = torch.utils.deterministic.fill_uninitialized_memory  # type: ignore[attr-defined]
    torch.use_deterministic_algorithms(True, warn_only=True)
    # deterministic mode also fills every new uninitialised tensor with NaN (a debugging aid that
    # cost ~30% of a training step here); no result reads uninitialised memory, so it stays off
    torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]
    try:
        return _fit(dataset, train_rows, valid_cases, config, text, desc, warm, encoder)
    finally:
        torch.use_deterministic_algorithms(previous)
        torch.utils.deterministic.fill_uninitialized_memory = previous_fill  # type: ignore[attr-defined]


def _fit(
    dataset: Dataset,
    train_rows: pd.DataFrame,
    valid_cases: EvalCases,
    config: Config,
    text: torch.Tensor | None,
    desc: str = "training",
    warm: WarmStart | None = None,
    encoder: TextEncoder | None = None,
) -> FitResult:
    tc, mc = config.train, config.model
    torch.manual_seed(tc.seed)
    rng = np.random.default_rng(tc.seed)
    generator = torch.Generator().manual_seed(tc.seed)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    device = resolve_device(tc.device)
    n_items, n_scenes = dataset.vocab.n_items, len(dataset.vocab.scenes)
    conversions = dataset.conversions(config.data)[train_rows.index.to_numpy()]
    windows = build_windows(train_rows, conversions, mc.max_history, n_items, n_scenes, mc.hour_buckets)
    rank, world = rank_and_world()
    batch_size = max(1, min(tc.batch_size, -(-len(windows) // max(tc.min_steps_per_epoch, 1))))
    if world > 1:  # equal shards (every rank takes as many steps) and the same global batch size
        per_rank = len(windows) // world
        shard = np.random.default_rng(tc.seed).permutation(len(windows))[
            rank * per_rank : (rank + 1) * per_rank
        ]
        windows = windows.select(np.sort(shard))
        batch_size = max(1, batch_size // world)
    use_conversion = 0.0 < conversions.mean() < 1.0 and tc.conversion_weight > 0
    neighbours = item_item_neighbours(dataset, train_rows, valid_cases, config)
    model = build_model(dataset, train_rows, config, text, neighbours).to(device)
    tuner: TextTuner | None = None
    if config.text.finetune and model.items.use_text:
        if encoder is None:
            raise ValueError("fit: text.finetune is on but no text encoder was given (fit(..., encoder=))")
        from scenerec.model.finetune import TextTuner

        texts = dataset.items[c.TEXT].fillna("").astype(str).tolist()  # what scenerec.train embeds
        tuner = TextTuner(encoder, texts, config.text, tc.seed, device)
        # refreshed in place from now on: never the caller's `text`, which other fits read frozen
        model.items.text = model.items.text.clone()
    warm_counts: dict[str, int] = {}
    if warm is not None:
        vocab = dataset.vocab
        warm_counts = warm.apply(
            model,
            [str(i) for i in vocab.items],
            [str(s) for s in vocab.scenes],
            [str(d) for d in vocab.devices],
        )
    result_item_item: dict[str, Any] = {}
    training_item_item: TrainingItemItem | None = None
    if neighbours is not None:
        w0 = initial_weight(neighbours, valid_cases, mc.max_history)
        if warm is None:  # a warm start keeps the weights it learned
            with torch.no_grad():
                model.item_item_scene.fill_(float(np.log(w0)))
        result_item_item = {
            "l2": neighbours.l2,
            "neighbors": int(neighbours.columns.shape[1]),
            "initial_weight": w0,
            "folds": max(mc.item_item_folds, 1),
        }
        if mc.item_item_folds >= 2:
            training_item_item = TrainingItemItem.cross_fitted(
                train_rows, n_items, len(dataset.vocab.users), neighbours, mc, tc.seed, device
            )
    _, _, counts = item_statistics(train_rows, n_items, mc.popularity_buckets)
    popularity = torch.as_tensor(counts / max(counts.sum(), 1), dtype=torch.float32, device=device)
    sampled = tc.loss == "sampled" or (tc.loss == "auto" and n_items > tc.full_softmax_max_items)
    lr, patience = size_recipe(tc, len(train_rows), warm is not None)
    log.info("%s: %d training rows: lr %g, patience %d", desc, len(train_rows), lr, patience)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=tc.weight_decay
    )
    if tuner is not None:  # the encoder learns at its own, lower rate
        optimizer.add_param_group({"params": tuner.trainable(), "lr": config.text.lr})
    loss_module = _Loss(model, tc, mc, sampled, popularity, use_conversion, training_item_item, tuner)
    step: torch.nn.Module = loss_module
    if world > 1:
        step = torch.nn.parallel.DistributedDataParallel(loss_module, find_unused_parameters=True)
    result = FitResult(
        model=model,
        best_epoch=-1,
        best_valid={},
        device=str(device),
        item_item=result_item_item,
        warm_start=warm_counts,
    )
    best_state: dict[str, Any] | None = None
    best_text_state: dict[str, torch.Tensor] | None = None
    started, targets_seen, stale, steps = time.perf_counter(), 0, 0, 0
    curve: list[float] = []
    best_smoothed = -1.0
    metric = config.eval.selection_metric
    min_epochs = tc.min_epochs

    def validate() -> dict[str, float]:
        scorer = TorchScorer(model, len(dataset.vocab.devices))
        found = evaluate(
            scorer, valid_cases, n_items, config.eval, dataset.item_categories(), desc=f"{desc} valid"
        )
        return dict(found["metrics"])

    if warm is not None:  # the starting weights are a checkpoint too: epoch 0
        min_epochs = 0
        model.eval()
        valid = validate()
        result.epochs.append({"epoch": 0, "loss": None, metric: valid[metric], "train_seconds": 0.0})
        log.info("%s epoch 0 (warm start) valid %s %.4f", desc, metric, valid[metric])
        result.best_epoch, result.best_valid = 0, valid
        best_state = copy.deepcopy(model.state_dict())
        best_text_state = tuner.trainable_state() if tuner is not None else None
        curve.append(from_rank_zero(valid[metric]))
        best_smoothed = curve[0]
    for epoch in range(tc.epochs):
        model.train()
        losses = []
        epoch_start = time.perf_counter()
        batches = _length_bucketed_batches(windows, batch_size, rng)
        if tc.steps_per_epoch:  # a large log: validate every steps_per_epoch steps (a random subset)
            batches = batches[: tc.steps_per_epoch]
        for rows in tqdm(batches, desc=f"{desc} epoch {epoch + 1}", unit="batch", leave=False, disable=None):
            batch = windows.select(rows)
            loss, n_targets = _step(step, model, batch, device, mc, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            if tuner is not None:
                torch.nn.utils.clip_grad_norm_(tuner.trainable(), 1.0)
            optimizer.step()
            losses.append(loss.item())
            targets_seen += n_targets
            steps += 1
            if tuner is not None:
                tuner.write_back(model.items.text)
                if config.text.refresh_steps and steps % config.text.refresh_steps == 0:
                    tuner.refresh(model.items.text)
        if tuner is not None:  # validation and the epoch's checkpoint see the epoch's encoder
            tuner.refresh(model.items.text)
        train_seconds = time.perf_counter() - epoch_start
        model.eval()
        valid = validate()
        result.epochs.append(
            {
                "epoch": epoch + 1,
                "loss": float(np.mean(losses)),
                metric: valid[metric],
                "train_seconds": train_seconds,
                "steps": len(losses),
            }
        )
        log.info(
            "%s epoch %d loss %.4f valid %s %.4f", desc, epoch + 1, np.mean(losses), metric, valid[metric]
        )
        value = from_rank_zero(valid[metric])  # every rank decides alike
        if value > result.best_valid.get(metric, -1.0):
            result.best_epoch, result.best_valid = epoch + 1, valid
            best_state = copy.deepcopy(model.state_dict())
            best_text_state = tuner.trainable_state() if tuner is not None else None
        curve.append(value)
        smoothed = float(np.mean(curve[-max(tc.smoothing, 1) :]))
        stale = 0 if smoothed > best_smoothed else stale + 1
        best_smoothed = max(best_smoothed, smoothed)
        if stale >= patience and epoch + 1 >= min_epochs:
            break
    assert best_state is not None
    model.load_state_dict(best_state)  # with the text table the best epoch's encoder made
    model.eval()
    if tuner is not None and best_text_state is not None:
        tuner.load_trainable_state(best_text_state)
        assert encoder is not None
        result.text_encoder = tuner.tuned_encoder(encoder)
        result.text = model.items.text.detach().cpu().clone()
    if mc.use_text and mc.learn_lambda and tc.lambda_scales:
        result.lambda_scale, result.best_valid = calibrate_lambda(
            model, dataset, valid_cases, config, result.best_valid, desc
        )
    if neighbours is not None:
        if tc.item_item_scales:
            result.item_item["valid_scale"], result.best_valid = calibrate_item_item(
                model, dataset, valid_cases, config, result.best_valid, desc
            )
        # everything is chosen: B is refitted on train + valid, as the baselines are before the test
        model.item_item.load(
            ease_neighbours(
                rows_with_valid(train_rows, valid_cases), n_items, neighbours.l2, mc.item_item_neighbors
            )
        )
    result.seconds = time.perf_counter() - started
    train_total = sum(float(e["train_seconds"] or 0.0) for e in result.epochs)
    result.samples_per_second = targets_seen / max(train_total, 1e-9)
    return result


def size_recipe(tc: Any, rows: int, warm: bool) -> tuple[float, int]:
    """(learning rate, patience) for `rows` training rows: the large-data values from
    `train.large_data_interactions` rows up (from scratch only), else `train.lr` and `train.patience`;
    a warm start takes lr * warm_lr_scale."""
    if warm:
        return tc.lr * tc.warm_lr_scale, tc.patience
    if 0 < tc.large_data_interactions <= rows:
        return tc.large_data_lr, tc.large_data_patience
    return tc.lr, tc.patience


def _length_bucketed_batches(windows: Windows, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled batches of windows of similar length, so little compute is spent on padding.

    Windows are shuffled, sorted by length within pools of 32 batches, cut into batches, and the
    batches shuffled again: the usual bucketing of sequence models.
    """
    lengths = (windows.targets >= 0).sum(axis=1)
    order = rng.permutation(len(windows))
    pool = batch_size * 32
    batches: list[np.ndarray] = []
    for lo in range(0, len(order), pool):
        chunk = order[lo : lo + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[k : k + batch_size] for k in range(0, len(chunk), batch_size))
    return [batches[k] for k in rng.permutation(len(batches))]


def _step(
    step: torch.nn.Module,
    model: JointModel,
    batch: Windows,
    device: torch.device,
    mc: Any,
    generator: torch.Generator,
) -> tuple[torch.Tensor, int]:
    """One batch's loss through `step` (the loss module, or its DistributedDataParallel wrapper)."""
    width = max(int((batch.targets >= 0).sum(axis=1).max()), 1)  # left-padded: keep the last columns
    t = {
        k: torch.as_tensor(v[:, -width:] if v.ndim == 2 else v, device=device)
        for k, v in batch.__dict__.items()
    }
    drop = None
    if mc.use_text and mc.id_dropout > 0:
        drop = torch.rand(model.n_items, generator=generator).to(device) < mc.id_dropout
    loss = step(t, drop)
    return loss, int((t["targets"] >= 0).sum())


def _step_rows(
    hist_items: torch.Tensor, targets: torch.Tensor, uniform: torch.Tensor, n_items: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The catalogue rows one sampled-softmax step reads ([R], sorted) and where each catalogue index
    is among them ([N + 1]; the history pad N and rows not read map to R, a zero pad row)."""
    used = torch.cat([hist_items.flatten(), targets, uniform])
    rows = torch.unique(used[used < n_items])
    local = torch.full((n_items + 1,), len(rows), dtype=torch.int64, device=rows.device)
    local[rows] = torch.arange(len(rows), device=rows.device)
    return rows, local


class TrainingItemItem(torch.nn.Module):
    """The item-item offsets of training windows: each user's history read through the B of the
    user's fold (fitted without the user's rows), see `model.item_item_folds`."""

    user_fold: torch.Tensor

    def __init__(self, table: ItemItem, user_fold: np.ndarray) -> None:
        super().__init__()
        self.table = table
        self.register_buffer("user_fold", torch.as_tensor(user_fold, dtype=torch.int64))

    @classmethod
    def cross_fitted(
        cls,
        rows: pd.DataFrame,
        n_items: int,
        n_users: int,
        chosen: Neighbours,
        mc: Any,
        seed: int,
        device: torch.device,
    ) -> TrainingItemItem:
        started = time.perf_counter()
        folds = cross_fitted_neighbours(
            rows, n_items, n_users, chosen.l2, mc.item_item_neighbors, mc.item_item_folds, seed
        )
        log.info(
            "item-item: B cross-fitted on %d folds of users in %.1f s",
            len(folds.folds),
            time.perf_counter() - started,
        )
        return cls(ItemItem(folds.stacked(), n_items=n_items), folds.user_fold).to(device)

    def scores(self, hist_items: torch.Tensor, users: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """`ItemItem.scores` of each window's history under its user's fold."""
        return self.table.scores(self._rows(hist_items, users), **kwargs)

    def running(self, hist_items: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        """`ItemItem.running` of each window's history under its user's fold."""
        return self.table.running(self._rows(hist_items, users))

    def _rows(self, hist_items: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        return hist_items + (self.user_fold[users] * (self.table.n_items + 1))[:, None]


class _Loss(torch.nn.Module):
    """The training objective as a module, so DistributedDataParallel can wrap it:
    next-item softmax + ID-text alignment + conversion BCE."""

    popularity: torch.Tensor

    def __init__(
        self,
        model: JointModel,
        tc: Any,
        mc: Any,
        sampled: bool,
        popularity: torch.Tensor,
        use_conversion: bool,
        training_item_item: TrainingItemItem | None = None,
        tuner: TextTuner | None = None,
    ) -> None:
        super().__init__()
        self.model, self.tc, self.mc = model, tc, mc
        self.tuner = tuner  # a submodule: DistributedDataParallel syncs the encoder's gradients too
        self.training_item_item = training_item_item
        self.sampled, self.use_conversion = sampled, use_conversion
        self.register_buffer("popularity", popularity)

    def forward(self, t: dict[str, torch.Tensor], drop: torch.Tensor | None) -> torch.Tensor:
        model, tc, mc = self.model, self.tc, self.mc
        mask = t["targets"] >= 0
        targets = t["targets"][mask]
        rows = local = uniform = None
        if self.sampled:  # only the rows this step reads: the history, the targets and K negatives
            uniform = torch.randint(0, model.n_items, (tc.negatives,), device=targets.device)
            rows, local = _step_rows(t["hist_items"], targets, uniform, model.n_items)
        # joint fine-tuning: the batch's sampled target items re-encoded with gradient, the rest cached
        table = self.tuner.batch_table(model.items.text, targets) if self.tuner is not None else None
        items = model.item_side(drop, text_table=table, rows=rows)
        query = model.query_side(
            t["hist_items"],
            t["hist_scenes"],
            t["scene"],
            t["device"],
            t["hour"],
            t["weekday"],
            items=items,
            item_rows=local[t["hist_items"]] if local is not None else None,
        )
        item_vectors = items.vectors()
        # Items never seen in training are not in the training catalogue: a brand-new item does not
        # exist yet when the model learns, so it must not be pushed down as a negative either.
        absent = model.items.cold
        active = model.item_item.active
        at = t["targets"]  # where each target's item is in `items` (the catalogue, or the step's rows)
        if self.sampled:
            assert rows is not None and local is not None and uniform is not None
            at = torch.where(mask, local[t["targets"].clamp(min=0)], -1)
            local_targets = at[mask]
            seen = history_pairs(local[t["hist_items"]], mask, len(rows)) if tc.mask_history else None
            weight = query.item_item[mask][:, None]  # [M, 1]

            def item_item(candidates: torch.Tensor) -> torch.Tensor:
                """[M, C] item-item part of each target row's score of the sampled candidates."""
                assert rows is not None
                candidates = rows[candidates]  # the step's rows -> catalogue indices
                columns = torch.full((model.n_items + 1,), len(candidates), device=candidates.device)
                columns[candidates] = torch.arange(len(candidates), device=candidates.device)
                with torch.no_grad():
                    if self.training_item_item is not None:
                        scores = self.training_item_item.scores(
                            t["hist_items"], t["user"], per_request=False, columns=columns
                        )
                    else:
                        scores = model.item_item.scores(t["hist_items"], per_request=False, columns=columns)
                return weight * scores[mask][:, columns[candidates]]

            loss = sampled_softmax(
                query.vectors()[mask],
                item_vectors,
                local_targets,
                local[uniform],
                self.popularity[rows],
                absent=absent[rows],
                seen=seen,
                offset=item_item if active else None,
                n_catalogue=model.n_items,
                in_batch=tc.in_batch_negatives,
            )
        else:
            offset = None
            if active:
                with torch.no_grad():  # [B, L, N + 1] running sums under each user's fold
                    if self.training_item_item is not None:
                        table = self.training_item_item.running(t["hist_items"], t["user"])
                    else:
                        table = model.item_item.running(t["hist_items"])
                offset = (query.item_item, table)
            loss = window_softmax(
                query.vectors(),
                item_vectors,
                t["targets"],
                hist_items=t["hist_items"] if tc.mask_history else None,
                absent=absent,
                offset=offset,
            )
        if mc.use_text and tc.align_weight > 0:
            unique = targets.unique()
            if len(unique) > tc.align_items:  # a seeded subset: InfoNCE's cost grows with its square
                unique = unique[torch.randperm(len(unique), device=unique.device)[: tc.align_items]]
            learned = model.items.id_embedding.weight[unique]
            generated = model.items.generated_ids(items.raw_text[unique if local is None else local[unique]])
            loss = loss + tc.align_weight * alignment_infonce(learned, generated, tc.align_temperature)
        if self.use_conversion:
            logits = model.conversion_logit(query, items, at.clamp(min=0)[..., None])[..., 0]
            bce = torch.nn.functional.binary_cross_entropy_with_logits(logits[mask], t["conversion"][mask])
            loss = loss + tc.conversion_weight * bce
        return loss
