"""The run configuration: a typed schema, YAML loading, ``key=value`` overrides and validation.

Sections are dataclasses checked by OmegaConf (types and unknown keys). Pluggable components (backbone,
method, fusion, user encoder, objective) are written as ``{name: ..., <options>}``; their options are checked
against the dataclass that the component registered, so a plugin's options are validated like built-in ones.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from . import registry
from .errors import ConfigError, did_you_mean


@dataclass
class ModalityConfig:
    # Item fields read by this modality, in order; text fields are joined into one passage.
    fields: List[str] = field(default_factory=lambda: ["title"])
    backbone: Dict[str, Any] = field(default_factory=lambda: {"name": "minilm"})
    method: Dict[str, Any] = field(default_factory=lambda: {"name": "lora"})


@dataclass
class ModelConfig:
    # No default: a default modality would be merged into every user's modalities (an image-only recipe
    # would silently gain a text tower). Recipes name theirs.
    modalities: Dict[str, ModalityConfig] = field(default_factory=dict)
    fusion: Dict[str, Any] = field(default_factory=lambda: {"name": "mean"})
    user_encoder: Dict[str, Any] = field(default_factory=lambda: {"name": "mean"})
    # Both towers end in x + B(A(x)) with B zero at start: rank of A, B. Zero start keeps the untuned
    # model equal to the backbone's own embeddings, so "untuned" is an honest zero-shot baseline.
    head_rank: int = 32
    temperature: float = 0.05
    learn_temperature: bool = True
    max_history: int = 5


@dataclass
class DataConfig:
    # A directory in the standard layout; null generates (or reuses) the domain's demo catalog.
    path: Optional[str] = None
    num_items: int = 2000
    num_users: int = 3000
    # Where demo catalogs are kept; null: $CROSSREC_PEFT_CACHE or ~/.cache/crossrec-peft.
    cache_dir: Optional[str] = None
    min_interactions: int = 3
    # Items whose image is missing, unreadable or too large: "error" stops with the item and path;
    # "placeholder" counts them in a warning and encodes those items without their image.
    on_bad_image: str = "error"
    # Image paths that resolve outside the data directory (../.., absolute paths elsewhere) are refused
    # unless this is true.
    allow_outside_images: bool = False
    # How users' histories become training data and ranking cases (docs/data.md, "Splits"):
    # leave_one_out (per user: last = test, second-to-last = validation) or temporal (global cut-off times).
    split: str = "leave_one_out"
    # temporal: test cut-off as seconds or an ISO 8601 date; null: the split_quantile of all timestamps.
    split_time: Optional[str] = None
    split_quantile: float = 0.9
    # temporal: validation cut-off (before the test one); null: the validation_quantile of all timestamps.
    validation_time: Optional[str] = None
    validation_quantile: float = 0.8


@dataclass
class TrainConfig:
    objective: Dict[str, Any] = field(default_factory=lambda: {"name": "retrieval"})
    epochs: int = 2
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.01
    # Learning-rate schedule after a linear warmup over warmup_ratio of the steps: linear | cosine | constant.
    schedule: str = "linear"
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0  # 0 disables gradient clipping
    # Batches whose gradients are summed before each optimizer step (effective batch = batch_size x this x processes).
    grad_accum_steps: int = 1
    # null keeps each module's own dropout (a BERT backbone's 0.1 is active in training); a number sets every
    # dropout in the model (backbones, methods, fusion) to it.
    dropout: Optional[float] = None
    # torch.use_deterministic_algorithms(True): bit-identical reruns on GPU too, at some speed cost (CPU runs
    # are deterministic already).
    deterministic: bool = False
    # Checkpoints (docs/training.md): at every epoch end and every checkpoint_every optimizer steps (0: epoch
    # ends only), the newest keep_checkpoints kept (0: none written). resume continues from the latest.
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    resume: bool = False
    # Stop when validation NDCG@10 has not improved for this many epochs; the best epoch's weights are kept.
    patience: int = 2
    # Windows drawn per user and epoch (each trains on every position of up to max_history + 1 items).
    samples_per_user: int = 1
    eval_batch_size: int = 256
    mixed_precision: str = "no"
    cpu: bool = False
    log_every: int = 10


@dataclass
class IdsBaselineConfig:
    # The ID-embedding baseline (docs/baselines.md): embedding size and its own short training.
    dim: int = 64
    epochs: int = 10
    lr: float = 0.005


@dataclass
class EvalConfig:
    ks: List[int] = field(default_factory=lambda: [5, 10, 20])
    # Systems evaluated beside the model in the same run: untuned | popularity | itemknn | ids.
    baselines: List[str] = field(default_factory=lambda: ["untuned", "popularity", "itemknn", "ids"])
    # null: full ranking only. A number (the literature's 100): also rank each target among that many
    # sampled items, reported apart and labelled, since it overstates quality (docs/metrics.md).
    sampled_negatives: Optional[int] = None
    # A target already in the user's history (a repeat purchase): "allow" lets it be found (the target is
    # never masked); "miss" masks every history item, so a repeat counts as a miss: the standard protocol of
    # RecBole, VQ-Rec and IISAN, for figures comparable with published ones (docs/metrics.md).
    repeats: str = "allow"
    # The cold-start slice: test targets with at most this many training interactions.
    cold_start_max: int = 5
    # Upper bounds of the history-length buckets of the report (2, 5, 10, 20: 1-2, 3-5, 6-10, 11-20, 21+).
    history_buckets: List[int] = field(default_factory=lambda: [2, 5, 10, 20])
    ids: IdsBaselineConfig = field(default_factory=IdsBaselineConfig)


@dataclass
class HybridConfig:
    # The model's ranking plus weight x the candidate's mean item-kNN similarity to the history's items: a
    # hybrid with collaborative filtering (crossrec_peft/hybrid.py, docs/real-data.md). After training, each
    # weight below (and 0, the model alone) is tried on the validation split; the best is reported as the
    # system "hybrid" and kept in the package, with the co-occurrence neighbours, so that Recommender and
    # serve rank the same way.
    enabled: bool = False
    # Neighbours kept per item (item-kNN's usual truncation; what the package stores).
    neighbours: int = 100
    weights: List[float] = field(default_factory=lambda: [0.25, 0.5, 1.0, 2.0])
    # An item the term cannot score (never bought in training, or new) borrows the term of its `borrow`
    # nearest items that it can, by the model's item vectors, times a borrowing weight: each of
    # `borrow_weights` (and 0, none) is tried on validation at the weight chosen above. 0 turns it off.
    borrow: int = 5
    borrow_weights: List[float] = field(default_factory=lambda: [1.0, 2.0])
    # The history items weighted by recency: decay^(steps from an item's last occurrence to the end). Each
    # decay here (and 1, the plain mean) is tried on validation with the weight and borrowing chosen above.
    decays: List[float] = field(default_factory=list)


@dataclass
class ExportConfig:
    enabled: bool = True


@dataclass
class SweepConfig:
    # `crossrec-peft sweep` (docs/training.md): dotted config key -> a range to search, one of
    #   {type: float, low: 1e-4, high: 1e-2, log: true}, {type: int, low: 4, high: 20, step: 4},
    #   {type: categorical, choices: [mean, attention]}
    space: Dict[str, Any] = field(default_factory=dict)
    # What a trial is judged by: this validation metric of the model's best epoch (never the test split).
    metric: str = "ndcg@10"
    # Median pruning: a trial stops when its validation metric after an epoch is below the median of the
    # earlier trials' at that epoch, once this many trials have finished and from this epoch on.
    prune_after_trials: int = 2
    prune_from_epoch: int = 1


@dataclass
class Config:
    description: str = ""
    name: str = "run"
    domain: str = "ecommerce"
    seed: int = 0
    # Continue training from an exported adapter package (a directory or hf://org/name[@revision]) instead of
    # the untrained methods; the model section must be the package's (docs/package-format.md, "Lineage").
    init_from: Optional[str] = None
    # A subclass of crossrec_peft.recipe_class.Recipe to run this config with, by dotted name
    # (my_pkg.MyRecipe); null: Recipe itself (docs/training.md, "The recipe class").
    recipe_class: Optional[str] = None
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    hybrid: HybridConfig = field(default_factory=HybridConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)


def _keys_at(schema: DictConfig, dotted: str) -> list[str]:
    node: Any = schema
    for part in [p for p in dotted.split(".") if p]:
        if not isinstance(node, DictConfig) or part not in node:
            return []
        node = node[part]
    return list(node.keys()) if isinstance(node, DictConfig) else []


def _kind(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return "a single value"


def _merge_layer(current: DictConfig, given: DictConfig, source: str) -> DictConfig:
    """A recipe file, or one command-line override, merged onto `current` (the schema, or the config so far).
    `model.modalities.NAME: null` (`model.modalities.NAME=null` on the command line) leaves modality NAME out:
    it is dropped from what `current` holds. One that `current` lacks is refused as a likely typo, unless
    `current` has no modality yet (a recipe file, merged onto the schema: its null only says NAME is absent)."""
    given_dict = OmegaConf.to_container(given, resolve=False)
    model = given_dict.get("model")
    modalities = model.get("modalities") if isinstance(model, dict) else None
    dropped = [name for name, value in modalities.items() if value is None] if isinstance(modalities, dict) else []
    if not dropped:
        return _merge_checked(current, given, source)
    have = list(current.model.modalities)
    for name in dropped:
        if have and name not in have:
            raise ConfigError(f"{source}: there is no modality '{name}' to drop.{did_you_mean(str(name), have)} Modalities: {', '.join(have)}.")
        del modalities[name]
    merged = _merge_checked(current, OmegaConf.create(given_dict), source)
    for name in dropped:
        merged.model.modalities.pop(name, None)
    return merged


def _merge_checked(current: DictConfig, given: DictConfig, source: str) -> DictConfig:
    """OmegaConf.merge(current, given), after checking that every key of `given` (a recipe file or one override)
    has the form `current` (the schema, or the config so far) holds there: a ConfigError names the first key
    that gives a mapping, a list or a single value where another kind belongs (OmegaConf raises a bare TypeError
    for a mapping merged onto a list, and names no key for a single value merged onto a section)."""
    mismatch = _shape_mismatch(OmegaConf.to_container(current, resolve=False, throw_on_missing=False),
                               OmegaConf.to_container(given, resolve=False), source)
    if mismatch is not None:
        raise mismatch
    return OmegaConf.merge(current, given)


def _shape_mismatch(defaults: Mapping, given: Mapping, source: str) -> ConfigError | None:
    """`_merge_checked`'s check on plain containers: the ConfigError for the first key of a kind other than
    `defaults` holds there, or None."""

    def walk(want: Any, have: Any, prefix: str) -> ConfigError | None:
        if not isinstance(want, Mapping) or not isinstance(have, Mapping):
            return None
        for key, value in have.items():
            if key not in want or want[key] is None or value is None:
                continue  # unknown keys and optional sections: OmegaConf's own messages name them
            full = f"{prefix}{key}"
            expected, got = _kind(want[key]), _kind(value)
            # A single value where a list belongs, or a mapping where none does (or none where one does). A list
            # where a single value belongs is left to OmegaConf, whose message names the value it cannot convert.
            if expected != got and (expected == "a list" or "a mapping" in (expected, got)):
                if expected == "a list":
                    example = f"{full}=[{','.join(str(v) for v in want[key])}]" if want[key] else f"{full}=[a,b]"
                    form = f"a list, as in {example}"
                elif expected == "a mapping":
                    keys = ", ".join(list(want[key])[:5])
                    form = f"a section of keys ({keys}{', ...' if len(want[key]) > 5 else ''}), set one at a time as {full}.KEY=VALUE"
                else:
                    form = "a single value"
                return ConfigError(f"{source}: '{full}' takes {form}; got {got}.")
            found = walk(want[key], value, f"{full}.")
            if found is not None:
                return found
        return None

    return walk(defaults, given, "")


def _explain(exc: OmegaConfBaseException, source: str, schema: DictConfig) -> ConfigError:
    full_key = getattr(exc, "full_key", None) or getattr(exc, "key", None) or "?"
    if isinstance(exc, ConfigKeyError):
        parent, _, key = str(full_key).rpartition(".")
        valid = _keys_at(schema, parent)
        where = f" in section '{parent}'" if parent else ""
        return ConfigError(
            f"{source}: unknown key '{full_key}'{where}.{did_you_mean(key, valid)} "
            f"Valid keys here: {', '.join(valid)}."
        )
    msg = str(exc).splitlines()[0]
    return ConfigError(f"{source}: invalid value for '{full_key}': {msg}.")


def load_config(source: Mapping | str | Path, overrides: list[str] | None = None, *, name: str | None = None) -> DictConfig:
    """Merge a YAML file (or mapping) and ``key=value`` overrides onto the schema, then validate."""
    schema = OmegaConf.structured(Config)
    label = str(source) if isinstance(source, (str, Path)) else "config"
    try:
        if isinstance(source, (str, Path)):
            path = Path(source)
            if path.is_dir():
                raise ConfigError(f"Config file '{path}' is a directory; give a YAML recipe file.")
            if not path.is_file():
                raise ConfigError(f"Config file '{path}' does not exist.")
            _check_mapping(path)
            user = OmegaConf.load(path)
        else:
            user = OmegaConf.create(dict(source))
        if not isinstance(user, DictConfig):
            raise ConfigError(f"{label}: a config must be a YAML mapping, got {type(user).__name__}.")
        cfg = _merge_layer(schema, user, label)
    except OmegaConfBaseException as exc:
        raise _explain(exc, label, schema) from None
    except Exception as exc:  # YAML syntax errors and the like
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{label}: cannot be read as YAML: {exc}") from None
    if overrides:
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise ConfigError(f"Override '{bad[0]}' is not of the form key=value (for example train.epochs=1).")
        # `model.modalities.text.method=ia3` swaps a whole component for another with its default options
        # (merging would keep the old component's options, which the new one may not accept).
        # `...method={name: bottleneck, kind: houlsby}` likewise replaces it when the name changes, and sets
        # options of the same component when it does not.
        # `model.modalities.image=null` drops a modality (a catalog without images, such as MovieLens), as
        # `image: null` does in a recipe file: both through _merge_layer.
        replaced, rest = [], []
        for item in overrides:
            key, _, value = item.partition("=")
            if key == "sweep.space":  # a whole search space replaces the recipe's (merged, it would keep
                # OmegaConf's own YAML reading: 1e-4 is a float there, a string to plain YAML 1.1
                parsed = OmegaConf.to_container(OmegaConf.from_dotlist([f"space={value}"]))["space"]
                replaced.append((key, parsed or {}))  # dimensions the user did not name)
                continue
            node = OmegaConf.select(cfg, key, default=None)
            if isinstance(node, DictConfig) and "name" in node:
                parsed = yaml.safe_load(value) if value.strip() else None
                if isinstance(parsed, str):
                    replaced.append((key, {"name": parsed}))
                    continue
                if isinstance(parsed, dict) and parsed.get("name", node.name) != node.name:
                    replaced.append((key, parsed))
                    continue
            rest.append((key, value))
        try:
            for key, value in replaced:
                OmegaConf.update(cfg, key, value, merge=False)
        except OmegaConfBaseException as exc:
            raise _explain(exc, "command-line override", schema) from None
        for key, value in rest:  # one at a time, so that an error names the override that caused it
            where = f"command-line override '{key}={value}'"
            try:
                cfg = _merge_layer(cfg, OmegaConf.from_dotlist([f"{key}={value}"]), where)
            except OmegaConfBaseException as exc:
                raise _explain(exc, where, schema) from None
    if name is not None and cfg.name == "run":
        cfg.name = name
    validate(cfg)
    return cfg


def _check_mapping(path: Path) -> None:
    """A recipe file must hold a YAML mapping: say so for an empty file, a scalar or a list (OmegaConf would
    read a scalar as an unknown key and a list as a ListConfig)."""
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start}).") from None
    except yaml.YAMLError:
        return  # a syntax error: OmegaConf's message names the line
    if loaded is None:
        raise ConfigError(f"{path}: the file is empty; a recipe is a YAML mapping (name:, model:, train:, ...). "
                          "Start from one with crossrec-peft recipe cp NAME DEST.")
    if not isinstance(loaded, dict):
        kind = {"list": "a list", "str": "a single text value", "int": "a number", "float": "a number", "bool": "a boolean"}
        raise ConfigError(f"{path}: holds {kind.get(type(loaded).__name__, type(loaded).__name__)}, not a mapping; a recipe "
                          "is a YAML mapping of sections (name:, model:, train:, ...).")


def component(reg: registry.Registry, spec: Mapping, where: str):
    """Resolve ``{name: ..., options}`` against `reg`: (entry, argument, options object)."""
    spec = dict(spec)
    name = spec.pop("name", None)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"'{where}.name' is missing: name one of {', '.join(reg.names())}.")
    try:
        entry, argument = reg.resolve(name)
    except ConfigError as exc:
        raise ConfigError(f"'{where}.name': {exc}") from None
    if entry.options is None:
        if spec:
            raise ConfigError(f"{reg.kind} '{name}' takes no options, but '{where}' sets {', '.join(spec)}.")
        return entry, argument, None
    valid = [f.name for f in dataclasses.fields(entry.options)]
    for key in spec:
        if key not in valid:
            raise ConfigError(
                f"Unknown key '{where}.{key}' for {reg.kind} '{name}'.{did_you_mean(key, valid)} "
                f"Valid keys: name, {', '.join(valid)}."
            )
    try:
        merged = OmegaConf.merge(OmegaConf.structured(entry.options), spec)
        options = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or getattr(exc, "key", "?")
        raise ConfigError(f"Invalid value for '{where}.{key}': {str(exc).splitlines()[0]}.") from None
    check = getattr(options, "check", None)
    if callable(check):
        problem = check()
        if problem:
            raise ConfigError(f"'{where}': {problem}")
    return entry, argument, options


def check_model_section(model: Mapping, source: str, *, history: bool = True) -> None:
    """A `model` section from elsewhere than a recipe (a package manifest's) checked as `load_config` checks a
    recipe's: types and unknown keys against `ModelConfig`, then `validate_model`. A ConfigError names `source`
    and the key. `history=False` skips the user encoder's window check (a manifest that recorded no max_history)."""
    schema = OmegaConf.create({"model": OmegaConf.structured(ModelConfig)})  # keys read 'model.<key>'
    try:
        merged = _merge_checked(schema, OmegaConf.create({"model": dict(model)}), source)
    except OmegaConfBaseException as exc:
        raise _explain(exc, source, schema) from None
    try:
        validate_model(merged.model, history=history)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def validate_model(m: DictConfig, *, history: bool = True) -> None:
    """The `model` section's checks of `validate`: every component resolves with valid options, sizes positive."""
    if not m.modalities:
        raise ConfigError("'model.modalities' is empty: configure at least one modality (for example text).")
    for mod_name, mod in m.modalities.items():
        if not mod.fields:
            raise ConfigError(f"'model.modalities.{mod_name}.fields' is empty: name the item fields to encode.")
        component(registry.backbones, mod.backbone, f"model.modalities.{mod_name}.backbone")
        component(registry.methods, mod.method, f"model.modalities.{mod_name}.method")
    component(registry.fusions, m.fusion, "model.fusion")
    _, _, encoder_options = component(registry.user_encoders, m.user_encoder, "model.user_encoder")
    check_history = getattr(encoder_options, "check_history", None)  # e.g. sasrec's positions must fit the window
    problem = check_history(m.max_history) if history and callable(check_history) else None
    if problem:
        raise ConfigError(f"'model.user_encoder': {problem}")
    for key in ("head_rank", "max_history"):
        if m[key] <= 0:
            raise ConfigError(f"'model.{key}' must be positive, got {m[key]}.")
    if not m.temperature > 0:
        raise ConfigError(f"'model.temperature' must be positive, got {m.temperature}.")


def validate(cfg: DictConfig) -> None:
    """Everything that can be checked without loading data or weights, so mistakes fail in a second."""
    validate_model(cfg.model)
    component(registry.objectives, cfg.train.objective, "train.objective")
    try:
        registry.domains.resolve(cfg.domain)
    except ConfigError as exc:
        raise ConfigError(f"'domain': {exc}") from None
    if cfg.init_from and not str(cfg.init_from).startswith("hf://") and not (Path(cfg.init_from).expanduser() / "crossrec.json").is_file():
        raise ConfigError(f"'init_from': '{cfg.init_from}' is not an adapter package (a directory with crossrec.json) nor an hf:// address.")
    # Only the form is checked here (the import, and that it is a Recipe, when the run starts: pipeline.run),
    # so that validating a config runs no user code and loads no training code.
    if cfg.recipe_class is not None and not _dotted(cfg.recipe_class):
        raise ConfigError(f"'recipe_class': '{cfg.recipe_class}' is not a dotted name module.Class (for example my_recipes.MyRecipe).")
    positive = {  # the model's sizes and temperature: validate_model
        "train.epochs": cfg.train.epochs,
        "train.batch_size": cfg.train.batch_size, "train.samples_per_user": cfg.train.samples_per_user,
        "train.eval_batch_size": cfg.train.eval_batch_size, "data.num_items": cfg.data.num_items,
        "data.num_users": cfg.data.num_users, "train.log_every": cfg.train.log_every,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"'{key}' must be positive, got {value}.")
    _check_ranges(cfg)
    if cfg.train.batch_size < 2:
        raise ConfigError("'train.batch_size' must be at least 2: in-batch negatives need other rows.")
    if not 0 <= cfg.train.warmup_ratio < 1:
        raise ConfigError(f"'train.warmup_ratio' must be in [0, 1), got {cfg.train.warmup_ratio}.")
    if cfg.train.schedule not in ("linear", "cosine", "constant"):
        raise ConfigError(f"'train.schedule' must be linear, cosine or constant, got '{cfg.train.schedule}'.")
    if cfg.train.grad_accum_steps < 1:
        raise ConfigError(f"'train.grad_accum_steps' must be at least 1, got {cfg.train.grad_accum_steps}.")
    if cfg.train.dropout is not None and not 0 <= cfg.train.dropout < 1:
        raise ConfigError(f"'train.dropout' must be null or in [0, 1), got {cfg.train.dropout}.")
    if cfg.train.checkpoint_every < 0 or cfg.train.keep_checkpoints < 0:
        raise ConfigError("'train.checkpoint_every' and 'train.keep_checkpoints' must be 0 or positive.")
    if cfg.train.resume and cfg.train.keep_checkpoints == 0:
        raise ConfigError("'train.resume' needs checkpoints, but 'train.keep_checkpoints' is 0.")
    if cfg.train.mixed_precision not in ("no", "fp16", "bf16"):
        raise ConfigError(f"'train.mixed_precision' must be no, fp16 or bf16, got '{cfg.train.mixed_precision}'.")
    if cfg.data.min_interactions < 3:
        raise ConfigError("'data.min_interactions' must be at least 3: leave-one-out needs train, validation and test items.")
    if cfg.data.split not in ("leave_one_out", "temporal"):
        raise ConfigError(f"'data.split' must be leave_one_out or temporal, got '{cfg.data.split}'.{did_you_mean(cfg.data.split, ['leave_one_out', 'temporal'])}")
    for key in ("split_quantile", "validation_quantile"):
        if not 0 < cfg.data[key] < 1:
            raise ConfigError(f"'data.{key}' must be between 0 and 1 (exclusive), got {cfg.data[key]}.")
    if cfg.data.on_bad_image not in ("error", "placeholder"):
        raise ConfigError(f"'data.on_bad_image' must be error or placeholder, got '{cfg.data.on_bad_image}'.")
    if not cfg.eval.ks or any(k <= 0 for k in cfg.eval.ks):
        raise ConfigError(f"'eval.ks' must list positive cut-offs, got {list(cfg.eval.ks)}.")
    if 10 not in cfg.eval.ks:
        raise ConfigError("'eval.ks' must include 10: early stopping and reports use NDCG@10.")
    for name in cfg.eval.baselines:
        if name not in registry.baselines:
            known = registry.baselines.names()
            raise ConfigError(f"'eval.baselines': unknown baseline '{name}'.{did_you_mean(name, known)} Known: {', '.join(known)}.")
    if cfg.eval.sampled_negatives is not None and cfg.eval.sampled_negatives <= 0:
        raise ConfigError(f"'eval.sampled_negatives' must be null or positive, got {cfg.eval.sampled_negatives}.")
    if cfg.eval.repeats not in ("allow", "miss"):
        raise ConfigError(f"'eval.repeats' must be 'allow' or 'miss', got {cfg.eval.repeats!r}.{did_you_mean(str(cfg.eval.repeats), ['allow', 'miss'])}")
    if cfg.eval.cold_start_max < 0:
        raise ConfigError(f"'eval.cold_start_max' must be at least 0, got {cfg.eval.cold_start_max}.")
    edges = list(cfg.eval.history_buckets)
    if any(e <= 0 for e in edges) or edges != sorted(set(edges)):
        raise ConfigError(f"'eval.history_buckets' must be increasing positive lengths, got {edges}.")
    if cfg.eval.ids.dim <= 0 or cfg.eval.ids.epochs <= 0 or cfg.eval.ids.lr <= 0:
        raise ConfigError("'eval.ids.dim', 'eval.ids.epochs' and 'eval.ids.lr' must be positive.")
    if cfg.hybrid.neighbours < 1:
        raise ConfigError(f"'hybrid.neighbours' must be at least 1, got {cfg.hybrid.neighbours}.")
    weights = list(cfg.hybrid.weights)
    if cfg.hybrid.enabled and not weights:
        raise ConfigError("'hybrid.weights' must list at least one weight to try on the validation split.")
    if any(not math.isfinite(w) or w < 0 for w in weights):
        raise ConfigError(f"'hybrid.weights' must be finite and 0 or more, got {weights}.")
    if cfg.hybrid.borrow < 0:
        raise ConfigError(f"'hybrid.borrow' must be 0 (no borrowing) or more, got {cfg.hybrid.borrow}.")
    borrow_weights = list(cfg.hybrid.borrow_weights)
    if any(not math.isfinite(w) or w < 0 for w in borrow_weights):
        raise ConfigError(f"'hybrid.borrow_weights' must be finite and 0 or more, got {borrow_weights}.")
    decays = list(cfg.hybrid.decays)
    if any(not math.isfinite(d) or not 0 < d <= 1 for d in decays):
        raise ConfigError(f"'hybrid.decays' must each lie in (0, 1] (1: the plain mean), got {decays}.")


def _dotted(name: str) -> bool:
    parts = str(name).split(".")
    return len(parts) >= 2 and all(part.isidentifier() for part in parts)


# Numeric settings checked before anything is loaded (a negative learning rate used to surface only after
# the data and model were built, as an optimizer crash). key -> (test, what it must be).
RANGES = {
    "train.lr": (lambda v: v > 0, "a positive number"),
    "train.weight_decay": (lambda v: v >= 0, "0 or more"),
    "train.patience": (lambda v: v >= 0, "0 or more (epochs without improvement before stopping)"),
    "train.max_grad_norm": (lambda v: v >= 0, "0 (no clipping) or a positive number"),
    "model.head_rank": (lambda v: v >= 1, "at least 1"),
    "eval.ids.lr": (lambda v: v > 0, "a positive number"),
    "sweep.prune_after_trials": (lambda v: v >= 0, "0 or more"),
    "sweep.prune_from_epoch": (lambda v: v >= 1, "at least 1"),
}


def _check_ranges(cfg: DictConfig) -> None:
    for key, (ok, what) in RANGES.items():
        value = OmegaConf.select(cfg, key)
        if value is None:
            continue
        if isinstance(value, float) and not math.isfinite(value) or not ok(value):
            raise ConfigError(f"'{key}' must be {what}, got {value}.")


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg)


def flat_keys(node: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as {dotted key: leaf}, keys under `prefix`. An empty mapping is a leaf, so that a key left
    out and one set differ by name, not by section (the resume refusals compare configs this way)."""
    if not (isinstance(node, Mapping) and node):
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(flat_keys(value, f"{prefix}.{key}" if prefix else str(key)))
    return out
