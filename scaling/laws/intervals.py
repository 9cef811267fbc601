"""Percentile intervals of bootstrap draws and their widening where few values stand behind them: one definition
for the laws' parameters, the paired contrasts, effective data transferred and the saliency scores."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats


def percentile_interval(draws: np.ndarray, level: float = 0.95, axis: int | None = None, *,
                        quantiles: Sequence[float] | None = None) -> np.ndarray:
    """The quantiles (1 - level)/2 and (1 + level)/2 of `draws` (along `axis`), stacked first: (low, high).

    `quantiles` gives the two quantiles instead, for results first published from them written out: the
    computed (1 - 0.95)/2 is 0.025000000000000022, not 0.025, and moves an interpolated quantile's last bits."""
    return np.quantile(draws, [(1 - level) / 2, (1 + level) / 2] if quantiles is None else quantiles, axis=axis)


def t_over_z(df: int, level: float) -> float:
    """Student's t over the normal quantile at `level` for `df` degrees of freedom: the factor by which a
    percentile interval of a bootstrap from few values is widened about its estimate (a bootstrap's spread is
    that of a normal, not of Student's t)."""
    q = (1 + level) / 2
    return float(stats.t.ppf(q, df) / stats.norm.ppf(q))
