"""Evaluation metrics of a classifier's probabilities, in numpy: a pure function for rank 0 after gathering.

Inputs by task kind (`scaling.data.base.Task.kind`):
  - binary:     targets (n,) in {0, 1}; probabilities of the positive class, (n,) or (n, 1)
  - multiclass: targets (n,) class indices; softmax probabilities (n, K)
  - multilabel: targets (n, K) in {0, 1, NaN}, NaN meaning "no label" (masked out of every metric);
                sigmoid probabilities (n, K)

Decisions: probability >= threshold (0.5) for binary and multilabel, argmax for multiclass.
Averages over classes are macro (unweighted); multiclass ranking metrics are one-vs-rest.
Sensitivity, PPV and F1 are those of the positive class for binary tasks, macro means otherwise.

Undefined is NaN, never 0, and macro means skip it (scikit-learn's ``zero_division=np.nan``): ROC-AUC of a class
whose targets are all one value, average precision of a class without positives, sensitivity of a class without
positives, PPV of a class never predicted, F1 of a class neither present nor predicted. A macro mean is NaN only
when no class is defined. Here scikit-learn would raise (multiclass ROC-AUC with a class missing from the targets)
or return 0 (average precision without positives).

NLL clips probabilities to [1e-7, 1 - 1e-7] (float32 resolution near 1). ECE uses 15 equal-width bins (a value
on an edge falls in the lower bin, as in ``sklearn.calibration.calibration_curve``): of the positive-class
probability (binary), of the top-label confidence (multiclass, Guo et al. 2017), of every labelled probability
pooled (multilabel).
"""
from __future__ import annotations

import numpy as np

from scaling.data.base import TaskKind
from scaling.laws.compare import auc

METRICS = ("accuracy", "balanced_accuracy", "roc_auc", "average_precision", "sensitivity", "ppv", "f1", "nll",
           "ece")
ECE_BINS = 15
NLL_EPS = 1e-7


def _checked(kind: str, y_true, probs) -> tuple[np.ndarray, np.ndarray]:
    """Validated float64 copies of targets and probabilities, binary probabilities flattened to (n,)."""
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    if kind == "binary" and p.ndim == 2 and p.shape[1] == 1:
        p = p[:, 0]
    shapes = f"targets {y.shape}, probabilities {p.shape}"
    if kind == "binary":
        ok = y.ndim == 1 and p.shape == y.shape
        expect = "targets (n,) and positive-class probabilities (n,)"
    elif kind == "multiclass":
        ok = y.ndim == 1 and p.ndim == 2 and p.shape[0] == y.shape[0] and p.shape[1] >= 2
        expect = "targets (n,) and probabilities (n, K >= 2)"
    elif kind == "multilabel":
        ok = y.ndim == 2 and p.shape == y.shape
        expect = "targets (n, K) with some labels and probabilities (n, K)"
    else:
        raise ValueError(f"unknown task kind {kind!r}; expected binary, multiclass or multilabel")
    if not ok or len(y) == 0 or np.isnan(y).all():
        raise ValueError(f"{kind} metrics need non-empty {expect}; got {shapes}")
    if not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1:
        raise ValueError(f"{kind} metrics need probabilities in [0, 1] (apply sigmoid/softmax to logits first); "
                         f"got values in [{np.nanmin(p):.4g}, {np.nanmax(p):.4g}]")
    if kind == "multiclass":
        sums = p.sum(axis=1)
        if np.abs(sums - 1).max() > 1e-3:
            raise ValueError(f"multiclass probabilities must sum to 1 per row (softmax); a row sums to "
                             f"{sums[np.abs(sums - 1).argmax()]:.4g}")
        if not np.all(np.isin(y, np.arange(p.shape[1]))):
            raise ValueError(f"multiclass targets must be class indices 0..{p.shape[1] - 1}; got "
                             f"{sorted(set(np.unique(y)) - set(range(p.shape[1])))[:5]}")
    elif not np.all(np.isin(y[~np.isnan(y)], (0, 1))) or (kind == "binary" and np.isnan(y).any()):
        raise ValueError(f"{kind} targets must be 0 or 1" + (" (or NaN for no label)" if kind == "multilabel" else ""))
    return y, p


def confusion_matrix(task_kind: TaskKind, y_true, probs, threshold: float = 0.5) -> np.ndarray:
    """Counts with rows = true class and columns = predicted class, as scikit-learn orders them: (2, 2) for
    binary, (K, K) for multiclass, (K, 2, 2) per label for multilabel (unlabelled entries left out)."""
    y, p = _checked(task_kind, y_true, probs)
    return _confusion(task_kind, y, p, threshold)


def _confusion(kind: str, y: np.ndarray, p: np.ndarray, threshold: float) -> np.ndarray:
    if kind == "multiclass":
        return _counts(y, p.argmax(axis=1), p.shape[1])
    pred = (p >= threshold).astype(np.int64)
    if kind == "binary":
        return _counts(y, pred, 2)
    return np.stack([_counts(y[:, k], pred[:, k], 2) for k in range(y.shape[1])])


def _counts(y: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    labelled = ~np.isnan(y)
    return np.bincount(y[labelled].astype(np.int64) * k + pred[labelled], minlength=k * k).reshape(k, k)


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def _nanmean(x) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(x[~np.isnan(x)].mean()) if (~np.isnan(x)).any() else float("nan")


def _average_precision(y: np.ndarray, s: np.ndarray) -> float:
    """Sum over distinct thresholds of precision times the recall gained (sklearn's definition, no interpolation)."""
    n_pos = int((y == 1).sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each run of equal scores
    tp = np.cumsum(y)[last]
    precision = tp / (last + 1)
    return float(np.sum(np.diff(np.r_[0.0, tp / n_pos]) * precision))


def equal_width_bins(confidence: np.ndarray, bins: int = ECE_BINS) -> np.ndarray:
    """Bin index of every confidence in [0, 1] for `bins` equal-width bins; a value on an edge falls in the lower."""
    return np.searchsorted(np.linspace(0, 1, bins + 1)[1:-1], confidence)


def expected_calibration_error(confidence: np.ndarray, outcome: np.ndarray) -> float:
    """ECE with `ECE_BINS` equal-width bins of `confidence` against the 0/1 `outcome` (Guo et al. 2017)."""
    bins = equal_width_bins(confidence)
    gaps = np.bincount(bins, confidence, ECE_BINS) - np.bincount(bins, outcome, ECE_BINS)
    return float(np.abs(gaps).sum() / len(confidence))


def evaluate(task_kind: TaskKind, y_true, probs, threshold: float = 0.5) -> dict[str, float]:
    """Metrics `METRICS` of probabilities `probs` against targets `y_true` (see the module docstring for shapes,
    averaging and NaN rules). Raises ValueError for bad shapes, targets or non-probabilities."""
    y, p = _checked(task_kind, y_true, probs)
    cm = _confusion(task_kind, y, p, threshold)
    labelled = ~np.isnan(y)
    if task_kind == "multiclass":
        tp = np.diag(cm)
        fp, fn = cm.sum(axis=0) - tp, cm.sum(axis=1) - tp
        tn = cm.sum() - tp - fp - fn
        columns = [((y == k).astype(np.float64), p[:, k]) for k in range(p.shape[1])]
    else:
        per_label = cm[None] if task_kind == "binary" else cm
        tn, fp, fn, tp = per_label[:, 0, 0], per_label[:, 0, 1], per_label[:, 1, 0], per_label[:, 1, 1]
        # a label without any labelled image has no ranking metric (NaN, skipped by the macro mean): left out
        columns = [(y, p)] if task_kind == "binary" else [
            (y[labelled[:, k], k], p[labelled[:, k], k]) for k in range(y.shape[1]) if labelled[:, k].any()]
    sensitivity, specificity = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
    ppv, f1 = _ratio(tp, tp + fp), _ratio(2 * tp, 2 * tp + fp + fn)

    if task_kind == "multiclass":
        accuracy = np.trace(cm) / cm.sum()
        balanced = _nanmean(sensitivity)
        nll = -np.log(np.clip(p[np.arange(len(y)), y.astype(np.int64)], NLL_EPS, 1)).mean()
        ece = expected_calibration_error(p.max(axis=1), (p.argmax(axis=1) == y).astype(np.float64))
    else:
        accuracy = (tp + tn).sum() / cm.sum()
        balanced = _nanmean([_nanmean(pair) for pair in zip(sensitivity, specificity)])
        yl, pl = y[labelled], np.clip(p[labelled], NLL_EPS, 1 - NLL_EPS)
        nll = -(yl * np.log(pl) + (1 - yl) * np.log(1 - pl)).mean()
        ece = expected_calibration_error(p[labelled], y[labelled])
    return {
        "accuracy": float(accuracy),
        "balanced_accuracy": balanced,
        "roc_auc": _nanmean([float(auc(pc, yc)) for yc, pc in columns]),
        "average_precision": _nanmean([_average_precision(yc, pc) for yc, pc in columns]),
        "sensitivity": _nanmean(sensitivity),
        "ppv": _nanmean(ppv),
        "f1": _nanmean(f1),
        "nll": float(nll),
        "ece": ece,
    }
