"""Uncertainty from what a fine-tuning trial already trains: its seed replicas as an ensemble, selective
prediction on the ensemble's confidence, and a 95% interval for the trial's test AUC. Numpy/scipy only.

Probabilities come per seed: (seeds, n) positive-class probabilities for binary tasks, (seeds, n, K) for
multiclass. The ensemble predicts the seeds' mean probability.
  - predictive entropy H[mean_s p_s] (nats), averaged over images; mutual information H[mean p] - mean_s H[p_s]
    (the part of the entropy that the seeds disagree on, Lakshminarayanan et al. 2017 / Depeweg et al. 2018);
    spread: the standard deviation over seeds of the positive-class (binary) or top-class probability.
  - risk-coverage: images ordered by the ensemble's confidence (max class probability); at coverage c the risk is
    the error rate of the decisions on the most confident fraction c; AURC is the mean risk over all n
    coverages k/n (Geifman et al. 2019); AUROC at 80% coverage is the ROC-AUC on the 80% most confident images.
  - test AUC interval: DeLong et al. 1988 for the mean of the seeds' AUCs (the trial's reported test_roc_auc): its
    variance from the seeds' joint DeLong covariance, a normal interval clipped to [0, 1]. Binary tasks only.
DeLong is written here (Sun & Xu 2014's mid-rank form, a few lines) because neither scipy nor scikit-learn has it.
"""
from __future__ import annotations

import numpy as np
from scipy.special import xlogy
from scipy.stats import norm, rankdata

from scaling.evaluate.metrics import evaluate
from scaling.laws.compare import auc as roc_auc

COVERAGE = 0.8


def _categorical(kind: str, probs: np.ndarray) -> np.ndarray:
    """(..., K) class probabilities; binary (...,) positive-class probabilities become (..., 2)."""
    return np.stack([1 - probs, probs], axis=-1) if kind == "binary" else probs


def _entropy(p: np.ndarray) -> np.ndarray:
    return -xlogy(p, p).sum(axis=-1)


def _decisions(kind: str, mean: np.ndarray) -> np.ndarray:
    return (mean >= 0.5).astype(np.int64) if kind == "binary" else mean.argmax(axis=-1)


def risk_coverage(kind: str, labels, mean_probs) -> tuple[np.ndarray, np.ndarray]:
    """(coverage, risk) at every k/n, k = 1..n: the error rate of the k most confident decisions."""
    y = np.asarray(labels)
    confidence = _categorical(kind, np.asarray(mean_probs, dtype=np.float64)).max(axis=-1)
    order = np.argsort(-confidence, kind="stable")
    wrong = (_decisions(kind, np.asarray(mean_probs))[order] != y[order]).astype(np.float64)
    k = np.arange(1, len(y) + 1)
    return k / len(y), np.cumsum(wrong) / k


def ensemble(kind: str, labels, probs) -> dict[str, float]:
    """Ensemble metrics of the seeds' probabilities `probs` (seeds first): ensemble_roc_auc, ensemble_nll,
    ensemble_ece, ensemble_entropy, mutual_information, seed_spread, aurc, auroc_at_80."""
    y, p = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    mean = p.mean(axis=0)
    joint = evaluate(kind, y, mean)
    cat = _categorical(kind, p)
    entropy = _entropy(cat.mean(axis=0))
    per_seed = cat.max(axis=-1) if kind != "binary" else p
    coverage, risk = risk_coverage(kind, y, mean)
    confidence = _categorical(kind, mean).max(axis=-1)
    kept = np.argsort(-confidence, kind="stable")[:max(1, int(round(COVERAGE * len(y))))]
    try:
        auroc_kept = evaluate(kind, y[kept], mean[kept])["roc_auc"]
    except ValueError:  # the kept images hold one class only
        auroc_kept = float("nan")
    return {"ensemble_roc_auc": joint["roc_auc"], "ensemble_nll": joint["nll"], "ensemble_ece": joint["ece"],
            "ensemble_entropy": float(entropy.mean()),
            "mutual_information": float((entropy - _entropy(cat).mean(axis=0)).mean()),
            "seed_spread": float(per_seed.std(axis=0, ddof=1).mean()) if len(p) > 1 else float("nan"),
            "aurc": float(risk.mean()), "auroc_at_80": auroc_kept}


def delong(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """AUCs of several scorers of the same binary labels (rows of `scores`) and their DeLong covariance."""
    y = np.asarray(labels) == 1
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    pos, neg = s[:, y], s[:, ~y]
    m, n = pos.shape[1], neg.shape[1]
    if m < 2 or n < 2:
        raise ValueError(f"DeLong needs at least 2 positives and 2 negatives, got {m} and {n}")
    rank_all = rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    rank_pos, rank_neg = rankdata(pos, axis=1), rankdata(neg, axis=1)
    v10 = (rank_all[:, :m] - rank_pos) / n  # per positive: share of negatives it outranks
    v01 = 1 - (rank_all[:, m:] - rank_neg) / m  # per negative: share of positives that outrank it
    return roc_auc(s, y), np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n


def auc_interval(labels, probs, level: float = 0.95) -> tuple[float, float]:
    """Interval at `level` for the mean over seeds of the test ROC-AUC (binary; `probs` (seeds, n))."""
    auc, cov = delong(labels, probs)
    weights = np.full(len(auc), 1 / len(auc))
    half = norm.ppf(0.5 + level / 2) * np.sqrt(max(weights @ cov @ weights, 0.0))
    return float(max(auc.mean() - half, 0.0)), float(min(auc.mean() + half, 1.0))
