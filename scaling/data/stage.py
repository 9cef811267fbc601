"""The data stage of a study: every configured dataset parsed, checked and materialised into shards once,
with the patient-level train/validation split of each, the published weights found, and the leakage guard
applied (no target validation/test image in a pre-training source), before any training starts."""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from scaling.data.base import DataError
from scaling.data.leakage import LeakageError, find_leaks, leak_message
from scaling.data.merged import MergedDataset, file_name
from scaling.data.registry import open_dataset
from scaling.data.shards import Preprocess, ShardSet, prepare_shards
from scaling.data.subsets import patient_split

#: a pre-training source's validation split only shows progress (nothing is tuned on it): keep it small
SOURCE_VAL_IMAGES = 512


@dataclass(frozen=True)
class PreparedSet:
    """One dataset's shards and its train / val / test indices (rows of the shard set)."""

    shards: ShardSet
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


@dataclass(frozen=True)
class StudyData:
    target: PreparedSet
    #: by source role ("natural", "medical"); a source of published weights alone has none
    sources: dict[str, PreparedSet]
    #: published weights files by (role, images, rung), see scaling.models.published.resolve
    weights: dict[tuple[str, int, str], str] = field(default_factory=dict)
    #: the leakage guard's counts by source role: near-duplicates found, source images removed
    leakage: dict[str, dict[str, int]] = field(default_factory=dict)


def prepare_study_data(cfg, log=print) -> StudyData:
    """Open every dataset (bad input raises DataError naming the file), check that the configured subset
    sizes fit, and build or reuse the shards. `cfg` is a scaling.config.StudyConfig."""
    from scaling import models
    from scaling.models import published
    from scaling.config import has_own_data

    data = cfg.data
    problems = []  # every missing weight and bad dataset reported at once
    try:
        weights = published.resolve(cfg)
    except models.ModelError as e:
        weights, problems = {}, [str(e)]
    datasets = {"target": open_source("data.target", data.target)}
    datasets.update({role: open_source(f"data.sources.{role}", ref) for role, ref in data.sources.items()
                     if has_own_data(ref)})
    for role, dataset in datasets.items():  # parse everything first, and report every bad dataset at once
        try:
            dataset.records()
        except DataError as e:
            problems.append(f"{'data.target' if role == 'target' else 'data.sources.' + role}: {e}")
    if problems:
        raise DataError("\n  ".join(["cannot read the study's data:", *problems]))
    val_fractions = {"target": data.val_fraction}
    for role in [r for r in datasets if r != "target"]:
        available = int((datasets[role].records()["split"] == "train").sum())
        val_fractions[role] = min(data.val_fraction, SOURCE_VAL_IMAGES / available)
        left = int(available * (1 - val_fractions[role]))
        too_big = [n for n in data.source_sizes if n > left]
        if too_big:
            raise DataError(
                f"data.source_sizes: {too_big} larger than the about {left} training images of data.sources.{role} "
                f"({datasets[role].name}, {available} images less its validation split)"
            )
    preprocess = Preprocess(resolution=data.resolution, crop=data.crop, clahe=data.clahe, storage=data.storage,
                            encoding=data.encoding)
    prepared = {}
    for role, dataset in datasets.items():
        started = time.perf_counter()
        shards = prepare_shards(dataset, preprocess, Path(data.cache_dir).resolve(), on_bad_image=data.on_bad_image)
        try:
            prepared[role] = _split(shards, val_fractions[role], cfg.seed)
        except ValueError as e:  # patient_split: too few patients to hold out any (or to keep any)
            key = "data.target" if role == "target" else f"data.sources.{role}"
            raise DataError(f"{key} ({dataset.name}): cannot carve a validation split out of its training split: "
                            f"{e}; expected more patients in it, or another data.val_fraction") from None
        skipped = f", {shards.skipped} bad images skipped" if shards.skipped else ""
        log(f"data: {role:<8} {dataset.name:<20} {len(shards.records):>7} images -> {shards.path} "
            f"({time.perf_counter() - started:.1f} s{skipped})")
    target = prepared.pop("target")
    leakage = {}
    if data.leakage.policy != "off":
        for role in prepared:
            prepared[role], leakage[role] = guard(target, datasets["target"], prepared[role], datasets[role], role,
                                                  data.leakage.policy, data.leakage.max_distance)
            log(f"data: {role:<8} leakage guard: {leakage[role]['near_duplicates']} near-duplicates of target "
                f"val/test images, {leakage[role]['removed']} source images removed")
    for role, source in prepared.items():
        if max(data.source_sizes) > len(source.train):
            raise DataError(f"data.source_sizes: {max(data.source_sizes)} larger than the {len(source.train)} "
                            f"training images of data.sources.{role} after its validation split")
    for (role, images, model), path in sorted(weights.items()):
        log(f"data: {role:<8} published {images:>9} images, {model}: {path}")
    return StudyData(target=target, sources=prepared, weights=weights, leakage=leakage)


def guard(target: PreparedSet, target_dataset, source: PreparedSet, source_dataset, role: str, policy: str,
          max_distance: int) -> tuple[PreparedSet, dict[str, int]]:
    """The leakage guard for one source: its train and validation images (what pre-training sees) against the
    target's validation and test images, by content. policy "error" raises LeakageError naming both files of
    the first pairs; "remove" drops the source images and returns the source without them, with the counts."""
    evaluation = np.concatenate([target.val, target.test])
    used = np.concatenate([source.train, source.val])
    keys = {"target": target.shards.records["key"], "source": source.shards.records["key"]}
    leaks = find_leaks(target.shards, evaluation, source.shards, used, max_distance,
                       lambda row: file_name(target_dataset, keys["target"].loc[row]),
                       lambda row: file_name(source_dataset, keys["source"].loc[row]))
    removed = np.unique([leak.source_row for leak in leaks])
    if len(leaks) and policy == "error":
        raise LeakageError(leak_message(role, leaks, max_distance))
    kept = replace(source, train=np.setdiff1d(source.train, removed), val=np.setdiff1d(source.val, removed))
    return kept, {"near_duplicates": len(leaks), "removed": int(len(removed))}


def open_source(key: str, ref):
    """The dataset of a config entry (scaling.config.DatasetRef): one registered dataset, or a merged source."""
    try:
        if ref.merge:
            return MergedDataset([open_dataset(m.dataset, **m.options) for m in ref.merge], labels=ref.labels)
        return open_dataset(ref.dataset, **ref.options)
    except (TypeError, ValueError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{key} ({ref.dataset}): {e}") from None


def _split(shards: ShardSet, val_fraction: float, seed: int) -> PreparedSet:
    recs = shards.records
    index = recs["index"].to_numpy()
    test = index[recs["split"].to_numpy() == "test"]
    if (recs["split"] == "val").any():  # the dataset defines its own validation split
        train = index[recs["split"].to_numpy() == "train"]
        val = index[recs["split"].to_numpy() == "val"]
    else:
        train_recs = recs[recs["split"] == "train"]
        train, val = patient_split(train_recs, val_fraction, seed)
    return PreparedSet(shards=shards, train=np.asarray(train), val=np.asarray(val), test=np.asarray(test))
