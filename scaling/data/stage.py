"""The data stage of a study: every configured dataset parsed, checked and materialised into shards once,
with the patient-level train/validation split of each, before any training starts."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scaling.data.base import DataError
from scaling.data.registry import open_dataset
from scaling.data.shards import Preprocess, ShardSet, prepare_shards
from scaling.data.subsets import patient_split


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
    for role in data.sources:
        available = int((datasets[role].records()["split"] == "train").sum())
        too_big = [n for n in data.source_sizes if n > available]
        if too_big:
            raise DataError(
                f"data.source_sizes: {too_big} larger than the {available} training images of "
                f"data.sources.{role} ({data.sources[role].dataset})"
            )
    preprocess = Preprocess(resolution=data.resolution, crop=data.crop, clahe=data.clahe, storage=data.storage,
                            encoding=data.encoding)
    prepared = {}
    for role, dataset in datasets.items():
        started = time.perf_counter()
        shards = prepare_shards(dataset, preprocess, Path(data.cache_dir), on_bad_image=data.on_bad_image,
                                progress=_progress(role))
        prepared[role] = _split(shards, data.val_fraction, cfg.seed)
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


def _progress(role: str):
    def report(done: int, total: int) -> None:
        print(f"\rdata: {role:<8} building shards {done}/{total}", end="" if done < total else "\n",
              file=sys.stderr, flush=True)

    return report
