"""Calibration and seed-ensemble uncertainty: checked against scikit-learn on the same probabilities, and on
constructed over- and under-confident logits."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit, softmax
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from scaling.evaluate import calibration, uncertainty
from scaling.evaluate.metrics import ECE_BINS, evaluate


def _binary(n=2000, scale=2.0, seed=0):
    """True logits and labels drawn from them: sigmoid(z) is calibrated by construction."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, scale, n)
    return z, (rng.random(n) < expit(z)).astype(int)


def _multiclass(n=3000, k=4, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2.0, (n, k))
    p = softmax(z, axis=1)
    return z, np.array([rng.choice(k, p=row) for row in p])


def test_brier_nll_and_reliability_match_scikit_learn():
    z, y = _binary(500, seed=1)
    p = expit(1.7 * z)  # miscalibrated, so the numbers are not trivially small
    assert calibration.brier("binary", y, p) == pytest.approx(brier_score_loss(y, p), rel=1e-12)
    assert calibration.nll("binary", 1.7 * z, y) == pytest.approx(log_loss(y, p), rel=1e-9)
    bins = calibration.reliability(*calibration.judged("binary", y, p))
    count = np.asarray(bins["count"])
    seen = count > 0
    prob_true, prob_pred = calibration_curve(y, p, n_bins=ECE_BINS, strategy="uniform")
    np.testing.assert_allclose(np.asarray(bins["outcome"])[seen] / count[seen], prob_true, rtol=1e-9)
    np.testing.assert_allclose(np.asarray(bins["confidence"])[seen] / count[seen], prob_pred, atol=1e-6)

    zm, ym = _multiclass(400, seed=2)
    pm = softmax(1.5 * zm, axis=1)
    assert calibration.brier("multiclass", ym, pm) == pytest.approx(
        brier_score_loss(ym, pm, labels=range(4), scale_by_half=False), rel=1e-12)
    assert calibration.nll("multiclass", 1.5 * zm, ym) == pytest.approx(log_loss(ym, pm), rel=1e-9)


def test_debiased_error_estimates_the_true_l2_calibration_error():
    rng = np.random.default_rng(3)
    p = rng.uniform(0, 1, 20000)
    calibrated = (rng.random(p.size) < p).astype(float)
    skewed = (rng.random(p.size) < p**2).astype(float)  # true L2 error: sqrt(E[(p - p^2)^2]) = sqrt(1/30)
    small = rng.choice(p.size, 300, replace=False)
    # on a small calibrated sample the plug-in L2 error is biased upwards; the debiased one much less
    plug_in = np.sqrt(np.mean([(p[small][b].mean() - calibrated[small][b].mean()) ** 2 for b in
                               np.array_split(np.argsort(p[small]), ECE_BINS)]))
    assert calibration.debiased_calibration_error(p[small], calibrated[small]) < plug_in / 2
    assert calibration.debiased_calibration_error(p, calibrated) < 0.01
    assert calibration.debiased_calibration_error(p, skewed) == pytest.approx(np.sqrt(1 / 30), rel=0.05)


def test_equal_mass_bins_keep_equal_values_together():
    c = np.array([0.1, 0.1, 0.1, 0.1, 0.5, 0.9])
    idx = calibration.equal_mass_bins(c, bins=3)
    assert len(set(idx[:4])) == 1 and idx[4] == idx[5] != idx[0]  # sorted halves [.1 .1] [.1 .1] [.5 .9]


@pytest.mark.parametrize("factor,expected", [(3.0, 3.0), (1 / 3, 1 / 3)])
def test_temperature_scaling_repairs_over_and_under_confidence(factor, expected):
    z, y = _binary(4000, seed=4)
    val, test = slice(0, 2000), slice(2000, None)
    logits = factor * z  # over-confident (3x) or under-confident (1/3)
    scalars, scaled, _ = calibration.calibrate("binary", logits[val], y[val], logits[test], y[test])
    assert scalars["temperature"] == pytest.approx(expected, rel=0.15)
    assert scalars["temperature_at_bound"] == 0
    for error in ("ece", "ece_debiased", "nll", "brier"):
        assert scalars[f"{error}_calibrated"] < scalars[error]
    assert scalars["ece_calibrated"] < scalars["ece"] / 2
    assert roc_auc_score(y[test], scaled) == pytest.approx(roc_auc_score(y[test], expit(logits[test])), abs=1e-12)


def test_temperature_scaling_multiclass_keeps_the_decisions():
    z, y = _multiclass(seed=5)
    logits = 4 * z
    scalars, scaled, _ = calibration.calibrate("multiclass", logits[:1500], y[:1500], logits[1500:], y[1500:])
    assert scalars["temperature"] == pytest.approx(4, rel=0.15)
    assert scalars["ece_calibrated"] < scalars["ece"] / 2
    assert (scaled.argmax(1) == logits[1500:].argmax(1)).all()


def test_separable_validation_split_puts_the_temperature_on_its_bound():
    z = np.array([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0])
    temperature, at_bound = calibration.fit_temperature("binary", z, (z > 0).astype(int))
    assert at_bound and temperature == pytest.approx(calibration.TEMPERATURE_BOUNDS[0], rel=1e-2)


def test_ece_is_the_positive_class_error_of_the_metrics_module():
    z, y = _binary(300, seed=6)
    p = expit(2 * z)
    assert calibration.calibrate("binary", z, y, 2 * z, y)[0]["ece"] == evaluate("binary", y, p)["ece"]


def test_calibration_rejects_multilabel():
    with pytest.raises(ValueError, match="binary or multiclass"):
        calibration.probabilities("multilabel", np.zeros((2, 3)))


# ------------------------------------------------------------------------------------------ uncertainty
def test_identical_seeds_have_no_disagreement():
    z, y = _binary(400, seed=7)
    probs = np.stack([expit(z)] * 3)
    out = uncertainty.ensemble("binary", y, probs)
    assert out["mutual_information"] == pytest.approx(0, abs=1e-12)
    assert out["seed_spread"] == pytest.approx(0, abs=1e-12)
    assert out["ensemble_roc_auc"] == pytest.approx(roc_auc_score(y, expit(z)))
    p = expit(z)
    entropy = -(p * np.log(p) + (1 - p) * np.log(1 - p))
    assert out["ensemble_entropy"] == pytest.approx(entropy.mean())


def test_disagreeing_seeds_carry_mutual_information_and_an_ensemble_gain():
    rng = np.random.default_rng(8)
    z, y = _binary(2000, seed=8)
    probs = np.stack([expit(z + rng.normal(0, 2.0, z.size)) for _ in range(4)])  # each seed adds its own noise
    out = uncertainty.ensemble("binary", y, probs)
    assert out["mutual_information"] > 0.02 and out["seed_spread"] > 0.1
    assert out["ensemble_roc_auc"] > np.mean([roc_auc_score(y, p) for p in probs])


def test_risk_coverage_and_aurc_of_known_orderings():
    y = np.array([1, 0, 1, 0])
    mean = np.array([0.99, 0.02, 0.4, 0.6])  # confidences .99 .98 .6 .6: two right, then two wrong
    coverage, risk = uncertainty.risk_coverage("binary", y, mean)
    np.testing.assert_allclose(coverage, [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(risk, [0, 0, 1 / 3, 0.5])
    # the most confident 80% hold all but the least confident image
    z, yy = _binary(500, seed=9)
    p = expit(z)
    out = uncertainty.ensemble("binary", yy, p[None])
    kept = np.argsort(-np.maximum(p, 1 - p), kind="stable")[:400]
    assert out["auroc_at_80"] == pytest.approx(roc_auc_score(yy[kept], p[kept]))
    assert out["aurc"] < 1 - evaluate("binary", yy, p)["accuracy"]  # confidence ranks the errors last


def test_delong_matches_roc_auc_and_the_bootstrap_spread():
    rng = np.random.default_rng(10)
    z, y = _binary(400, seed=10)
    scores = np.stack([z + rng.normal(0, 1.5, z.size) for _ in range(3)])
    auc, cov = uncertainty.delong(y, scores)
    np.testing.assert_allclose(auc, [roc_auc_score(y, s) for s in scores], rtol=1e-12)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    boot = []
    for _ in range(400):  # stratified bootstrap of the seed-mean AUC
        take = np.r_[rng.choice(pos, pos.size), rng.choice(neg, neg.size)]
        boot.append(uncertainty.delong(y[take], scores[:, take])[0].mean())
    low, high = uncertainty.auc_interval(y, scores)
    assert low < auc.mean() < high
    assert (high - low) / 2 == pytest.approx(1.96 * np.std(boot), rel=0.15)
