"""The embedded synthetic datasets: determinism, labels and prevalences, shapes, option errors, and that the
renderers draw what they claim (anatomy in the right places, findings where their labels say)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from scaling.data.base import DataError, describe
from scaling.data.registry import dataset_options, open_dataset
from scaling.data.synthetic import (
    GENERATOR_VERSION,
    MEDICAL_FINDINGS,
    SyntheticCovidx,
    SyntheticMedical,
    SyntheticNatural,
    SyntheticTB,
)
from scaling.data.synthetic import natural, xray

ALL = [SyntheticNatural, SyntheticMedical, SyntheticCovidx, SyntheticTB]
SMALL = dict(size=40, test_size=10, image_size=32)


# ------------------------------------------------------------------------------------------ determinism
@pytest.mark.parametrize("cls", ALL)
def test_same_seed_same_pixels_other_seed_other_pixels(cls):
    a, b, c = cls(**SMALL, seed=3), cls(**SMALL, seed=3), cls(**SMALL, seed=4)
    for key in ("0", "17", "45"):
        assert np.array_equal(a.load(key), b.load(key))
        assert not np.array_equal(a.load(key), c.load(key))
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


@pytest.mark.parametrize("cls", ALL)
def test_batch_equals_single_loads_and_order_does_not_matter(cls):
    ds = cls(**SMALL)
    keys = [33, 2, 49, 2, 0]
    batch = ds.render_batch(keys)
    assert batch.shape[0] == len(keys)
    for k, img in zip(keys, batch):
        assert np.array_equal(img, ds.load(str(k)))


def test_image_is_independent_of_dataset_size_and_of_other_streams():
    small, big = SyntheticCovidx(size=50, test_size=20, seed=1), SyntheticCovidx(size=500, test_size=20, seed=1)
    assert np.array_equal(small.load("7"), big.load("7"))
    # test images are keyed after the train images but drawn from their own stream
    assert np.array_equal(small.load("55"), big.load("505"))
    # the same seed gives different images in different datasets
    assert not np.array_equal(SyntheticTB(size=50, seed=1).load("7"), small.load("7"))


def test_anatomy_does_not_depend_on_the_label():
    # flipping the prevalence changes which images are positive but not the patients behind them
    lo, hi = SyntheticCovidx(size=200, positive_fraction=0.1), SyntheticCovidx(size=200, positive_fraction=0.9)
    rl, rh = lo.records().set_index("key"), hi.records().set_index("key")
    changed = [k for k in rl.index[:200] if rl.at[k, "y"] != rh.at[k, "y"]]
    assert changed
    diff = [np.abs(lo.load(k).astype(int) - hi.load(k).astype(int)) for k in changed[:10]]
    # the finding alters a part of the image; the rest (body, bones, noise) is the same patient
    assert all(np.mean(d == 0) > 0.3 for d in diff)


# ---------------------------------------------------------------------------------- records and labels
@pytest.mark.parametrize("cls", ALL)
def test_records_shape_and_types(cls):
    ds = cls(**SMALL)
    recs = ds.records()
    assert list(recs.columns) == ["split", "key", "patient", "y"]
    assert len(recs) == 50 and (recs["split"] == "train").sum() == 40 and (recs["split"] == "test").sum() == 10
    assert recs["key"].tolist() == [str(i) for i in range(50)]
    assert recs["patient"].is_unique and all(isinstance(p, str) for p in recs["patient"])
    if ds.task.kind == "multilabel":
        assert all(isinstance(y, np.ndarray) and y.dtype == np.float32 and y.shape == (len(ds.task.classes),)
                   for y in recs["y"])
    else:
        assert all(isinstance(y, int) and 0 <= y < len(ds.task.classes) for y in recs["y"])


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("size", [32, 64])
def test_image_shapes_and_dtypes(cls, size):
    ds = cls(size=4, test_size=0 if cls in (SyntheticNatural, SyntheticMedical) else 2, image_size=size)
    img = ds.load("1")
    expected = (size, size, 3) if ds.channels == 3 else (size, size)
    assert img.shape == expected and img.dtype == np.uint8
    assert ds.render_batch([0, 1]).shape == (2, *expected)
    assert img.std() > 10  # not blank


def test_covidx_prevalence_exact_in_every_prefix_and_balanced_test():
    ds = SyntheticCovidx(size=3000, test_size=400, seed=5)
    recs = ds.records()
    train = recs[recs["split"] == "train"]["y"].to_numpy()
    test = recs[recs["split"] == "test"]["y"].to_numpy()
    for n in (100, 450, 3000):
        assert abs(train[:n].sum() - 0.13 * n) <= 1
    assert test.sum() == 200
    assert describe(ds)["test"]["classes"] == {"negative": 200, "positive": 200}
    # seeds move the positives around
    other = SyntheticCovidx(size=3000, test_size=400, seed=6).records()["y"].to_numpy()[:3000]
    assert not np.array_equal(train, other)


def test_tb_defaults_mirror_shenzhen_montgomery():
    ds = SyntheticTB()
    d = describe(ds)
    assert sum(d["train"]["classes"].values()) + sum(d["test"]["classes"].values()) == 800
    assert d["train"]["classes"]["tuberculosis"] == 320 and d["test"]["classes"] == {"normal": 80, "tuberculosis": 80}


def test_natural_classes_balanced_and_named():
    ds = SyntheticNatural(size=1000, num_classes=50)
    counts = ds.records()["y"].value_counts()
    assert len(counts) == 50 and set(counts) == {20}
    assert len(set(ds.task.classes)) == 50
    assert all(len(c.split("-")) == 2 for c in ds.task.classes)  # shape-texture
    assert SyntheticNatural(size=10).num_classes == natural.MAX_CLASSES == 80


def test_medical_prevalences_cooccurrence_and_uncertain_labels():
    ds = SyntheticMedical(size=4000, seed=2)
    y = np.stack(ds.records()["y"].to_numpy())
    nan = np.isnan(y)
    assert 0.04 < nan.mean() < 0.06
    prevalence = np.nanmean(y, axis=0)
    for name, p in zip(MEDICAL_FINDINGS, prevalence):
        assert 0.03 < p < 0.55, (name, p)
    # CheXpert-like: opacity and effusion the commonest findings, a minority of images without any
    common = {name for name, p in zip(MEDICAL_FINDINGS, prevalence) if p > 0.35}
    assert common == {"lung_opacity", "effusion"}
    assert 0.15 < np.mean(np.nansum(y, axis=1) == 0) < 0.4
    # heart failure links an enlarged heart with edema, as in real reports
    f = {name: y[:, i] for i, name in enumerate(MEDICAL_FINDINGS)}
    both = ~np.isnan(f["cardiomegaly"]) & ~np.isnan(f["edema"])
    cardio, edema = f["cardiomegaly"][both] == 1, f["edema"][both] == 1
    assert edema[cardio].mean() > 2 * edema[~cardio].mean()
    # a zero uncertain fraction gives complete labels
    assert not np.isnan(np.stack(SyntheticMedical(size=200, uncertain_fraction=0).records()["y"])).any()


# --------------------------------------------------------------------------------------- what is drawn
def _frame_mean(imgs: np.ndarray, x0: float, x1: float, y0: float, y1: float) -> float:
    """Mean grey level in a box given in normalised coordinates ([-1, 1], x right, y down)."""
    s = imgs.shape[1]
    px = lambda v: int(round((v + 1) / 2 * s))  # noqa: E731
    return float(imgs[:, px(y0):px(y1), px(x0):px(x1)].mean())


def test_chest_anatomy_is_where_it_should_be():
    imgs = SyntheticMedical(size=64, image_size=64).render_batch(range(64)).astype(float)
    lungs = (_frame_mean(imgs, -0.6, -0.3, -0.4, 0.0) + _frame_mean(imgs, 0.3, 0.6, -0.4, 0.0)) / 2
    mediastinum = _frame_mean(imgs, -0.05, 0.05, -0.4, 0.0)
    abdomen = _frame_mean(imgs, -0.5, 0.5, 0.75, 0.95)
    outside = _frame_mean(imgs, -1.0, -0.95, -0.2, 0.5)
    assert lungs + 40 < mediastinum and lungs + 30 < abdomen and outside + 30 < lungs


def _paired(add, size: int = 64, n: int = 16) -> np.ndarray:
    """Mean image difference (with finding - without) over n patients whose anatomy is otherwise identical."""
    diffs = []
    for i in range(n):
        rng = np.random.default_rng([9, i])
        plain = xray.sample_anatomy(rng, size)
        sick = xray.sample_anatomy(np.random.default_rng([9, i]), size)
        add(sick, np.random.default_rng([10, i]))
        imgs = xray.render([plain, sick], size).astype(float)
        diffs.append(imgs[1] - imgs[0])
    return np.mean(diffs, axis=0)[None]


def test_findings_are_drawn_where_their_names_say():
    lateral_lower = lambda d, side: _frame_mean(d, *((0.45, 0.75) if side else (-0.75, -0.45)), 0.0, 0.35)  # noqa
    # bilateral peripheral opacity brightens both lateral lower zones, not the centre
    d = _paired(lambda p, r: xray.add_peripheral_opacity(p, r, (0, 1)))
    assert lateral_lower(d, 0) > 1.5 and lateral_lower(d, 1) > 1.5 and abs(_frame_mean(d, -0.1, 0.1, -0.6, 0.0)) < 1
    # one-sided: only that side
    d = _paired(lambda p, r: xray.add_peripheral_opacity(p, r, (1,)))
    assert lateral_lower(d, 1) > 1.5 and abs(lateral_lower(d, 0)) < 0.5
    # TB: upper zones brighten more than lower ones
    d = _paired(lambda p, r: xray.add_tb_pattern(p, r, (0, 1)))
    assert _frame_mean(d, -0.7, 0.7, -0.6, -0.25) > 2 * abs(_frame_mean(d, -0.7, 0.7, 0.05, 0.35))
    # pneumothorax darkens (air without lung markings replaces lung)
    d = _paired(lambda p, r: xray.add_pneumothorax(p, r, (0,)))
    assert _frame_mean(d, -0.8, -0.5, -0.6, 0.2) < 0
    # cardiomegaly brightens the lower left lung field (image right) where the heart now reaches
    d = _paired(lambda p, r: xray.add_cardiomegaly(p, r))
    assert _frame_mean(d, 0.25, 0.45, 0.0, 0.3) > 5


def test_natural_object_stands_out_but_colour_is_no_cue():
    ds = SyntheticNatural(size=400, image_size=48)
    imgs = ds.render_batch(range(400)).astype(float)
    value = imgs.max(-1)  # HSV value: saturated blue is as bright an object as white
    centre, corners = value[:, 20:28, 20:28].mean(), value[:, :4, :4].mean()
    assert centre > corners + 30  # the labelled object is brighter than the scene on average...
    contrast = value[:, 20:28, 20:28].mean((1, 2)) - value[:, :4, :4].mean((1, 2))
    assert np.mean(contrast < 15) > 0.1  # ...but not always: some objects are faint against their background
    grey = (imgs.max(-1) - imgs.min(-1)).max((1, 2)) < 2
    assert 0.2 < grey.mean() < 0.4  # a share of grey images, as in ImageNet
    # colour is a nuisance: the mean hue of an object does not depend on its class
    labels = ds.records()["y"].to_numpy()[:400]
    redness = (imgs[..., 0] - imgs[..., 2])[:, 20:28, 20:28].mean((1, 2))
    by_class = [redness[labels == c].mean() for c in range(8)]
    assert np.ptp(by_class) < 3 * redness.std() / np.sqrt(400 / natural.MAX_CLASSES)


# -------------------------------------------------------------------------------- options and errors
@pytest.mark.parametrize("name", ["synthetic-natural", "synthetic-medical", "synthetic-covidx", "synthetic-tb"])
def test_registry_exposes_typed_keyword_options(name):
    opts = dataset_options(name)
    assert {"size", "test_size", "image_size", "seed"} <= set(opts)
    assert all(p.annotation is not p.empty and p.default is not p.empty for p in opts.values())
    assert opts["image_size"].default == 64
    if name in ("synthetic-covidx", "synthetic-tb"):
        assert "positive_fraction" in opts
    ds = open_dataset(name, size=3, test_size=2, image_size=16)
    assert ds.name == name and f"v{GENERATOR_VERSION}" in ds.fingerprint()


@pytest.mark.parametrize("cls, options, fragment", [
    (SyntheticCovidx, {"size": 0}, "size=0"),
    (SyntheticCovidx, {"size": 2.5}, "size=2.5"),
    (SyntheticCovidx, {"size": True}, "size=True"),
    (SyntheticCovidx, {"test_size": -1}, "test_size=-1"),
    (SyntheticCovidx, {"test_size": 1}, "test_size=1"),
    (SyntheticCovidx, {"image_size": 8}, "image_size=8"),
    (SyntheticCovidx, {"seed": -1}, "seed=-1"),
    (SyntheticCovidx, {"positive_fraction": 0}, "positive_fraction=0"),
    (SyntheticTB, {"positive_fraction": 1.0}, "positive_fraction=1.0"),
    (SyntheticTB, {"positive_fraction": math.nan}, "positive_fraction=nan"),
    (SyntheticTB, {"positive_fraction": "0.5"}, "positive_fraction='0.5'"),
    (SyntheticMedical, {"uncertain_fraction": -0.1}, "uncertain_fraction=-0.1"),
    (SyntheticNatural, {"num_classes": 1}, "num_classes=1"),
    (SyntheticNatural, {"num_classes": natural.MAX_CLASSES + 1}, f"num_classes={natural.MAX_CLASSES + 1}"),
])
def test_bad_options_name_option_value_and_expectation(cls, options, fragment):
    with pytest.raises(ValueError, match="expected") as err:
        cls(**options)
    assert fragment in str(err.value)


@pytest.mark.parametrize("key", ["abc", "-1", "50", "1.5"])
def test_bad_keys_raise_data_error_naming_the_key(key):
    with pytest.raises(DataError, match="key"):
        SyntheticCovidx(size=40, test_size=10).load(key)


def test_fingerprint_names_class_version_and_every_option():
    ds = SyntheticCovidx(size=10, test_size=4, image_size=48, seed=2, positive_fraction=0.2)
    fp = ds.fingerprint()
    for part in ("SyntheticCovidx", f"v{GENERATOR_VERSION}", "size=10", "test_size=4", "image_size=48", "seed=2",
                 "positive_fraction=0.2"):
        assert part in fp
    assert fp != SyntheticCovidx(size=10, test_size=4, image_size=64, seed=2, positive_fraction=0.2).fingerprint()
