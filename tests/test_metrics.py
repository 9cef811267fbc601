"""Metrics against scikit-learn on random data of every task kind, and the NaN rules where sklearn has none."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve
from sklearn.preprocessing import label_binarize

from scaling.evaluate.metrics import ECE_BINS, METRICS, confusion_matrix, evaluate


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _binary(seed: int, n: int = 300):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.2).astype(int)
    p = 1 / (1 + np.exp(-(1.5 * y - 1 + rng.normal(size=n))))
    p[:20] = np.round(p[:20], 1)  # ties, which ROC-AUC and AP must treat as sklearn does
    return y, p


def _ece_reference(y, p) -> float:
    prob_true, prob_pred = calibration_curve(y, p, n_bins=ECE_BINS, strategy="uniform")
    counts = np.bincount(np.searchsorted(np.linspace(0, 1, ECE_BINS + 1)[1:-1], p), minlength=ECE_BINS)
    return float(np.sum(counts[counts > 0] * np.abs(prob_true - prob_pred)) / len(y))


@pytest.mark.parametrize("seed", [0, 1])
def test_binary_matches_sklearn(seed):
    y, p = _binary(seed)
    pred = (p >= 0.5).astype(int)
    got = evaluate("binary", y, p)
    assert set(got) == set(METRICS)
    expected = {
        "accuracy": skm.accuracy_score(y, pred),
        "balanced_accuracy": skm.balanced_accuracy_score(y, pred),
        "roc_auc": skm.roc_auc_score(y, p),
        "average_precision": skm.average_precision_score(y, p),
        "sensitivity": skm.recall_score(y, pred),
        "ppv": skm.precision_score(y, pred),
        "f1": skm.f1_score(y, pred),
        "nll": skm.log_loss(y, p),
        "ece": _ece_reference(y, p),
    }
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)
    np.testing.assert_array_equal(confusion_matrix("binary", y, p), skm.confusion_matrix(y, pred))
    assert evaluate("binary", y, p[:, None]) == got  # (n, 1) sigmoid outputs are accepted as well


def test_multiclass_matches_sklearn():
    rng = np.random.default_rng(2)
    n, k = 400, 4
    y = rng.choice(k, size=n, p=[0.5, 0.3, 0.15, 0.05])
    p = _softmax(rng.normal(size=(n, k)) + 2 * np.eye(k)[y])
    pred = p.argmax(axis=1)
    labels = list(range(k))
    got = evaluate("multiclass", y, p)
    expected = {
        "accuracy": skm.accuracy_score(y, pred),
        "balanced_accuracy": skm.balanced_accuracy_score(y, pred),
        "roc_auc": skm.roc_auc_score(y, p, multi_class="ovr", average="macro"),
        "average_precision": skm.average_precision_score(label_binarize(y, classes=labels), p, average="macro"),
        "sensitivity": skm.recall_score(y, pred, labels=labels, average="macro"),
        "ppv": skm.precision_score(y, pred, labels=labels, average="macro", zero_division=np.nan),
        "f1": skm.f1_score(y, pred, labels=labels, average="macro"),
        "nll": skm.log_loss(y, p, labels=labels),
        "ece": _ece_reference((pred == y).astype(int), p.max(axis=1)),
    }
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)
    np.testing.assert_array_equal(confusion_matrix("multiclass", y, p), skm.confusion_matrix(y, pred, labels=labels))


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_multiclass_missing_class_is_skipped_not_fatal():
    """sklearn raises for OvR ROC-AUC when a class never occurs; here that class is left out of the macro means."""
    rng = np.random.default_rng(3)
    y = rng.choice(3, size=200)  # class 3 of 4 never occurs
    p = _softmax(rng.normal(size=(200, 4)) + 2 * np.eye(4)[y])
    with pytest.raises(ValueError):
        skm.roc_auc_score(y, p, multi_class="ovr")
    got = evaluate("multiclass", y, p)
    present = [skm.roc_auc_score(y == c, p[:, c]) for c in range(3)]
    assert got["roc_auc"] == pytest.approx(np.mean(present))
    assert got["average_precision"] == pytest.approx(
        np.mean([skm.average_precision_score(y == c, p[:, c]) for c in range(3)]))
    pred = p.argmax(axis=1)
    assert got["sensitivity"] == pytest.approx(
        skm.recall_score(y, pred, labels=range(4), average="macro", zero_division=np.nan))
    assert got["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))


def test_multilabel_with_nan_targets_matches_sklearn_per_label():
    rng = np.random.default_rng(4)
    n, k = 300, 3
    y = (rng.random((n, k)) < [0.3, 0.1, 0.5]).astype(float)
    p = 1 / (1 + np.exp(-(2 * y - 1 + rng.normal(size=(n, k)))))
    y[rng.random((n, k)) < 0.2] = np.nan  # uncertain / missing labels
    got = evaluate("multilabel", y, p)

    per = {name: [] for name in METRICS}
    ys, ps = [], []
    for c in range(k):
        m = ~np.isnan(y[:, c])
        yc, pc = y[m, c].astype(int), p[m, c]
        pred = (pc >= 0.5).astype(int)
        per["balanced_accuracy"].append(skm.balanced_accuracy_score(yc, pred))
        per["roc_auc"].append(skm.roc_auc_score(yc, pc))
        per["average_precision"].append(skm.average_precision_score(yc, pc))
        per["sensitivity"].append(skm.recall_score(yc, pred))
        per["ppv"].append(skm.precision_score(yc, pred))
        per["f1"].append(skm.f1_score(yc, pred))
        ys.append(yc)
        ps.append(pc)
    yl, pl = np.concatenate(ys), np.concatenate(ps)
    expected = {name: np.mean(v) for name, v in per.items() if v}
    expected |= {"accuracy": skm.accuracy_score(yl, pl >= 0.5), "nll": skm.log_loss(yl, pl),
                 "ece": _ece_reference(yl, pl)}
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)

    masked = np.where(np.isnan(y), 0, y).astype(int)
    cms = confusion_matrix("multilabel", y, p)
    for c in range(k):
        m = ~np.isnan(y[:, c])
        np.testing.assert_array_equal(cms[c], skm.multilabel_confusion_matrix(masked[m], (p[m] >= 0.5).astype(int))[c])


def test_undefined_values_are_nan_and_skipped():
    # binary with one class only: ROC-AUC undefined; AP and sensitivity undefined without positives
    y = np.zeros(10, dtype=int)
    p = np.linspace(0.05, 0.45, 10)
    got = evaluate("binary", y, p)
    for name in ("roc_auc", "average_precision", "sensitivity", "ppv", "f1"):
        assert np.isnan(got[name]), name
    assert got["accuracy"] == 1.0 and got["balanced_accuracy"] == 1.0  # specificity alone, as sklearn

    # multilabel: label 1 all negative and label 2 never labelled -> means over label 0 alone
    y = np.array([[1, 0, np.nan], [0, 0, np.nan], [1, 0, np.nan], [0, 0, np.nan]])
    p = np.array([[0.9, 0.1, 0.5], [0.2, 0.3, 0.5], [0.6, 0.2, 0.5], [0.4, 0.1, 0.5]])
    got = evaluate("multilabel", y, p)
    assert got["roc_auc"] == 1.0 and got["average_precision"] == 1.0 and got["sensitivity"] == 1.0
    assert np.isnan(evaluate("multilabel", y[:, 1:2], p[:, 1:2])["roc_auc"])


def test_ece_by_hand():
    # two bins used: p=0.1 with outcome rate 0.5 (gap 0.4), p=0.9 with outcome rate 1 (gap 0.1); equal weight
    y = np.array([0, 1, 1, 1])
    p = np.array([0.1, 0.1, 0.9, 0.9])
    assert evaluate("binary", y, p)["ece"] == pytest.approx(0.25)


@pytest.mark.parametrize("kind,y,p,match", [
    ("binary", [0, 1], [0.2, 1.7], r"\[0, 1\].*logits"),
    ("binary", [0, 2], [0.2, 0.7], "0 or 1"),
    ("binary", [0, 1], [[0.8, 0.2], [0.3, 0.7]], "positive-class probabilities"),
    ("multiclass", [0, 1], [[0.5, 0.2], [0.3, 0.7]], "sum to 1"),
    ("multiclass", [0, 2], [[0.8, 0.2], [0.3, 0.7]], "class indices 0..1"),
    ("multilabel", [[np.nan], [np.nan]], [[0.5], [0.5]], "some labels"),
    ("binary", [], [], "non-empty"),
    ("ordinal", [0], [0.5], "unknown task kind"),
])
def test_bad_input_is_refused(kind, y, p, match):
    with pytest.raises(ValueError, match=match):
        evaluate(kind, y, p)
