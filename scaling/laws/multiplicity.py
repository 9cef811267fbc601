"""Multiplicity control of many verdicts: Benjamini-Hochberg adjusted p-values and the false-coverage-rate level of
the intervals that go with them (Benjamini & Yekutieli 2005).

Of m statements judged at 5% each, about 5% of the true nulls come out "supported" or "contradicted" by chance
alone. Benjamini-Hochberg at q keeps the expected share of false discoveries among the discoveries at or below q
(and, where every null is true, the chance of any discovery at or below q). The R statements it selects get
intervals at level 1 - R·q/m, which then exclude 0 exactly for the selected ones (their p <= R·q/m) and, over the
selected, miss their true value in at most a share q of them (the false coverage rate); the others are given the
same level (1 - q/m when none is selected), at which their intervals hold 0.
"""
from __future__ import annotations

import numpy as np


def benjamini_hochberg(p_values) -> np.ndarray:
    """BH-adjusted p-values (q-values): min over j >= rank of p_(j)·m/j, capped at 1; NaN stays NaN (not tested)."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    tested = np.flatnonzero(np.isfinite(p))
    m = len(tested)
    if not m:
        return out
    order = tested[np.argsort(p[tested], kind="stable")]
    scaled = p[order] * m / np.arange(1, m + 1)
    out[order] = np.minimum(1.0, np.minimum.accumulate(scaled[::-1])[::-1])
    return out


def fcr_level(p_values, q: float) -> float:
    """The interval level that goes with BH at ``q``: 1 - max(R, 1)·q/m for R selected of m tested."""
    p = np.asarray(p_values, dtype=float)
    adjusted = benjamini_hochberg(p)
    m = int(np.isfinite(p).sum())
    selected = int(np.sum(adjusted <= q))
    return 1.0 - max(selected, 1) * q / max(m, 1)
