"""Intervals a verdict can rest on, and plateaus that are answers rather than errors."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from scaling.laws import FitError, fit

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_laws import COVERAGE_BINS, coverage_family  # noqa: E402  (the family the benchmark measures)


def _random_law(rng):
    """E + A·x^-α, 12 log-spaced points over three decades, 2% multiplicative noise."""
    alpha, e = rng.uniform(0.2, 0.7), rng.uniform(0.02, 0.2)
    x = np.logspace(2, 5, 12)
    a = rng.uniform(1, 4) * e * x[0] ** alpha
    y = (e + a * x ** -alpha) * np.exp(rng.normal(0, 0.02, len(x)))
    return x, y, {"E": e, "A": a, "alpha": alpha}


def test_saturating_intervals_cover_the_true_parameters_at_93_percent_or_more():
    # Seeded draws, so the check is exact. Only steep curves here (power term at the first point 1-4 x E), where
    # the residual bootstrap held too; the next test draws the family where curves flatten.
    rng = np.random.default_rng(7)
    draws = 60
    hits = dict.fromkeys(("E", "A", "alpha"), 0)
    for i in range(draws):
        x, y, truth = _random_law(rng)
        law = fit(x, y, form="saturating", n_boot=100, seed=i)
        for name in hits:
            low, high = law.ci[name]
            hits[name] += low <= truth[name] <= high
    coverage = {k: v / draws for k, v in hits.items()}
    print(f"coverage of 95% intervals over {draws} laws: {coverage}")
    assert min(coverage.values()) >= 0.93, coverage


def test_a_curve_that_falls_then_plateaus_is_fitted_not_refused():
    x = 16 * np.sqrt(2) ** np.arange(10)  # 16 ... 362
    y = [0.170, 0.158, 0.144] + [0.1429] * 7
    law = fit(x, y, form="auto", n_boot=20)
    assert law.params["E"] == pytest.approx(0.1429, abs=0.002)  # the plateau is the answer
    assert law.predict([1e4])[0] == pytest.approx(0.1429, abs=0.002)
    with pytest.raises(FitError, match="constant"):
        fit(x, [0.1429] * 10, form="auto")  # only an input constant throughout is an error


def test_intervals_hold_where_curves_flatten_and_steepen():
    # The family of benchmarks/bench_laws.py --coverage: power term at the first point 0.1-10 x E, log-uniform.
    # The residual bootstrap (t/z-widened) covered E in 0.73 of such laws and in 0-0.3 where curves flatten; the
    # profile intervals measured 0.95/0.95/0.94 (alpha/E/A) over 200. At 0.73, 80 draws reach 72 hits with
    # probability 3e-4; at 0.95 they fall short of it with 2%; the draws are seeded, so the outcome is fixed.
    rng = np.random.default_rng(11)
    draws = 80
    hits = dict.fromkeys(("E", "A", "alpha"), 0)
    flat_hits, flat = dict.fromkeys(hits, 0), 0
    steep_alpha_widths = []
    for i in range(draws):
        x, y, truth, ratio = coverage_family(rng)
        law = fit(x, y, form="saturating", n_boot=2, seed=i)
        ci = law.ci
        flat += ratio < COVERAGE_BINS[1]
        for name in hits:
            low, high = ci[name]
            assert low <= law.params[name] <= high  # an interval holds its estimate
            hits[name] += low <= truth[name] <= high
            if ratio < COVERAGE_BINS[1]:
                flat_hits[name] += low <= truth[name] <= high
        if ratio > COVERAGE_BINS[2]:
            steep_alpha_widths.append(ci["alpha"][1] - ci["alpha"][0])
    coverage = {k: v / draws for k, v in hits.items()}
    flat_coverage = {k: v / flat for k, v in flat_hits.items()}
    print(f"coverage over {draws} laws: {coverage}; over the {flat} whose power term starts below E: "
          f"{flat_coverage}")
    assert min(coverage.values()) >= 0.9, coverage
    assert flat >= 25 and min(flat_coverage.values()) >= 0.85, flat_coverage  # bootstrap: E 0-0.3 there
    # and they say something where the data do: steep curves pin the exponent to about +-0.05
    assert np.median(steep_alpha_widths) < 0.15, steep_alpha_widths


def test_an_exponent_the_data_bound_on_one_side_only_is_reported_as_such():
    # the curve falls by 10% over the first decade and is flat after it: alpha is large, but how large the data
    # cannot say
    x = np.logspace(3, 6, 12)
    y = (0.1 + 0.01 * (x / 1e3) ** -1.5) * np.exp(np.random.default_rng(4).normal(0, 0.02, 12))
    law = fit(x, y, form="saturating", n_boot=2)
    assert law.interval_kinds()["alpha"] == "lower bound only"
    low, high = law.ci["alpha"]
    assert law.describe_intervals()["alpha"] == f">= {low:.4g}"
    assert high == 5.0  # the form's bound, not evidence
    assert law.interval_kinds()["E"] == "two-sided" and law.ci["E"][0] < 0.1 < law.ci["E"][1]
