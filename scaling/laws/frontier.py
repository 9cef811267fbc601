"""The compute-efficient frontier of a cloud of runs: the best error per log-spaced bin of x, kept where it falls."""
from __future__ import annotations

import numpy as np

from .checks import ArrayLike, FitError, as_vector, positive


def pareto_frontier(x: ArrayLike, y: ArrayLike, bins: int = 20) -> np.ndarray:
    """Indices of the compute-efficient frontier: the lowest ``y`` in each of ``bins`` log-spaced bins of
    ``x``, kept only where it beats every bin to its left (so the frontier falls monotonically)."""
    xs = positive(as_vector(x, "x"), "x")
    ys = as_vector(y, "y")
    if len(xs) != len(ys):
        raise FitError(f"x has {len(xs)} values but y has {len(ys)}")
    if bins < 1:
        raise FitError(f"bins must be >= 1, got {bins}")
    edges = np.linspace(np.log(xs.min()), np.log(xs.max()), bins + 1)
    which = np.clip(np.searchsorted(edges, np.log(xs), side="right") - 1, 0, bins - 1)
    keep, best = [], np.inf
    for b in range(bins):
        members = np.flatnonzero(which == b)
        if members.size:
            i = members[np.argmin(ys[members])]
            if ys[i] < best:
                keep.append(i)
                best = ys[i]
    return np.array(keep, dtype=int)
