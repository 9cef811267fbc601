"""The config classes -- every key with its type, range and default -- and checking raw values against them.

Types and ranges are written in the annotations; pydantic checks them when a config loads, so an unknown key, a
wrong type or an impossible value fails with its key path, the bad value and what was expected. Values are taken
as YAML typed them (Strict*: no bool for an integer, no string for a number). A failure is one line,
`key.path: got <value>; expected <what>`, written from pydantic's error that a walk of the keys meets first. The
classes stay plain dataclasses: building one in code checks nothing.
"""
from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from annotated_types import Ge, Gt, Len, Lt, MinLen
from pydantic import ConfigDict, StrictBool, StrictFloat, StrictInt, StrictStr, TypeAdapter, ValidationError

#: the pre-training sources a fine-tuning trial can start from; "both" = natural, then medical
SCRATCH, NATURAL, MEDICAL, BOTH = "scratch", "natural", "medical", "both"
SOURCES = (SCRATCH, NATURAL, MEDICAL, BOTH)

#: pydantic's settings for every config class (it reads this attribute of a plain dataclass): a key the class
#: does not have is an error; a number as a key of sources or options is read as its text (like a role name)
NO_UNKNOWN_KEYS = ConfigDict(extra="forbid", coerce_numbers_to_str=True)


class ConfigError(ValueError):
    """A bad configuration value; the message starts with the key path."""


@dataclass
class PublishedWeights:
    """A pre-training point that is not trained: published weights for every rung, placed on the data-size
    axis at the number of images they were pre-trained on."""

    __pydantic_config__ = NO_UNKNOWN_KEYS
    #: names the point (e.g. imagenet21k) in `sweep.both_from` and in messages
    name: StrictStr
    #: pre-training images behind the weights: the point's place on the data-size axis
    images: Annotated[StrictInt, Ge(1)]
    #: "hf": timm's weights from the local Hugging Face cache; otherwise a file path, `{model}` -> the rung name
    weights: StrictStr = "hf"
    #: timm pretrained tag for weights "hf" (e.g. goog_in21k); empty: the ladder's own tag
    tag: StrictStr = ""
    #: where `python -m scaling.models download` fetches a file path from (`{model}` -> the rung name)
    url: StrictStr = ""


@dataclass
class DatasetRef:
    """A data source: one dataset from `scaling.data.registry` with its constructor options (e.g. root, version,
    size), or the union of several (`merge`) on their shared labels; a pre-training source may also name
    published weights (`published`) as further points of its data-size axis, or consist of them alone."""

    __pydantic_config__ = NO_UNKNOWN_KEYS
    dataset: StrictStr = ""
    #: checked against the dataset's constructor by `validate`
    options: dict[str, Any] = field(default_factory=dict)
    #: members of a merged source, each a dataset with options
    merge: list[DatasetRef] = field(default_factory=list)
    #: a merged source's labels: "shared" (present in every member) or "union" (missing ones are unknown, NaN)
    labels: Literal["shared", "union"] = "shared"
    published: list[PublishedWeights] = field(default_factory=list)


@dataclass
class LeakageConfig:
    """The guard against pre-training on the target's evaluation images (scaling/data/leakage.py)."""

    __pydantic_config__ = NO_UNKNOWN_KEYS
    #: error: stop, naming both files; remove: drop the source images and count them; off: no check
    policy: Literal["error", "remove", "off"] = "error"
    #: near-duplicate when 256-bit difference hashes differ in at most this many bits
    max_distance: Annotated[StrictInt, Ge(0), Lt(64)] = 8


@dataclass
class DataConfig:
    __pydantic_config__ = NO_UNKNOWN_KEYS
    target: DatasetRef
    #: pre-training sources by role; "both" in the sweep uses natural then medical
    sources: dict[str, DatasetRef] = field(default_factory=dict)
    resolution: Annotated[StrictInt, Ge(8)] = 48
    crop: Literal["center", "none"] = "center"
    clahe: StrictBool = False
    storage: Literal["uint8", "uint16"] = "uint8"
    #: how shards store images; checked (with storage) by checks.validate: a pattern, not a Literal
    encoding: StrictStr = field(default="raw", metadata={"help": "raw, png, jpeg:Q or webp:Q (quality Q 1-100)"})
    #: pre-training data sizes (images); nested subsets of each source's train split
    source_sizes: Annotated[list[Annotated[StrictInt, Ge(1)]], MinLen(1)] = field(default_factory=lambda: [1000])
    #: fine-tuning examples per class; 0 = the full target train split
    shots: Annotated[list[Annotated[StrictInt, Ge(0)]], MinLen(1)] = field(default_factory=lambda: [0])
    val_fraction: Annotated[StrictFloat, Gt(0), Lt(1)] = 0.15
    on_bad_image: Literal["error", "skip"] = "error"
    leakage: LeakageConfig = field(default_factory=LeakageConfig)
    cache_dir: StrictStr = ".cache/scaling"


@dataclass
class ModelsConfig:
    __pydantic_config__ = NO_UNKNOWN_KEYS
    ladder: StrictStr = "cpu"
    #: rung names of the ladder, the model-size axis
    sizes: Annotated[list[StrictStr], MinLen(1)] = field(default_factory=list)


@dataclass
class Recipe:
    """How one training job runs; steps are optimizer steps at the effective batch size."""

    __pydantic_config__ = NO_UNKNOWN_KEYS
    steps: Annotated[StrictInt, Ge(1)] = 500
    batch_size: Annotated[StrictInt, Ge(1)] = 64
    #: micro-batches per optimizer step, so the effective batch does not depend on memory
    grad_accum: Annotated[StrictInt, Ge(1)] = 1
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: Annotated[StrictFloat, Gt(0)] = 0.1
    momentum: Annotated[StrictFloat, Ge(0), Lt(1)] = 0.9
    weight_decay: Annotated[StrictFloat, Ge(0)] = 0.0
    warmup_steps: Annotated[StrictInt, Ge(0)] = 0
    #: "bit": step decay by 10x at 30/60/90% of the steps (BiT-HyperRule); "cosine"; "constant"
    schedule: Literal["bit", "cosine", "constant"] = "bit"
    #: class-balanced sampling of the training set (for imbalanced targets)
    balanced_sampling: StrictBool = False
    eval_every: Annotated[StrictInt, Ge(1)] = 100
    augment: StrictBool = True
    #: recompute activations in the backward pass (timm's set_grad_checkpointing): less memory, ~30% more compute
    grad_checkpointing: StrictBool = False
    #: images per forward pass and worker: empty = batch_size / (workers x grad_accum); "auto" = the largest that
    #: fits the GPU, measured by a preflight on the first worker (scaling/train/memory.py); the effective batch
    #: stays batch_size either way
    micro_batch: Annotated[StrictInt, Ge(1)] | Literal["auto"] | None = None


#: a log-uniform search range [low, high]
SearchRange = Annotated[list[Annotated[StrictFloat, Gt(0)]], Len(2, 2)]


@dataclass
class FinetuneConfig:
    __pydantic_config__ = NO_UNKNOWN_KEYS
    #: every trial takes its steps from `budgets` and its lr and weight decay from the ranges below
    recipe: Recipe = field(default_factory=Recipe)
    #: fine-tuning budgets in optimizer steps, the budget axis
    budgets: Annotated[list[Annotated[StrictInt, Ge(1)]], MinLen(1)] = field(default_factory=lambda: [500])
    #: log-uniform search ranges tuned by Optuna inside every cell
    lr_range: SearchRange = field(default_factory=lambda: [1e-4, 1e-2])
    weight_decay_range: SearchRange = field(default_factory=lambda: [1e-6, 1e-3])
    #: the learning-rate range of cells trained from scratch (random weights take larger steps than
    #: pre-trained ones); empty = lr_range
    scratch_lr_range: list[Annotated[StrictFloat, Gt(0)]] = field(default_factory=list)

    def lr_range_for(self, source: str) -> list[float]:
        """The learning-rate range searched in cells of `source`."""
        return self.scratch_lr_range if source == "scratch" and self.scratch_lr_range else self.lr_range


@dataclass
class SliceConfig:
    """One grid of a study that is a union of grids (`sweep.slices`): the study's own grid with the keys given
    here replaced, e.g. `{sizes: [w12], source_sizes: [4096], budgets: [100, 200]}` adds a budget axis on one
    rung without multiplying the whole grid. A key left out keeps the study's value; rungs, sources, pre-training
    sizes and shots must be ones the study has (its data and pre-training are prepared for them), budgets and
    scratch target sizes may be new. A point in several grids runs once."""

    __pydantic_config__ = NO_UNKNOWN_KEYS
    #: rungs, of models.sizes
    sizes: Annotated[list[StrictStr], MinLen(1)] | None = None
    #: of sweep.sources
    sources: Annotated[list[Literal["scratch", "natural", "medical", "both"]], MinLen(1)] | None = None
    #: pre-training sizes, of the sources' data-size axes (data.source_sizes and published points)
    source_sizes: Annotated[list[Annotated[StrictInt, Ge(1)]], MinLen(1)] | None = None
    #: fine-tuning budgets in optimizer steps
    budgets: Annotated[list[Annotated[StrictInt, Ge(1)]], MinLen(1)] | None = None
    #: of data.shots
    shots: Annotated[list[Annotated[StrictInt, Ge(0)]], MinLen(1)] | None = None
    #: from-scratch target subsets (as sweep.scratch_target_sizes)
    scratch_target_sizes: list[Annotated[StrictInt, Ge(1)]] | None = None


@dataclass
class SweepConfig:
    __pydantic_config__ = NO_UNKNOWN_KEYS
    sources: Annotated[list[Literal["scratch", "natural", "medical", "both"]], MinLen(1)] = field(
        default_factory=lambda: ["scratch", "natural", "medical"]
    )
    #: fine-tuning seeds: every trial trains one model per seed side by side and reports their mean
    seeds: Annotated[list[Annotated[StrictInt, Ge(0)]], MinLen(1)] = field(default_factory=lambda: [0, 1])
    #: Optuna hyper-parameter samples per cell of the scaling grid
    trials_per_cell: Annotated[StrictInt, Ge(1)] = 1
    #: how they are drawn: `latin` = a Latin hypercube per cell over the log ranges, seeded by the study seed
    #: and the cell (every cell gets the same spread; a trial's values do not depend on the order trials end);
    #: `tpe` = one TPE over all cells, learning from every trial (see scaling/sweep/search.py)
    sampler: Literal["latin", "tpe"] = "latin"
    max_concurrent_trials: Annotated[StrictInt, Ge(1)] = 1
    #: from-scratch training also on nested, stratified subsets of the target's training split of these sizes
    #: (images), besides the full split: the curve that effective data transferred is read from; [] = none
    scratch_target_sizes: list[Annotated[StrictInt, Ge(1)]] = field(default_factory=list)
    #: ASHA: trials are compared at these evaluation points and the worse stopped
    asha_grace_evals: Annotated[StrictInt, Ge(1)] = 1
    asha_reduction_factor: Annotated[StrictInt, Ge(2)] = 3
    #: what "both" starts from: empty = the study's own natural pre-training at each size; the name of a
    #: published natural point = those weights, then the study's medical pre-training
    both_from: StrictStr = ""
    #: further grids, each the study's own with some keys replaced (see `SliceConfig`); the study runs the union
    #: of its own grid and these
    slices: list[SliceConfig] = field(default_factory=list)
    #: on a synthetic target: training images its generator renders for from-scratch reference runs (the target
    #: with its `size` option raised to this; its first images are the target's own, its validation and test
    #: images are the target's). Scratch target sizes above the target's training split draw from them: a
    #: scratch curve beyond the split, that effective data transferred is read from, marked `reference` in the
    #: results and used for nothing else. 0 = none
    scratch_reference_images: Annotated[StrictInt, Ge(0)] = 0
    #: which points of the grid are trained: "full" = the cross product of the axes; "cover" = each value of each
    #: axis in at least one trial (and every hyper-parameter sample of one cell): what a rehearsal runs
    grid: Literal["full", "cover"] = "full"


@dataclass
class ResourcesConfig:
    __pydantic_config__ = NO_UNKNOWN_KEYS
    #: Ray Train workers per job (DDP, restarts after a lost worker: the path for clusters); 0 = train in the
    #: Tune trial's own process (Train's local mode: no worker processes to start; the job still checkpoints
    #: to its folder and resumes from it), the trial holding cpus_per_worker (and gpus_per_worker) itself
    num_workers: Annotated[StrictInt, Ge(0)] = field(
        default=1, metadata={"help": "Train workers per job; 0 = train in the Tune trial's process"})
    use_gpu: StrictBool = False
    cpus_per_worker: Annotated[StrictFloat, Gt(0)] = 1.0
    #: GPUs per Train worker when use_gpu is true
    gpus_per_worker: Annotated[StrictFloat, Gt(0)] = 1.0
    #: DataLoader worker processes per Train worker
    loader_workers: Annotated[StrictInt, Ge(0)] = 0
    #: bf16 autocast and channels_last (only takes effect on GPU)
    bf16: StrictBool = True
    max_failures: Annotated[StrictInt, Ge(0)] = 1


@dataclass
class TrackingConfig:
    __pydantic_config__ = NO_UNKNOWN_KEYS
    #: MLflow tracking URI; empty = the study starts its own server with SQLite in the study directory
    uri: StrictStr = ""
    experiment: StrictStr = ""


@dataclass
class StudyConfig:
    __pydantic_config__ = NO_UNKNOWN_KEYS
    name: StrictStr
    data: DataConfig
    models: ModelsConfig = field(default_factory=ModelsConfig)
    pretrain: Recipe = field(default_factory=Recipe)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    seed: Annotated[StrictInt, Ge(0)] = 0
    #: study directory; empty = runs/<name>
    out_dir: StrictStr = ""

    @property
    def study_dir(self) -> Path:
        return Path(self.out_dir or Path("runs") / self.name)


def has_own_data(ref: DatasetRef) -> bool:
    """Whether a source has images of its own to pre-train on (not only published weights)."""
    return bool(ref.dataset or ref.merge)


# ---------------------------------------------------------------------------------------------- checking values


def parse_study(raw: dict) -> StudyConfig:
    """The typed config of a raw mapping (YAML with overrides applied); ConfigError naming the first bad key."""
    return _checked(StudyConfig, raw, "", strict=None)


def coerce(hint: Any, value: Any, key: str, *, text: bool = False) -> Any:
    """`value` as the type `hint` (a dataset option's annotation: bool, int, float, str, Literal, their
    unions): as YAML typed it, or with `text` parsed from command-line text ("8", "false"); ConfigError naming
    `key`, the value and what was expected (a Literal's choices as typed on a command line with `text`)."""
    return _checked(hint, value, key, strict=not text, quote=str if text else repr)


@functools.cache
def _adapter(hint: Any) -> TypeAdapter:
    return TypeAdapter(hint)


def _checked(hint: Any, value: Any, key: str, strict: bool | None, quote=repr) -> Any:
    try:
        return _adapter(hint).validate_python(value, strict=strict)
    except ValidationError as err:
        raise ConfigError(_message(_first(err.errors()), hint, key, quote)) from None


def _first(errors: list[dict]) -> dict:
    """The error a walk of the keys meets first: at each level its unknown keys (alphabetically; often the typo
    behind a "missing"), then its keys in declaration order, depth first."""
    seen = {}
    for i, e in enumerate(errors):  # pydantic lists the keys of a level in declaration order, unknown ones last
        for d in range(len(e["loc"])):
            seen.setdefault(e["loc"][:d + 1], i)

    def rank(e):
        unknown = e["type"] == "unexpected_keyword_argument"
        return [(0, str(p)) if unknown and d == len(e["loc"]) - 1 else (1, seen[e["loc"][:d + 1]])
                for d, p in enumerate(e["loc"])]
    return min(errors, key=rank)


def _message(error: dict, hint: Any, key: str, quote) -> str:
    """One pydantic error as `key.path: got <value>; expected <what>`."""
    tp, owner, key = _locate(hint, error["loc"], key)
    kind, value, ctx = error["type"], error["input"], error.get("ctx", {})
    if kind == "unexpected_keyword_argument":
        return f"{key}: unknown key; expected one of: {', '.join(f.name for f in dataclasses.fields(owner))}"
    if kind == "missing":
        return f"{key}: missing; expected {describe(tp)}"
    if dataclasses.is_dataclass(tp):
        return f"{key}: expected a mapping, got {value!r}"
    if kind == "too_short" and ctx["min_length"] == 1:
        return f"{key}: got an empty list; expected at least one {describe(typing.get_args(tp)[0])}"
    if kind in ("too_short", "too_long"):
        return f"{key}: got {value!r}; expected a list of {ctx.get('min_length', ctx.get('max_length'))} values"
    if tp is float and type(value) is int:
        value = float(value)  # as it would be stored: a float key takes an integer
    for op, bound in ((">=", "ge"), (">", "gt"), ("<", "lt")):
        if tp in (int, float) and bound in ctx:
            limit = ctx[bound]  # pydantic casts a float key's bound to float: shown as written (0, not 0.0)
            return f"{key}: got {value!r}; expected a value {op} {int(limit) if limit == int(limit) else limit}"
    return f"{key}: got {value!r}; expected {describe(tp, quote)}"


def _locate(tp: Any, loc: tuple, key: str) -> tuple[Any, type | None, str]:
    """The type an error location points at, the dataclass holding it and its key path; at a union of several
    types the union itself (the rest of `loc` names its members)."""
    owner = None
    for i, part in enumerate(loc):
        tp = _bare(tp)
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if dataclasses.is_dataclass(tp):
            owner, tp, key = tp, typing.get_type_hints(tp).get(part), _join(key, part)
        elif origin is list:
            tp, key = args[0], f"{key}[{part}]"
        elif origin is dict:
            tp, key = args[0 if loc[i + 1:i + 2] == ("[key]",) else 1], _join(key, str(part))
        else:
            break
    return _bare(tp), owner, key


def _bare(tp: Any) -> Any:
    """`tp` without Annotated's constraints and without the None of an Optional."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        return _bare(args[0])
    inner = [a for a in args if a is not type(None)]
    return _bare(inner[0]) if origin in (typing.Union, types.UnionType) and len(inner) == 1 else tp


def describe(tp, quote=repr) -> str:
    """What a value of type `tp` is, in words ("an integer", "one of 'sgd', 'adamw'"), for messages and --help."""
    tp = _bare(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp) or origin is dict:
        return "a mapping"
    if origin is Literal:
        return "one of " + ", ".join(map(quote, args))
    if origin is list:
        return f"a list of {describe(args[0], quote)}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a, quote) for a in args if a is not type(None))
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name

