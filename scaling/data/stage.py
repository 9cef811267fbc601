"""The data stage of a study: every configured dataset parsed, checked and materialised into shards once,
with the patient-level train/validation split of each, the published weights found, and the leakage guard
applied (no target validation/test image in a pre-training source), before any training starts."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from scaling.config import DataConfig, DatasetRef, LeakageConfig, StudyConfig, has_own_data
from scaling.data.base import DataError, Dataset
from scaling.data.executors import MapChunks, in_process
from scaling.data.leakage import LeakageError, find_leaks, leak_message
from scaling.data.merged import MergedDataset, file_name
from scaling.data.preprocess import Preprocess
from scaling.data.registry import open_dataset
from scaling.data.shards import ShardSet, prepare_shards
from scaling.data.subsets import patient_split

#: a pre-training source's validation split only shows progress (nothing is tuned on it): keep it small
SOURCE_VAL_IMAGES = 512

Log = Callable[[str], None]


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
    #: more images of a synthetic target for from-scratch reference runs (scaling/sweep/reference.py), or None
    reference: PreparedSet | None = None


def prepare_study_data(cfg: StudyConfig, log: Log = print, map_chunks: MapChunks = in_process) -> StudyData:
    """Open every dataset (bad input raises DataError naming the file), check that the configured subset
    sizes fit, and build or reuse the shards; `map_chunks` runs the chunks of the builds and the hashing of
    older sets (the study passes the Ray cluster's, `scaling.cluster.RayChunks`)."""
    data = cfg.data
    weights, problems = resolve_weights(cfg)
    datasets = open_datasets(data)
    check_readable(datasets, problems)
    val_fractions = validation_fractions(datasets, data.val_fraction)
    check_sizes_fit_estimate(datasets, val_fractions, data.source_sizes)
    prepared = {role: prepare_set(role, dataset, data, val_fractions[role], cfg.seed, log, map_chunks)
                for role, dataset in datasets.items()}
    target = prepared.pop("target")
    sources, leakage = guard_sources(target, prepared, datasets, data.leakage, log, map_chunks)
    check_sizes_fit_split(sources, data.source_sizes)
    for (role, images, model), path in sorted(weights.items()):
        log(f"data: {role:<8} published {images:>9} images, {model}: {path}")
    return StudyData(target=target, sources=sources, weights=weights, leakage=leakage)


def config_key(role: str) -> str:
    """The config key of a dataset's role, as error messages name it."""
    return "data.target" if role == "target" else f"data.sources.{role}"


def resolve_weights(cfg: StudyConfig) -> tuple[dict[tuple[str, int, str], str], list[str]]:
    """The published weights files (see scaling.models.published.resolve), and what is missing, reported with
    the datasets' problems."""
    # scaling.models imports torch and timm (seconds): `python -m scaling.data` imports this module for
    # open_source and stays without them
    from scaling.models import ModelError
    from scaling.models.published import resolve

    try:
        return resolve(cfg), []
    except ModelError as e:
        return {}, [str(e)]


def open_datasets(data: DataConfig) -> dict[str, Dataset]:
    """The target's and every source's dataset by role; sources of published weights alone have none."""
    datasets = {"target": open_source("data.target", data.target)}
    datasets.update({role: open_source(config_key(role), ref) for role, ref in data.sources.items()
                     if has_own_data(ref)})
    return datasets


def check_readable(datasets: dict[str, Dataset], problems: list[str]) -> None:
    """Parse every dataset's records first, and report every bad dataset (and `problems`) at once."""
    for role, dataset in datasets.items():
        try:
            dataset.records()
        except DataError as e:
            problems.append(f"{config_key(role)}: {e}")
    if problems:
        raise DataError("\n  ".join(["cannot read the study's data:", *problems]))


def validation_fractions(datasets: dict[str, Dataset], val_fraction: float) -> dict[str, float]:
    """The share of each dataset's training split held out for validation: data.val_fraction, but at most
    SOURCE_VAL_IMAGES images of a source."""
    return {role: val_fraction if role == "target" else
            min(val_fraction, SOURCE_VAL_IMAGES / _train_images(dataset)) for role, dataset in datasets.items()}


def check_sizes_fit_estimate(datasets: dict[str, Dataset], val_fractions: dict[str, float],
                             source_sizes: list[int]) -> None:
    """Before any shard is built: the subset sizes against the training images a source will about have left
    after its validation split (`check_sizes_fit_split` checks the exact count once the split is made)."""
    for role in [r for r in datasets if r != "target"]:
        available = _train_images(datasets[role])
        left = int(available * (1 - val_fractions[role]))
        too_big = [n for n in source_sizes if n > left]
        if too_big:
            raise DataError(
                f"data.source_sizes: {too_big} larger than the about {left} training images of data.sources.{role} "
                f"({datasets[role].name}, {available} images less its validation split)"
            )


def prepare_set(role: str, dataset: Dataset, data: DataConfig, val_fraction: float, seed: int,
                log: Log, map_chunks: MapChunks = in_process) -> PreparedSet:
    """The dataset's shards, built or reused, and its train / validation / test rows."""
    started = time.perf_counter()
    preprocess = Preprocess(resolution=data.resolution, crop=data.crop, clahe=data.clahe, storage=data.storage,
                            encoding=data.encoding)
    shards = prepare_shards(dataset, preprocess, Path(data.cache_dir).resolve(), on_bad_image=data.on_bad_image,
                            map_chunks=map_chunks)
    try:
        prepared = split_rows(shards, val_fraction, seed, carve_test=role == "target")
    except ValueError as e:  # patient_split: too few patients to hold out any (or to keep any)
        raise DataError(f"{config_key(role)} ({dataset.name}): cannot carve a validation split out of its "
                        f"training split: {e}; expected more patients in it, or another data.val_fraction") from None
    skipped = f", {shards.skipped} bad images skipped" if shards.skipped else ""
    log(f"data: {role:<8} {dataset.name:<20} {len(shards.records):>7} images -> {shards.path} "
        f"({time.perf_counter() - started:.1f} s{skipped})")
    return prepared


def guard_sources(target: PreparedSet, sources: dict[str, PreparedSet], datasets: dict[str, Dataset],
                  leakage: LeakageConfig, log: Log, map_chunks: MapChunks = in_process
                  ) -> tuple[dict[str, PreparedSet], dict[str, dict[str, int]]]:
    """The leakage guard over every source (see `guard`) unless data.leakage.policy is "off": the sources, less
    the images it removed, and its counts by role."""
    if leakage.policy == "off":
        return sources, {}
    guarded, counts = {}, {}
    for role, source in sources.items():
        guarded[role], counts[role] = guard(target, datasets["target"], source, datasets[role], role,
                                            leakage.policy, leakage.max_distance, map_chunks)
        log(f"data: {role:<8} leakage guard: {counts[role]['near_duplicates']} near-duplicates of target "
            f"val/test images, {counts[role]['removed']} source images removed")
    return guarded, counts


def check_sizes_fit_split(sources: dict[str, PreparedSet], source_sizes: list[int]) -> None:
    """The exact check: the largest subset against each source's training rows after its patient-level
    validation split, its skipped images and the leakage guard."""
    for role, source in sources.items():
        if max(source_sizes) > len(source.train):
            raise DataError(f"data.source_sizes: {max(source_sizes)} larger than the {len(source.train)} "
                            f"training images of data.sources.{role} after its validation split")


def guard(target: PreparedSet, target_dataset: Dataset, source: PreparedSet, source_dataset: Dataset, role: str,
          policy: str, max_distance: int, map_chunks: MapChunks = in_process) -> tuple[PreparedSet, dict[str, int]]:
    """The leakage guard for one source: its train and validation images (what pre-training sees) against the
    target's validation and test images, by content. policy "error" raises LeakageError naming both files of
    the first pairs; "remove" drops the source images and returns the source without them, with the counts."""
    evaluation = np.concatenate([target.val, target.test])
    used = np.concatenate([source.train, source.val])
    keys = {"target": target.shards.records["key"], "source": source.shards.records["key"]}
    leaks = find_leaks(target.shards, evaluation, source.shards, used, max_distance,
                       lambda row: file_name(target_dataset, keys["target"].loc[row]),
                       lambda row: file_name(source_dataset, keys["source"].loc[row]), map_chunks)
    removed = np.unique([leak.source_row for leak in leaks])
    if len(leaks) and policy == "error":
        raise LeakageError(leak_message(role, leaks, max_distance))
    kept = replace(source, train=np.setdiff1d(source.train, removed), val=np.setdiff1d(source.val, removed))
    return kept, {"near_duplicates": len(leaks), "removed": int(len(removed))}


def open_source(key: str, ref: DatasetRef) -> Dataset:
    """The dataset of a config entry: one registered dataset, or a merged source."""
    try:
        if ref.merge:
            return MergedDataset([open_dataset(m.dataset, **m.options) for m in ref.merge], labels=ref.labels)
        return open_dataset(ref.dataset, **ref.options)
    except (TypeError, ValueError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{key} ({ref.dataset}): {e}") from None


def split_rows(shards: ShardSet, val_fraction: float, seed: int, carve_test: bool = False) -> PreparedSet:
    """The shard set's rows by split: the dataset's own validation split, or one carved out of its training
    split by patient. `carve_test` (the target): a dataset without a test split (Shenzhen/Montgomery, PadChest,
    which put every image in train) gets one first, `val_fraction` of its training images, by patient."""
    recs = shards.records
    index = recs["index"].to_numpy()
    test = index[recs["split"].to_numpy() == "test"]
    train_recs = recs[recs["split"] == "train"]
    if carve_test and not len(test):
        kept, test = patient_split(train_recs, val_fraction, seed + 1)
        train_recs = train_recs[train_recs["index"].isin(kept)]
    if (recs["split"] == "val").any():  # the dataset defines its own validation split
        train = train_recs["index"].to_numpy()
        val = index[recs["split"].to_numpy() == "val"]
    else:
        train, val = patient_split(train_recs, val_fraction, seed)
    return PreparedSet(shards=shards, train=np.asarray(train), val=np.asarray(val), test=np.asarray(test))


def _train_images(dataset: Dataset) -> int:
    return int((dataset.records()["split"] == "train").sum())
