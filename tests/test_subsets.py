"""Nested stratified subsets, n-shot subsets, patient-level splits and class balancing."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scaling.data.subsets import (balanced_sampler_weights, class_weights, n_shot, nested_subset, patient_split,
                                  strata)


def imbalanced_labels(n: int = 1000, positive: float = 0.13, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random(n) < positive).astype(int)


def records(y, images_per_patient: int = 3, first_index: int = 0) -> pd.DataFrame:
    n = len(y)
    return pd.DataFrame({"index": np.arange(first_index, first_index + n), "split": "train",
                         "key": [f"k{i}" for i in range(n)],
                         "patient": [f"p{i // images_per_patient}" for i in range(n)], "y": list(y)})


def test_subsets_are_nested_for_one_seed_and_differ_across_seeds():
    y = imbalanced_labels()
    sizes = [5, 10, 50, 200, 700, 1000]
    subsets = [set(nested_subset(y, n, seed=3)) for n in sizes]
    assert [len(s) for s in subsets] == sizes
    assert all(small < large for small, large in zip(subsets, subsets[1:]))
    assert set(nested_subset(y, 50, seed=4)) != subsets[2]
    assert np.array_equal(nested_subset(y, 50, seed=3), np.sort(list(subsets[2])))


def test_subsets_are_stratified_to_within_one_image():
    y = imbalanced_labels()
    share = y.mean()
    for n in [8, 20, 77, 300]:
        picked = y[nested_subset(y, n, seed=1)]
        assert abs(picked.sum() - share * n) <= 1, n


def test_subset_size_errors_name_n_and_the_available_count():
    with pytest.raises(ValueError, match=r"n=101.*100 images are available"):
        nested_subset(imbalanced_labels(100), 101, seed=0)
    with pytest.raises(ValueError, match="n=0"):
        nested_subset(imbalanced_labels(100), 0, seed=0)


def test_records_give_their_index_column_as_ids():
    y = imbalanced_labels(40)
    ids = nested_subset(records(y, first_index=100), 10, seed=0)
    assert np.array_equal(ids, nested_subset(y, 10, seed=0) + 100)


def test_multilabel_strata_use_the_rarest_positive_label():
    y = np.array([[1, 1, 0], [1, 0, 0], [1, 0, np.nan], [0, 0, 0], [1, 0, 1]], np.float32)
    # positives per class: 4, 1, 1 -> class 1 and 2 are rarest; no positives -> 3 ("no finding")
    assert strata(y).tolist() == [1, 0, 0, 3, 2]


def test_multilabel_subsets_keep_rare_finding_share():
    rng = np.random.default_rng(0)
    y = (rng.random((2000, 4)) < [0.5, 0.2, 0.05, 0.02]).astype(np.float32)
    rare = strata(y) == 3
    for n in [100, 500]:
        picked = nested_subset(list(y), n, seed=2)
        assert abs(rare[picked].sum() - rare.mean() * n) <= 1


def test_n_shot_counts_nesting_and_errors():
    y = np.arange(60) % 3
    subsets = {shots: n_shot(y, shots, seed=0) for shots in (1, 5, 10)}
    for shots, ids in subsets.items():
        assert np.bincount(y[ids]).tolist() == [shots] * 3
    assert set(subsets[1]) < set(subsets[5]) < set(subsets[10])
    with pytest.raises(ValueError, match=r"class 0 has 20 image\(s\), fewer than shots=21"):
        n_shot(y, 21, seed=0)
    with pytest.raises(ValueError, match="class 3 has 0"):
        n_shot(y, 1, seed=0, num_classes=4)


def test_n_shot_multilabel_gives_each_class_enough_positives():
    rng = np.random.default_rng(1)
    y = (rng.random((300, 3)) < 0.2).astype(np.float32)
    ids = n_shot(y, 5, seed=0)
    assert (y[ids] == 1).sum(axis=0).min() >= 5 and len(ids) <= 15


def test_patient_split_is_disjoint_complete_and_stratified():
    y = imbalanced_labels(900, positive=0.2)
    recs = records(y, images_per_patient=3)
    train, val = patient_split(recs, 0.2, seed=0)
    assert sorted(np.concatenate([train, val])) == list(recs["index"])
    patients = recs.set_index("index")["patient"]
    assert not set(patients[train]) & set(patients[val])
    assert abs(len(val) / len(recs) - 0.2) < 0.02
    assert abs(y[val].mean() - y.mean()) < 0.03
    again = patient_split(recs, 0.2, seed=0)
    assert np.array_equal(again[1], val)
    assert not np.array_equal(patient_split(recs, 0.2, seed=1)[1], val)


def test_patient_split_errors():
    with pytest.raises(ValueError, match="val_fraction"):
        patient_split(records([0, 1, 0]), 1.0, seed=0)
    with pytest.raises(ValueError, match="1 patient"):
        patient_split(records([0, 1, 0], images_per_patient=3), 0.3, seed=0)


def test_class_weights():
    y = np.array([0] * 90 + [1] * 10)
    assert np.allclose(class_weights(y), [100 / (2 * 90), 100 / (2 * 10)])
    assert np.allclose(class_weights(np.array([0, 0, 2])), [3 / 4, 0, 3 / 2])
    multilabel = np.array([[1, 0], [0, np.nan], [0, 0], [0, 1]], np.float32)
    assert np.allclose(class_weights(multilabel), [3 / 1, 2 / 1])  # NaN ignored


def test_balanced_sampler_weights_draw_classes_equally():
    y = imbalanced_labels(1000, positive=0.05)
    weights = balanced_sampler_weights(y)
    assert np.isclose(weights.sum(), 1)
    assert np.isclose(weights[y == 1].sum(), 0.5)
    draws = np.random.default_rng(0).choice(len(y), size=20000, p=weights)
    assert abs(y[draws].mean() - 0.5) < 0.02
