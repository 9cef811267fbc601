"""Subsets for the data-size and few-shot axes, patient-level validation splits, and class balancing.

Every function takes records (a DataFrame with a `y` column, as `Dataset.records()` or `ShardSet.records`
give) or bare labels, and returns row ids: the records' `index` column when there is one (the row ids of a
shard set, what `ShardDataset` takes), else the frame's index labels; for bare labels, positions. Results
are sorted ascending (neighbouring rows share Parquet row groups) and depend only on the input and `seed`.

Multilabel labels are stratified on a reduced key: the rarest class (by positive count in the input) among an
image's positive labels, or "no finding" when it has none (NaN counts as not positive). Rare findings thus
spread evenly over subsets and splits, which matters more than the frequent ones they co-occur with.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

Labels = pd.DataFrame | np.ndarray | Sequence


def _ids_and_labels(records_or_labels: Labels) -> tuple[np.ndarray, np.ndarray]:
    """(row ids, labels) with labels as (n,) int64 or, for multilabel, (n, classes) float32."""
    if isinstance(records_or_labels, pd.DataFrame):
        records = records_or_labels
        ids = records["index"].to_numpy() if "index" in records.columns else records.index.to_numpy()
        values = records["y"].to_numpy()
    else:
        values = records_or_labels
        ids = np.arange(len(values))
    if isinstance(values, np.ndarray) and values.dtype != object:
        labels = values
    elif len(values) and np.ndim(values[0]) >= 1:
        labels = np.stack([np.asarray(v, dtype=np.float32) for v in values])
    else:
        labels = np.asarray(list(values))
    if labels.ndim == 1:
        if len(labels) and not np.array_equal(labels, np.round(labels)):
            raise ValueError("single-label y must be class indices (ints)")
        labels = labels.astype(np.int64)
    return np.asarray(ids, dtype=np.int64), labels


def strata(labels: np.ndarray) -> np.ndarray:
    """The stratification key of each row: the class index for single-label y; for multilabel y (2-D) the
    rarest positive class, or `classes` (no finding) when an image has no positive label."""
    labels = np.asarray(labels)
    if labels.ndim == 1:
        return labels.astype(np.int64)
    positive = labels == 1
    frequency = positive.sum(axis=0)
    rarest = np.argmin(np.where(positive, frequency, np.iinfo(np.int64).max), axis=1)
    return np.where(positive.any(axis=1), rarest, labels.shape[1]).astype(np.int64)


def _stratified_order(keys: np.ndarray, seed: int) -> np.ndarray:
    """A seeded order of all rows whose every prefix holds each stratum in proportion (to within one).

    Within a stratum of size m, its k-th row (in a seeded shuffle) gets the rank (k + 0.5) / m; sorting by
    rank interleaves the strata evenly, and prefixes of one order are nested by construction."""
    rng = np.random.default_rng(seed)
    rank = np.empty(len(keys))
    for key in np.unique(keys):
        members = rng.permutation(np.flatnonzero(keys == key))
        rank[members] = (np.arange(len(members)) + 0.5) / len(members)
    return np.lexsort((rng.random(len(keys)), rank))


def nested_subset(records_or_labels: Labels, n: int, seed: int) -> np.ndarray:
    """Row ids of a stratified subset of size `n`. For one input and seed, the n-subset lies inside the
    m-subset whenever n < m (the data-size axis grows by adding images, never by swapping them)."""
    ids, labels = _ids_and_labels(records_or_labels)
    if not 1 <= n <= len(ids):
        raise ValueError(f"subset size n={n} must lie in [1, {len(ids)}]: {len(ids)} images are available")
    order = _stratified_order(strata(labels), seed)
    return np.sort(ids[order[:n]])


def n_shot(records_or_labels: Labels, shots: int, seed: int, *, num_classes: int | None = None) -> np.ndarray:
    """Row ids of `shots` images per class, nested across `shots` for one seed. Classes are
    0..num_classes-1 when given (so a class absent from the input is an error), else those present. For
    multilabel y a class's shots are images positive for it; one image may serve several classes, so some
    classes can end up with more than `shots` positives. Raises ValueError naming a class with too few images."""
    ids, labels = _ids_and_labels(records_or_labels)
    if shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    multilabel = labels.ndim == 2
    if num_classes is not None:
        classes = np.arange(num_classes)
    else:
        classes = np.arange(labels.shape[1]) if multilabel else np.unique(labels)
    chosen = []
    for c in classes:
        members = np.flatnonzero(labels[:, c] == 1 if multilabel else labels == c)
        if len(members) < shots:
            raise ValueError(f"class {int(c)} has {len(members)} image(s), fewer than shots={shots}")
        chosen.append(np.random.default_rng([seed, int(c)]).permutation(members)[:shots])
    return np.unique(ids[np.concatenate(chosen)])


def patient_split(records: pd.DataFrame, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train ids, validation ids) with no patient in both and about `val_fraction` of the images in
    validation, stratified by label where patients allow: each patient is assigned to the rarest stratum
    among its images, and within each stratum shuffled patients go to validation while that brings the
    stratum's validation share closer to `val_fraction`. Pass the records of one split (usually "train")."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    ids, labels = _ids_and_labels(records)
    keys = strata(labels)
    patients = records["patient"].astype(str).to_numpy()
    rarity = np.bincount(keys)[keys]  # images sharing each row's stratum
    frame = pd.DataFrame({"patient": patients, "key": keys, "rarity": rarity})
    per_patient = frame.sort_values(["patient", "rarity", "key"]).groupby("patient", sort=True)
    patient_key = per_patient["key"].first()
    patient_size = per_patient.size()
    rng = np.random.default_rng(seed)
    val_patients: set[str] = set()
    for key in np.unique(patient_key.to_numpy()):
        names = patient_key.index[patient_key.to_numpy() == key].to_numpy()
        target = val_fraction * patient_size[names].sum()
        taken = 0
        for name in rng.permutation(names):
            if taken + patient_size[name] / 2 <= target:
                val_patients.add(name)
                taken += patient_size[name]
    in_val = np.isin(patients, list(val_patients))
    if in_val.all() or not in_val.any():
        raise ValueError(f"val_fraction={val_fraction} over {len(patient_size)} patient(s) "
                         f"({len(ids)} images) leaves {'training' if in_val.all() else 'validation'} empty")
    return np.sort(ids[~in_val]), np.sort(ids[in_val])


def class_weights(y: Labels) -> np.ndarray:
    """Loss weights against class imbalance.

    Single-label y: one weight per class 0..max(y), n / (classes present * count), 0 for absent classes
    (for binary BCE-with-logits, pos_weight = w[1] / w[0]). Multilabel y: per-class pos_weight =
    negatives / positives among known (non-NaN) labels, 1 where a class has no positives."""
    _, labels = _ids_and_labels(y)
    if labels.ndim == 2:
        positives = (labels == 1).sum(axis=0)
        negatives = (labels == 0).sum(axis=0)
        return np.where(positives > 0, negatives / np.maximum(positives, 1), 1.0).astype(np.float32)
    counts = np.bincount(labels)
    present = np.count_nonzero(counts)
    return np.where(counts > 0, len(labels) / (present * np.maximum(counts, 1)), 0.0).astype(np.float32)


def balanced_sampler_weights(y: Labels) -> np.ndarray:
    """Per-image sampling probabilities (summing to 1) that draw every class (multilabel: every stratum)
    equally often, for class-balanced oversampling:

        WeightedRandomSampler(w, num_samples=len(w), replacement=True, generator=seeded_generator)

    Under DDP let each rank draw len(w) // world_size with a generator seeded by (seed, rank): independent
    draws with replacement from the same weights are, together, one balanced draw."""
    _, labels = _ids_and_labels(y)
    keys = strata(labels)
    weights = 1.0 / np.bincount(keys)[keys]
    return weights / weights.sum()
