"""Calibration of a fine-tuned classifier: temperature scaling fitted on validation logits, and the errors it is
judged by on the test split, before and after. Numpy/scipy only; runs in the job at its final evaluation.

Tasks: binary (logits (n,), probability of the positive class) and multiclass (logits (n, K), softmax).
Which probability is judged:
  - binary: the positive-class probability against the 0/1 label -- the *positive-class* (marginal) calibration
    error that a reliability diagram of P(positive) shows. The top-label version, max(p, 1 - p) against
    "the decision was right", folds that diagram onto [0.5, 1] and can hide an over-confident half;
  - multiclass: the top-label confidence against "the arg-max was right" (Guo et al. 2017).
Errors: ECE with 15 equal-width bins (as scaling.evaluate.metrics), the debiased L2 calibration error with 15
equal-mass bins of Kumar et al. 2019, NLL and the Brier score (scikit-learn's `brier_score_loss` for binary,
the sum over classes for multiclass).

Written here (a few lines) rather than taken from netcal, which pulls in pyro, gpytorch and tensorboard for a
one-parameter fit; the unmaintained `uncertainty-calibration` package holds the reference of the debiased error.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit, log_expit, log_softmax, softmax

from scaling.evaluate.metrics import ECE_BINS, equal_width_bins, expected_calibration_error

#: the temperature is searched in this range; a fit on its edge is flagged (a degenerate validation split)
TEMPERATURE_BOUNDS = (0.05, 20.0)


def _kind(kind: str) -> str:
    if kind not in ("binary", "multiclass"):
        raise ValueError(f"calibration needs a binary or multiclass task, got {kind!r}")
    return kind


def probabilities(kind: str, logits, temperature: float = 1.0) -> np.ndarray:
    """Probabilities of logits divided by `temperature`: sigmoid (binary, (n,)) or softmax (multiclass)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    return expit(z) if _kind(kind) == "binary" else softmax(z, axis=1)


def nll(kind: str, logits, labels, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the labels, computed from logits (no clipping needed)."""
    z, y = np.asarray(logits, dtype=np.float64) / temperature, np.asarray(labels)
    if _kind(kind) == "binary":
        return float(-(y * log_expit(z) + (1 - y) * log_expit(-z)).mean())
    return float(-log_softmax(z, axis=1)[np.arange(len(y)), y.astype(np.int64)].mean())


def fit_temperature(kind: str, logits, labels) -> tuple[float, bool]:
    """The temperature T minimising the NLL of `logits / T` (Guo et al. 2017), searched on log T within
    TEMPERATURE_BOUNDS; and whether it landed on a bound (then the fit says little: e.g. a separable split)."""
    low, high = np.log(TEMPERATURE_BOUNDS)
    found = minimize_scalar(lambda t: nll(kind, logits, labels, np.exp(t)), bounds=(low, high), method="bounded",
                            options={"xatol": 1e-4})
    t = float(np.clip(found.x, low, high))
    return float(np.exp(t)), bool(min(t - low, high - t) < 1e-3)


def judged(kind: str, labels, probs) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, outcome) pairs that calibration is measured on (see the module docstring)."""
    y, p = np.asarray(labels, dtype=np.float64), np.asarray(probs, dtype=np.float64)
    if _kind(kind) == "binary":
        return p, y
    return p.max(axis=1), (p.argmax(axis=1) == y).astype(np.float64)


def equal_mass_bins(confidence: np.ndarray, bins: int = ECE_BINS) -> np.ndarray:
    """Bin index of every confidence for `bins` bins of (about) equal counts; equal values share a bin.
    Edges are midpoints between neighbours of the sorted values, as `calibration.get_equal_bins` (Kumar et al.)."""
    ordered = np.sort(confidence)
    parts = np.array_split(ordered, min(bins, len(ordered)))
    edges = np.unique([(a[-1] + b[0]) / 2 for a, b in zip(parts[:-1], parts[1:])] + [1.0])
    return np.searchsorted(edges, confidence, side="left")


def debiased_calibration_error(confidence, outcome, bins: int = ECE_BINS) -> float:
    """Kumar et al. 2019's debiased estimate of the L2 calibration error over equal-mass bins: per bin the squared
    gap between mean confidence and outcome rate, less its sampling bias rate*(1-rate)/(n_bin - 1), weighted by the
    bin's share; the root of the (non-negative part of the) sum. Bins of one value count zero."""
    c, o = np.asarray(confidence, dtype=np.float64), np.asarray(outcome, dtype=np.float64)
    idx = equal_mass_bins(c, bins)
    count = np.bincount(idx)
    keep = count > 1
    n = np.where(keep, count, 1)
    rate = np.bincount(idx, o) / n
    squared = (np.bincount(idx, c) / n - rate) ** 2 - rate * (1 - rate) / np.maximum(n - 1, 1)
    return float(np.sqrt(max(np.sum(np.where(keep, squared, 0.0) * count) / len(c), 0.0)))


def brier(kind: str, labels, probs) -> float:
    """Mean squared error of the probabilities: of the positive class (binary), summed over classes (multiclass)."""
    y, p = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    if _kind(kind) == "binary":
        return float(np.mean((p - y) ** 2))
    return float(np.mean(np.sum((p - np.eye(p.shape[1])[y.astype(np.int64)]) ** 2, axis=1)))


def reliability(confidence, outcome, bins: int = ECE_BINS) -> dict[str, list]:
    """Per equal-width bin the count and the sums of confidence and outcome (sums, so that seeds pool by adding):
    the data of a reliability diagram."""
    c, o = np.asarray(confidence, dtype=np.float64), np.asarray(outcome, dtype=np.float64)
    idx = equal_width_bins(c, bins)
    return {"count": np.bincount(idx, minlength=bins).tolist(),
            "confidence": np.bincount(idx, c, bins).round(6).tolist(),
            "outcome": np.bincount(idx, o, bins).tolist()}


def _errors(kind: str, labels, probs, logits, temperature: float) -> dict[str, float]:
    confidence, outcome = judged(kind, labels, probs)
    return {"ece": expected_calibration_error(confidence, outcome),
            "ece_debiased": debiased_calibration_error(confidence, outcome),
            "nll": nll(kind, logits, labels, temperature), "brier": brier(kind, labels, probs)}


def calibrate(kind: str, val_logits, val_labels, test_logits, test_labels) -> tuple[dict, np.ndarray, dict]:
    """One model's calibration: a temperature fitted on validation, and on test the errors before and after it.

    Returns (scalars, calibrated test probabilities, reliability data before and after). Scalars: temperature,
    temperature_at_bound (0/1), ece, ece_debiased, nll, brier and the same with the suffix _calibrated."""
    temperature, at_bound = fit_temperature(kind, val_logits, val_labels)
    raw, scaled = probabilities(kind, test_logits), probabilities(kind, test_logits, temperature)
    out = {"temperature": temperature, "temperature_at_bound": float(at_bound)}
    out.update(_errors(kind, test_labels, raw, test_logits, 1.0))
    out.update({f"{k}_calibrated": v for k, v in _errors(kind, test_labels, scaled, test_logits, temperature).items()})
    diagram = {"raw": reliability(*judged(kind, test_labels, raw)),
               "calibrated": reliability(*judged(kind, test_labels, scaled))}
    return out, scaled, diagram

