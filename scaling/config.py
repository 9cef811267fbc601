"""The study configuration: YAML (safe-loaded) into typed, validated dataclasses.

Every key has a type and, where it matters, a range. Loading walks the dataclasses, so an unknown key, a
wrong type or an impossible value fails with its key path, the bad value and what was expected -- before
any data is touched or Ray is started. Command-line overrides `a.b.c=value` are applied to the raw mapping
first, so they go through the same checks.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = PROJECT_ROOT / "studies" / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"

#: the pre-training sources a fine-tuning trial can start from; "both" = natural, then medical
SCRATCH, NATURAL, MEDICAL, BOTH = "scratch", "natural", "medical", "both"
SOURCES = (SCRATCH, NATURAL, MEDICAL, BOTH)


class ConfigError(ValueError):
    """A bad configuration value; the message starts with the key path."""


def _opt(default, **limits):
    return field(default=default, metadata=limits)


@dataclass
class PublishedWeights:
    """A pre-training point that is not trained: published weights for every rung, placed on the data-size
    axis at the number of images they were pre-trained on."""

    #: names the point (e.g. imagenet21k) in `sweep.both_from` and in messages
    name: str
    #: pre-training images behind the weights: the point's place on the data-size axis
    images: int = field(metadata={"min": 1})
    #: "hf": timm's weights from the local Hugging Face cache; otherwise a file path, `{model}` -> the rung name
    weights: str = "hf"
    #: timm pretrained tag for weights "hf" (e.g. goog_in21k); empty: the ladder's own tag
    tag: str = ""
    #: where `python -m scaling.models download` fetches a file path from (`{model}` -> the rung name)
    url: str = ""


@dataclass
class DatasetRef:
    """A data source: one dataset from `scaling.data.registry` with its constructor options (e.g. root, version,
    size), or the union of several (`merge`) on their shared labels; a pre-training source may also name
    published weights (`published`) as further points of its data-size axis, or consist of them alone."""

    dataset: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    #: members of a merged source, each a dataset with options
    merge: list[DatasetRef] = field(default_factory=list, metadata={"empty": True})
    #: a merged source's labels: "shared" (present in every member) or "union" (missing ones are unknown, NaN)
    labels: Literal["shared", "union"] = "shared"
    published: list[PublishedWeights] = field(default_factory=list, metadata={"empty": True})


@dataclass
class LeakageConfig:
    """The guard against pre-training on the target's evaluation images (scaling/data/leakage.py)."""

    #: error: stop, naming both files; remove: drop the source images and count them; off: no check
    policy: Literal["error", "remove", "off"] = "error"
    #: near-duplicate when 256-bit difference hashes differ in at most this many bits
    max_distance: int = _opt(8, min=0, max_exclusive=64)


@dataclass
class DataConfig:
    target: DatasetRef
    #: pre-training sources by role; "both" in the sweep uses natural then medical
    sources: dict[str, DatasetRef] = field(default_factory=dict)
    resolution: int = _opt(48, min=8)
    crop: Literal["center", "none"] = "center"
    clahe: bool = False
    storage: Literal["uint8", "uint16"] = "uint8"
    encoding: Literal["raw", "png"] = "raw"
    #: pre-training data sizes (images); nested subsets of each source's train split
    source_sizes: list[int] = field(default_factory=lambda: [1000], metadata={"min": 1})
    #: fine-tuning examples per class; 0 = the full target train split
    shots: list[int] = field(default_factory=lambda: [0], metadata={"min": 0})
    val_fraction: float = _opt(0.15, min_exclusive=0, max_exclusive=1)
    on_bad_image: Literal["error", "skip"] = "error"
    leakage: LeakageConfig = field(default_factory=LeakageConfig)
    cache_dir: str = ".cache/scaling"


@dataclass
class ModelsConfig:
    ladder: str = "cpu"
    #: rung names of the ladder, the model-size axis
    sizes: list[str] = field(default_factory=list)


@dataclass
class Recipe:
    """How one training job runs; steps are optimizer steps at the effective batch size."""

    steps: int = _opt(500, min=1)
    batch_size: int = _opt(64, min=1)
    #: micro-batches per optimizer step, so the effective batch does not depend on memory
    grad_accum: int = _opt(1, min=1)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = _opt(0.1, min_exclusive=0)
    momentum: float = _opt(0.9, min=0, max_exclusive=1)
    weight_decay: float = _opt(0.0, min=0)
    warmup_steps: int = _opt(0, min=0)
    #: "bit": step decay by 10x at 30/60/90% of the steps (BiT-HyperRule); "cosine"; "constant"
    schedule: Literal["bit", "cosine", "constant"] = "bit"
    #: class-balanced sampling of the training set (for imbalanced targets)
    balanced_sampling: bool = False
    eval_every: int = _opt(100, min=1)
    augment: bool = True
    #: recompute activations in the backward pass (timm's set_grad_checkpointing): less memory, ~30% more compute
    grad_checkpointing: bool = False
    #: images per forward pass and worker: empty = batch_size / (workers x grad_accum); "auto" = the largest that
    #: fits the GPU, measured by a preflight on the first worker (scaling/train/memory.py); the effective batch
    #: stays batch_size either way
    micro_batch: int | Literal["auto"] | None = _opt(None, min=1)


@dataclass
class FinetuneConfig:
    #: every trial takes its steps from `budgets` and its lr and weight decay from the ranges below
    recipe: Recipe = field(default_factory=Recipe)
    #: fine-tuning budgets in optimizer steps, the budget axis
    budgets: list[int] = field(default_factory=lambda: [500], metadata={"min": 1})
    #: log-uniform search ranges tuned by Optuna inside every cell
    lr_range: list[float] = field(default_factory=lambda: [1e-4, 1e-2], metadata={"min_exclusive": 0, "len": 2})
    weight_decay_range: list[float] = field(default_factory=lambda: [1e-6, 1e-3], metadata={"min_exclusive": 0, "len": 2})
    #: the learning-rate range of cells trained from scratch (random weights take larger steps than
    #: pre-trained ones); empty = lr_range
    scratch_lr_range: list[float] = field(default_factory=list, metadata={"min_exclusive": 0, "empty": True})

    def lr_range_for(self, source: str) -> list[float]:
        """The learning-rate range searched in cells of `source`."""
        return self.scratch_lr_range if source == "scratch" and self.scratch_lr_range else self.lr_range


@dataclass
class SweepConfig:
    sources: list[Literal["scratch", "natural", "medical", "both"]] = field(
        default_factory=lambda: ["scratch", "natural", "medical"]
    )
    #: fine-tuning seeds: every trial trains one model per seed side by side and reports their mean
    seeds: list[int] = field(default_factory=lambda: [0, 1], metadata={"min": 0})
    #: Optuna hyper-parameter samples per cell of the scaling grid
    trials_per_cell: int = _opt(1, min=1)
    #: how they are drawn: `latin` = a Latin hypercube per cell over the log ranges, seeded by the study seed
    #: and the cell (every cell gets the same spread; a trial's values do not depend on the order trials end);
    #: `tpe` = one TPE over all cells, learning from every trial (see scaling/sweep/search.py)
    sampler: Literal["latin", "tpe"] = "latin"
    max_concurrent_trials: int = _opt(1, min=1)
    #: from-scratch training also on nested, stratified subsets of the target's training split of these sizes
    #: (images), besides the full split: the curve that effective data transferred is read from; [] = none
    scratch_target_sizes: list[int] = field(default_factory=list, metadata={"min": 1, "empty": True})
    #: ASHA: trials are compared at these evaluation points and the worse stopped
    asha_grace_evals: int = _opt(1, min=1)
    asha_reduction_factor: int = _opt(3, min=2)
    #: what "both" starts from: empty = the study's own natural pre-training at each size; the name of a
    #: published natural point = those weights, then the study's medical pre-training
    both_from: str = ""


@dataclass
class ResourcesConfig:
    #: Ray Train workers per job (DDP, restarts after a lost worker: the path for clusters); 0 = train in the
    #: Tune trial's own process (Train's local mode: no worker processes to start; the job still checkpoints
    #: to its folder and resumes from it), the trial holding cpus_per_worker (and gpus_per_worker) itself
    num_workers: int = _opt(1, min=0, help="Train workers per job; 0 = train in the Tune trial's process")
    use_gpu: bool = False
    cpus_per_worker: float = _opt(1.0, min_exclusive=0)
    #: GPUs per Train worker when use_gpu is true
    gpus_per_worker: float = _opt(1.0, min_exclusive=0)
    #: DataLoader worker processes per Train worker
    loader_workers: int = _opt(0, min=0)
    #: bf16 autocast and channels_last (only takes effect on GPU)
    bf16: bool = True
    max_failures: int = _opt(1, min=0)


@dataclass
class TrackingConfig:
    #: MLflow tracking URI; empty = the study starts its own server with SQLite in the study directory
    uri: str = ""
    experiment: str = ""


@dataclass
class StudyConfig:
    name: str
    data: DataConfig
    models: ModelsConfig = field(default_factory=ModelsConfig)
    pretrain: Recipe = field(default_factory=Recipe)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    seed: int = _opt(0, min=0)
    #: study directory; empty = runs/<name>
    out_dir: str = ""

    @property
    def study_dir(self) -> Path:
        return Path(self.out_dir or Path("runs") / self.name)


# ---------------------------------------------------------------------------------------------- loading


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> StudyConfig:
    """Read a YAML study config, apply `a.b.c=value` overrides, build and validate the typed config."""
    path = Path(path or DEFAULT_CONFIG)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level, got {type(raw).__name__}")
    for item in overrides:
        apply_override(raw, item)
    cfg = build(StudyConfig, raw, "")
    validate(cfg)
    return cfg


def apply_override(raw: dict, item: str) -> None:
    """Set `a.b.c=value` in the raw mapping; the value is parsed as YAML (so `0.1`, `[1, 2]`, `true` work)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key.path=value")
    key, value = item.split("=", 1)
    parts = key.strip().split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {'.'.join(parts[:i + 1])} is not a mapping")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(value)
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: value is not valid YAML: {e}") from None


def build(cls, raw: Any, path: str):
    """Build dataclass `cls` from a raw mapping, checking keys, types and ranges."""
    where = path or "<top level>"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"{_join(path, unknown[0])}: unknown key; expected one of: {', '.join(fields)}")
    values = {}
    for name, f in fields.items():
        key = _join(path, name)
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{key}: missing; expected {_describe(hints[name])}")
            continue
        values[name] = _coerce(hints[name], raw[name], key, f.metadata)
    return cls(**values)


def _coerce(tp, value, key: str, limits) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        for option in inner[:-1]:  # e.g. int | Literal["auto"]: the first type that takes the value
            try:
                return _coerce(option, value, key, limits)
            except ConfigError:
                continue
        try:
            return _coerce(inner[-1], value, key, limits)
        except ConfigError:
            if len(inner) == 1:
                raise
            raise ConfigError(f"{key}: got {value!r}; expected {_describe(tp)}") from None
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: got {value!r}; expected one of {', '.join(map(repr, args))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: got {value!r}; expected a list of {_describe(args[0])}")
        if "len" in limits and len(value) != limits["len"]:
            raise ConfigError(f"{key}: got {value!r}; expected a list of {limits['len']} values")
        if not value and not limits.get("empty"):
            raise ConfigError(f"{key}: got an empty list; expected at least one {_describe(args[0])}")
        return [_coerce(args[0], v, f"{key}[{i}]", limits) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: got {value!r}; expected a mapping")
        return {str(k): _coerce(args[1], v, _join(key, str(k)), limits) for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: got {value!r}; expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: got {value!r}; expected an integer")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: got {value!r}; expected a number")
        value = float(value)
    elif tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: got {value!r}; expected a string")
    _check_range(value, key, limits)
    return value


def _check_range(value, key: str, limits) -> None:
    if "min" in limits and value < limits["min"]:
        raise ConfigError(f"{key}: got {value!r}; expected a value >= {limits['min']}")
    if "min_exclusive" in limits and value <= limits["min_exclusive"]:
        raise ConfigError(f"{key}: got {value!r}; expected a value > {limits['min_exclusive']}")
    if "max_exclusive" in limits and value >= limits["max_exclusive"]:
        raise ConfigError(f"{key}: got {value!r}; expected a value < {limits['max_exclusive']}")


def _describe(tp) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin is list:
        return f"a list of {_describe(args[0])}"
    if origin is dict:
        return "a mapping"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args if a is not type(None))
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


# ---------------------------------------------------------------------------------------------- semantics


def validate(cfg: StudyConfig) -> None:
    """Checks that need more than one key or a registry: dataset and model names, dataset options, merged and
    published sources, subset sizes against what a synthetic source holds, sweep sources against configured
    sources."""
    from scaling.data import registry

    target = cfg.data.target
    if not target.dataset or target.merge or target.published:
        raise ConfigError("data.target: expected one dataset (data.target.dataset), not a merged or published source")
    _validate_dataset("data.target", target, registry)
    for role, ref in cfg.data.sources.items():
        if role not in ("natural", "medical"):
            raise ConfigError(f"data.sources.{role}: unknown source role; expected natural or medical")
        _validate_source(f"data.sources.{role}", ref, cfg, registry)
    needed = {"natural", "medical"} & {r for s in cfg.sweep.sources for r in (("natural", "medical") if s == "both" else (s,))}
    for role in sorted(needed - set(cfg.data.sources)):
        raise ConfigError(f"sweep.sources asks for {role!r} pre-training but data.sources.{role} is not configured")
    _validate_both(cfg)
    for role, ref in cfg.data.sources.items():
        size = ref.options.get("size")
        for i, n in enumerate(cfg.data.source_sizes):
            if size is not None and n > size:
                raise ConfigError(
                    f"data.source_sizes[{i}]: got {n}; expected at most {size}, the size of data.sources.{role} "
                    f"(data.sources.{role}.options.size)"
                )
    if cfg.sweep.scratch_target_sizes and "scratch" not in cfg.sweep.sources:
        raise ConfigError(f"sweep.scratch_target_sizes: got {cfg.sweep.scratch_target_sizes}; they add from-scratch "
                          "points, but sweep.sources has no 'scratch'")
    _validate_models(cfg.models)
    for key, recipe in (("pretrain", cfg.pretrain), ("finetune.recipe", cfg.finetune.recipe)):
        if recipe.micro_batch is not None and recipe.grad_accum != 1:
            raise ConfigError(f"{key}.micro_batch: got {recipe.micro_batch!r} with {key}.grad_accum "
                              f"{recipe.grad_accum}; expected one of them (micro_batch sets the accumulation)")
    if cfg.finetune.scratch_lr_range and len(cfg.finetune.scratch_lr_range) != 2:
        raise ConfigError(f"finetune.scratch_lr_range: got {cfg.finetune.scratch_lr_range}; expected [low, high] "
                          "or [] (= lr_range)")
    for name in ("lr_range", "weight_decay_range", "scratch_lr_range"):
        low, high = getattr(cfg.finetune, name) or (0, 0)
        if low > high:
            raise ConfigError(f"finetune.{name}: got {[low, high]}; expected [low, high] with low <= high")


def has_own_data(ref: DatasetRef) -> bool:
    """Whether a source has images of its own to pre-train on (not only published weights)."""
    return bool(ref.dataset or ref.merge)


def _validate_source(key: str, ref: DatasetRef, cfg: StudyConfig, registry) -> None:
    if ref.dataset and ref.merge:
        raise ConfigError(f"{key}: has both dataset and merge; expected one of them")
    if not has_own_data(ref) and not ref.published:
        raise ConfigError(f"{key}: expected a dataset, a merge of datasets or published weights")
    if ref.dataset:
        _validate_dataset(key, ref, registry)
    if ref.merge:
        if len(ref.merge) < 2:
            raise ConfigError(f"{key}.merge: got {len(ref.merge)} dataset; expected at least two to merge")
        seen = set()
        for i, member in enumerate(ref.merge):
            where = f"{key}.merge[{i}]"
            if member.merge or member.published or not member.dataset:
                raise ConfigError(f"{where}: expected a dataset with options (members are not merged or published)")
            _validate_dataset(where, member, registry)
            if member.dataset in seen:
                raise ConfigError(f"{where}.dataset: {member.dataset!r} is merged twice")
            seen.add(member.dataset)
    own = set(cfg.data.source_sizes) if has_own_data(ref) else set()
    for i, point in enumerate(ref.published):
        where = f"{key}.published[{i}]"
        if point.name in {p.name for p in ref.published[:i]}:
            raise ConfigError(f"{where}.name: {point.name!r} is used twice")
        if point.images in own or point.images in {p.images for p in ref.published[:i]}:
            raise ConfigError(f"{where}.images: {point.images} is already a point of the data-size axis of {key}; "
                              "expected a size of its own")
        _validate_published(where, point, cfg.models)


def _validate_published(key: str, point: PublishedWeights, models: ModelsConfig) -> None:
    import string

    from scaling.models import published

    if point.weights == "hf":
        if point.url:
            raise ConfigError(f"{key}.url: only for a weights file; weights: hf comes from the Hugging Face hub")
        try:
            published.check_tags(models.ladder, models.sizes, point.tag)
        except ValueError as e:
            raise ConfigError(f"{key}.tag: {e}") from None
        return
    if point.tag:
        raise ConfigError(f"{key}.tag: only for weights: hf; got weights {point.weights!r}")
    fields = {name for _, name, _, _ in string.Formatter().parse(point.weights + point.url) if name is not None}
    if fields - {"model"}:
        raise ConfigError(f"{key}.weights: got {point.weights!r}; expected 'hf' or a file path whose only "
                          f"placeholder is {{model}}")


def _validate_both(cfg: StudyConfig) -> None:
    sources, both_from = cfg.data.sources, cfg.sweep.both_from
    if both_from:
        names = [p.name for p in sources.get("natural", DatasetRef()).published]
        if both_from not in names:
            raise ConfigError(f"sweep.both_from: got {both_from!r}; expected the name of a published natural point "
                              f"(data.sources.natural.published): {', '.join(names) or '(none configured)'}")
        if "both" not in cfg.sweep.sources:
            raise ConfigError("sweep.both_from: set, but sweep.sources has no 'both'")
    if "both" not in cfg.sweep.sources:
        return
    for role in ("natural", "medical") if not both_from else ("medical",):
        if role in sources and not has_own_data(sources[role]):
            raise ConfigError(f"sweep.sources has 'both', which pre-trains on data.sources.{role}'s own images, but "
                              f"it only names published weights" + ("; set sweep.both_from to start from them"
                                                                    if role == "natural" else ""))


def _validate_dataset(key: str, ref: DatasetRef, registry) -> None:
    if ref.dataset not in registry.NAMES:
        raise ConfigError(f"{key}.dataset: got {ref.dataset!r}; expected one of: {', '.join(registry.NAMES)}")
    accepted = registry.dataset_options(ref.dataset)
    for opt, value in ref.options.items():
        if opt not in accepted:
            raise ConfigError(
                f"{key}.options.{opt}: unknown option for dataset {ref.dataset!r}; expected one of: "
                f"{', '.join(accepted) or '(none)'}"
            )
        hint = typing.get_type_hints(registry.dataset_class(ref.dataset).__init__).get(opt, Any)
        limits = {"min": 1} if opt.endswith("size") else {}
        _coerce(hint, value, f"{key}.options.{opt}", limits)
    for opt, p in accepted.items():
        if p.default is p.empty and opt not in ref.options:
            raise ConfigError(f"{key}.options.{opt}: missing; dataset {ref.dataset!r} needs it")


def _validate_models(models: ModelsConfig) -> None:
    from scaling import models as ladders

    if models.ladder not in ladders.LADDERS:
        raise ConfigError(f"models.ladder: got {models.ladder!r}; expected one of: {', '.join(ladders.LADDERS)}")
    names = [r.name for r in ladders.LADDERS[models.ladder].rungs]
    if not models.sizes:
        raise ConfigError(f"models.sizes: empty; expected rung names of ladder {models.ladder!r}: {', '.join(names)}")
    for i, size in enumerate(models.sizes):
        if size not in names:
            raise ConfigError(
                f"models.sizes[{i}]: got {size!r}; expected a rung of ladder {models.ladder!r}: {', '.join(names)}"
            )


def override_help(cls=StudyConfig, path: str = "") -> list[str]:
    """One line per settable key: `key.path  type  (default)`, for --help."""
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = _join(path, f.name)
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            lines += override_help(tp, key)
            continue
        if f.default is not dataclasses.MISSING:
            default = f" (default {f.default!r})"
        elif f.default_factory is not dataclasses.MISSING:
            default = f" (default {f.default_factory()!r})"
        else:
            default = " (required)"
        note = f"; {f.metadata['help']}" if "help" in f.metadata else ""
        lines.append(f"  {key:<36} {_describe(tp)}{default}{note}")
    return lines


def to_dict(cfg: StudyConfig) -> dict:
    return dataclasses.asdict(cfg)
