"""`validate`: the checks of a study config that need several keys or a registry (scaling.data's datasets,
scaling.models' ladders and published weights), run once its values have their types."""
from __future__ import annotations

import string
import typing
from typing import Annotated, Any

from annotated_types import Ge

from scaling.config.schema import (ConfigError, DatasetRef, ModelsConfig, PublishedWeights, StudyConfig, coerce,
                                   has_own_data)
from scaling.data import registry
from scaling.data.encoding import encoding_problem


def validate(cfg: StudyConfig) -> None:
    """Checks that need more than one key or a registry: dataset and model names, dataset options, merged and
    published sources, subset sizes against what a synthetic source holds, sweep sources against configured
    sources."""
    target = cfg.data.target
    if not target.dataset or target.merge or target.published:
        raise ConfigError("data.target: expected one dataset (data.target.dataset), not a merged or published source")
    _validate_dataset("data.target", target)
    if problem := encoding_problem(cfg.data.encoding, cfg.data.storage):
        raise ConfigError(f"data.encoding: {problem}")
    for role, ref in cfg.data.sources.items():
        if role not in ("natural", "medical"):
            raise ConfigError(f"data.sources.{role}: unknown source role; expected natural or medical")
        _validate_source(f"data.sources.{role}", ref, cfg)
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
    _validate_slices(cfg)
    _validate_reference(cfg)
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


def _validate_slices(cfg: StudyConfig) -> None:
    """Each slice's rungs, sources, pre-training sizes and shots among the study's (the data and the pre-training
    are prepared for those); its scratch target sizes only where it has scratch."""
    sizes = set(cfg.data.source_sizes) | {p.images for ref in cfg.data.sources.values() for p in ref.published}
    allowed = {"sizes": ("models.sizes", cfg.models.sizes), "sources": ("sweep.sources", cfg.sweep.sources),
               "source_sizes": ("data.source_sizes or a published point's images", sorted(sizes)),
               "shots": ("data.shots", cfg.data.shots)}
    for j, part in enumerate(cfg.sweep.slices):
        key = f"sweep.slices[{j}]"
        for name, (where, values) in allowed.items():
            for i, value in enumerate(getattr(part, name) or []):
                if value not in values:
                    raise ConfigError(f"{key}.{name}[{i}]: got {value!r}; expected one of {where}: "
                                      f"{', '.join(map(str, values))}")
        sources = cfg.sweep.sources if part.sources is None else part.sources
        if part.scratch_target_sizes and "scratch" not in sources:
            raise ConfigError(f"{key}.scratch_target_sizes: got {part.scratch_target_sizes}; they add from-scratch "
                              f"points, but the slice's sources have no 'scratch'")


def _validate_reference(cfg: StudyConfig) -> None:
    """Reference images come from a synthetic target's generator, beyond the images the target holds."""
    n, target = cfg.sweep.scratch_reference_images, cfg.data.target
    if not n:
        return
    if not target.dataset.startswith("synthetic-"):
        raise ConfigError(f"sweep.scratch_reference_images: got {n}; expected 0 for target {target.dataset!r} "
                          "(only a synthetic target's generator can render more images of its kind)")
    size = target.options.get("size", registry.dataset_options(target.dataset)["size"].default)
    if n <= size:
        raise ConfigError(f"sweep.scratch_reference_images: got {n}; expected more than the target's {size} "
                          "images (data.target.options.size) or 0")


def _validate_source(key: str, ref: DatasetRef, cfg: StudyConfig) -> None:
    if ref.dataset and ref.merge:
        raise ConfigError(f"{key}: has both dataset and merge; expected one of them")
    if not has_own_data(ref) and not ref.published:
        raise ConfigError(f"{key}: expected a dataset, a merge of datasets or published weights")
    if ref.dataset:
        _validate_dataset(key, ref)
    if ref.merge:
        if len(ref.merge) < 2:
            raise ConfigError(f"{key}.merge: got {len(ref.merge)} dataset; expected at least two to merge")
        seen = set()
        for i, member in enumerate(ref.merge):
            where = f"{key}.merge[{i}]"
            if member.merge or member.published or not member.dataset:
                raise ConfigError(f"{where}: expected a dataset with options (members are not merged or published)")
            _validate_dataset(where, member)
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
    from scaling.models import published  # torch and timm: only when a config names published weights

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


def _validate_dataset(key: str, ref: DatasetRef) -> None:
    if ref.dataset not in registry.NAMES:
        raise ConfigError(f"{key}.dataset: got {ref.dataset!r}; expected one of: {', '.join(registry.NAMES)}")
    accepted = registry.dataset_options(ref.dataset)
    hints = typing.get_type_hints(registry.dataset_class(ref.dataset).__init__)
    for opt, value in ref.options.items():
        if opt not in accepted:
            raise ConfigError(
                f"{key}.options.{opt}: unknown option for dataset {ref.dataset!r}; expected one of: "
                f"{', '.join(accepted) or '(none)'}"
            )
        hint = hints.get(opt, Any)
        coerce(Annotated[hint, Ge(1)] if opt.endswith("size") and hint in (int, float) else hint, value,
               f"{key}.options.{opt}")
    for opt, p in accepted.items():
        if p.default is p.empty and opt not in ref.options:
            raise ConfigError(f"{key}.options.{opt}: missing; dataset {ref.dataset!r} needs it")


def _validate_models(models: ModelsConfig) -> None:
    from scaling.models import LADDERS  # torch and timm: the ladders are models

    if models.ladder not in LADDERS:
        raise ConfigError(f"models.ladder: got {models.ladder!r}; expected one of: {', '.join(LADDERS)}")
    names = [r.name for r in LADDERS[models.ladder].rungs]
    if not models.sizes:
        raise ConfigError(f"models.sizes: empty; expected rung names of ladder {models.ladder!r}: {', '.join(names)}")
    for i, size in enumerate(models.sizes):
        if size not in names:
            raise ConfigError(
                f"models.sizes[{i}]: got {size!r}; expected a rung of ladder {models.ladder!r}: {', '.join(names)}"
            )

