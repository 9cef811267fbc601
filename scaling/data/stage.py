"""The data stage of a study: every configured dataset parsed, checked and materialised into shards once,
with the patient-level train/validation split of each, before any training starts."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scaling.data.base import DataError
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
    #: by source role ("natural", "medical")
    sources: dict[str, PreparedSet]


def prepare_study_data(cfg, log=print) -> StudyData:
    """Open every dataset (bad input raises DataError naming the file), check that the configured subset
    sizes fit, and build or reuse the shards. `cfg` is a scaling.config.StudyConfig."""
    data = cfg.data
    datasets = {"target": _open("data.target", data.target)}
    datasets.update({role: _open(f"data.sources.{role}", ref) for role, ref in data.sources.items()})
    problems = []
    for role, dataset in datasets.items():  # parse everything first, and report every bad dataset at once
        try:
            dataset.records()
        except DataError as e:
            problems.append(f"{'data.target' if role == 'target' else 'data.sources.' + role}: {e}")
    if problems:
        raise DataError("\n  ".join(["cannot read the study's data:", *problems]))
    val_fractions = {"target": data.val_fraction}
    for role in data.sources:
        available = int((datasets[role].records()["split"] == "train").sum())
        val_fractions[role] = min(data.val_fraction, SOURCE_VAL_IMAGES / available)
        left = int(available * (1 - val_fractions[role]))
        too_big = [n for n in data.source_sizes if n > left]
        if too_big:
            raise DataError(
                f"data.source_sizes: {too_big} larger than the about {left} training images of data.sources.{role} "
                f"({data.sources[role].dataset}, {available} images less its validation split)"
            )
    preprocess = Preprocess(resolution=data.resolution, crop=data.crop, clahe=data.clahe, storage=data.storage,
                            encoding=data.encoding)
    prepared = {}
    for role, dataset in datasets.items():
        started = time.perf_counter()
        shards = prepare_shards(dataset, preprocess, Path(data.cache_dir).resolve(), on_bad_image=data.on_bad_image)
        prepared[role] = _split(shards, val_fractions[role], cfg.seed)
        if role != "target" and max(data.source_sizes) > len(prepared[role].train):
            raise DataError(f"data.source_sizes: {max(data.source_sizes)} larger than the {len(prepared[role].train)} "
                            f"training images of data.sources.{role} after its validation split")
        skipped = f", {shards.skipped} bad images skipped" if shards.skipped else ""
        log(f"data: {role:<8} {dataset.name:<20} {len(shards.records):>7} images -> {shards.path} "
            f"({time.perf_counter() - started:.1f} s{skipped})")
    return StudyData(target=prepared.pop("target"), sources=prepared)


def _open(key: str, ref):
    try:
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
