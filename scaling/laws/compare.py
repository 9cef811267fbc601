"""Paired comparisons of ROC-AUC between runs evaluated on one test set: a contrast of mean AUCs with a
bootstrap interval.

A contrast is a weighted sum of runs' mean AUCs over seeds: ``+1·medical - 1·scratch`` is a gain, and
``(+1·big_medical - 1·big_scratch) - (+1·small_medical - 1·small_scratch)`` the growth of a gain. Every run
trained the same seeds and was scored on the same test images, so one bootstrap replicate draws seed indices and
image indices once and applies them to every run: what the runs share cancels, as in a paired test. With only
per-seed AUCs (no per-image scores) the replicates resample seeds alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm, rankdata, t

CHUNK = 100  # bootstrap replicates ranked at once: (CHUNK, seeds, images) floats stay a few MB


@dataclass(frozen=True)
class Contrast:
    estimate: float  # the contrast of mean AUCs on the data as observed
    low: float
    high: float
    n_seeds: int
    n_images: int | None  # None when the bootstrap resampled seeds only
    method: str  # "seeds+images" or "seeds"
    level: float

    def to_dict(self) -> dict:
        return {"estimate": self.estimate, "ci": [self.low, self.high], "level": self.level,
                "n_seeds": self.n_seeds, "n_images": self.n_images, "bootstrap": self.method}


def auc(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """ROC-AUC along the last axis by the rank-sum (Mann-Whitney) formula, ties counted half; ``labels`` 0/1
    broadcast against ``scores``. NaN where a draw holds one class only."""
    labels = np.broadcast_to(labels, scores.shape).astype(bool)
    ranks = rankdata(scores, axis=-1)
    pos = labels.sum(axis=-1)
    neg = labels.shape[-1] - pos
    with np.errstate(invalid="ignore", divide="ignore"):
        return (np.where(labels, ranks, 0.0).sum(axis=-1) - pos * (pos + 1) / 2) / (pos * neg)


def _check(weights: Sequence[float], runs: Sequence[np.ndarray], what: str) -> list[np.ndarray]:
    if len(weights) != len(runs) or not runs:
        raise ValueError(f"a contrast needs one weight per run, got {len(weights)} weights for {len(runs)} runs")
    arrays = [np.asarray(r, dtype=float) for r in runs]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"runs must share their {what}: got shapes {sorted(shapes)}")
    return arrays


def _interval(estimate: float, draws: np.ndarray, level: float) -> tuple[float, float]:
    draws = draws[np.isfinite(draws)]
    low, high = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def contrast_images(weights: Sequence[float], probs: Sequence[np.ndarray], labels: np.ndarray, *,
                    n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> Contrast:
    """The contrast from per-image scores: ``probs[i]`` of shape (seeds, images) for run i, seeds in the same
    order for every run, ``labels`` (images,). Replicates resample seeds and images, shared by all runs."""
    arrays = _check(weights, probs, "(seeds, images) shape")
    stacked = np.stack(arrays)  # (runs, seeds, images)
    if stacked.ndim != 3:
        raise ValueError(f"per-image scores must be (seeds, images) per run, got {stacked.shape[1:]}")
    labels = np.asarray(labels)
    if labels.shape != (stacked.shape[2],):
        raise ValueError(f"labels have shape {labels.shape}, the scores {stacked.shape[2]} images")
    w = np.asarray(weights, dtype=float)
    estimate = float(w @ auc(stacked, labels).mean(axis=1))
    rng = np.random.default_rng(seed)
    runs, seeds, images = stacked.shape
    draws = []
    for start in range(0, n_boot, CHUNK):
        b = min(CHUNK, n_boot - start)
        si = rng.integers(0, seeds, size=(b, seeds))
        ii = rng.integers(0, images, size=(b, images))
        # (b, runs, seeds, images): the same seeds and images for every run of a replicate
        picked = stacked[:, si[:, :, None], ii[:, None, :]].transpose(1, 0, 2, 3)
        draws.append(np.nanmean(auc(picked, labels[ii][:, None, None, :]), axis=2) @ w)
    low, high = _interval(estimate, np.concatenate(draws), level)
    return Contrast(estimate, low, high, seeds, images, "seeds+images", level)


def contrast_seeds(weights: Sequence[float], aucs: Sequence[np.ndarray], *, n_boot: int = 1000,
                   level: float = 0.95, seed: int = 0) -> Contrast:
    """The contrast from per-seed AUCs (``aucs[i]`` of shape (seeds,), paired by seed index): replicates
    resample seeds only, so the test set's own sampling noise is not in the interval. A bootstrap over a handful
    of seeds understates the spread (its variance is (n-1)/n of the unbiased one, and a normal quantile stands in
    for Student's t; two seeds give at most two distinct means), so the percentile interval is widened about the
    estimate by t_{n-1}/z·sqrt(n/(n-1)): with 2 seeds it is wide, with 10 nearly the plain bootstrap."""
    arrays = _check(weights, aucs, "number of seeds")
    stacked = np.stack(arrays)  # (runs, seeds)
    w = np.asarray(weights, dtype=float)
    estimate = float(w @ stacked.mean(axis=1))
    rng = np.random.default_rng(seed)
    si = rng.integers(0, stacked.shape[1], size=(n_boot, stacked.shape[1]))
    draws = stacked[:, si].mean(axis=2).T @ w
    low, high = _interval(estimate, draws, level)
    n = stacked.shape[1]
    if n > 1:
        q = (1 + level) / 2
        widen = t.ppf(q, n - 1) / norm.ppf(q) * np.sqrt(n / (n - 1))
        low, high = estimate + widen * (low - estimate), estimate + widen * (high - estimate)
    return Contrast(estimate, float(low), float(high), n, None, "seeds", level)


def verdict(c: Contrast) -> str:
    """supported (the interval lies above 0), contradicted (below 0) or inconclusive (it holds 0)."""
    if c.n_seeds < 2 and c.n_images is None:
        return "inconclusive"  # one seed and no per-image scores: the interval is a point, no evidence of spread
    return "supported" if c.low > 0 else "contradicted" if c.high < 0 else "inconclusive"
