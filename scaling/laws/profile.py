"""Profile-likelihood intervals of a law's parameters, one-sided where the data bound a parameter on one side only.

A residual bootstrap's percentile intervals hold where a curve is steep and fail where it has mostly flattened over
the observed range: there the refits pile up against the bounds (``E <= min y``, an exponent that cannot be told
from a larger one) and the percentiles say nothing of it (``benchmarks/bench_laws.py --coverage``: E covered in
under half of such laws). The profile instead asks, for each value ``v`` of one parameter, how well the law fits
with that parameter pinned at ``v`` and the others refitted, and keeps every ``v`` whose least-squares loss on
log y stays within the F (t²) threshold of the best: ``S(v) <= S_min·(1 + t²_{n-p}/(n-p))``, the classical
nonlinear-regression interval (Bates & Watts 1988, ch. 6). Where the loss never crosses the threshold before a
bound, the interval is one-sided and says so (``alpha >= 0.31``): the data bound it on one side only.

The walk from the estimate doubles its step until the threshold is crossed or a bound reached, then bisects:
about a dozen small refits per side, warm-started from the last point inside.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats
from scipy.optimize import least_squares

from .forms import MAX_EXPONENT

AMPLITUDE_REACH = 30.0  # e-folds an amplitude's profile walks before calling that side unbounded
FIRST_STEP = 0.05  # of the natural scale (1 for exponents and log amplitudes, the data's y for E)
BISECTIONS = 7
MAX_DOUBLINGS = 12


@dataclass(frozen=True)
class Side:
    """One end of a profile interval: the value, and whether the data bound it there (False: a bound of the
    parameter or the walk's reach was hit first, so the interval is open on that side)."""

    value: float
    bounded: bool


@dataclass(frozen=True)
class Interval:
    low: Side
    high: Side

    @property
    def kind(self) -> str:
        return {(True, True): "two-sided", (True, False): "lower bound only", (False, True): "upper bound only",
                (False, False): "not identified"}[(self.low.bounded, self.high.bounded)]


class Profile:
    """The profile of every free parameter of a fitted problem (:class:`scaling.laws.solver.Problem`)."""

    def __init__(self, problem, theta: np.ndarray, level: float):
        self.problem, self.form = problem, problem.form
        ly = problem.data.ly
        self.ly = ly
        free = problem.free
        n, p = len(ly), int(free.sum())
        df = max(n - p, 1)
        # E's fit bound (the lowest y) is a choice of the estimate, not a fact: with noise the true floor can lie
        # above the lowest observation, and a profile held below it misses such floors (and the exponents with them)
        self.lo, self.hi = problem.lo.copy(), problem.hi.copy()
        if "E" in self.form.params:
            self.hi[self.form.params.index("E")] = float(problem.data.y.max())
        # the least-squares optimum (the fit itself minimises a Huber loss) from the fitted parameters
        sol = least_squares(lambda t: problem.residuals(problem.full(t), ly), problem.clip(theta)[free],
                            bounds=(self.lo[free], self.hi[free]), method="trf", x_scale="jac")
        self.theta = problem.full(sol.x)
        self.s_min = float(np.sum(problem.residuals(self.theta, ly) ** 2))
        self.threshold = self.s_min * (1.0 + stats.t.ppf((1 + level) / 2, df) ** 2 / df)

    # --- the public parameter j as a coordinate the walk moves along ------------------------------------------

    def _scaled(self, j: int):
        return next((s for s in self.form.scaled if s[0] == j), None)

    def coordinate(self, j: int, theta: np.ndarray) -> float:
        """Where theta lies on the walk's axis of parameter j: log of a positive public value, else the value."""
        public = self.form.to_public(theta, self.problem.log_ref)[j]
        return float(np.log(public)) if j in self.form.log_params else float(public)

    def pin(self, j: int, s: float, theta: np.ndarray) -> np.ndarray:
        """theta with parameter j set so that its coordinate is s (the others as given)."""
        out = theta.copy()
        scaled = self._scaled(j)
        breaks = dict(self.form.breaks)
        rates = dict(self.form.rate_changes)
        if scaled:
            _, exp, var, sign = scaled
            out[j] = s - sign * theta[exp] * self.problem.log_ref[var]
        elif j in breaks:
            out[j] = s - self.problem.log_ref[breaks[j]]
        elif j in rates:
            out[j] = s + theta[rates[j]]
        else:
            out[j] = s
        return out

    def reach(self, j: int, s_hat: float) -> tuple[float, float]:
        """How far the walk may go along parameter j: its bounds in the walk's coordinate."""
        lo, hi = self.lo[j], self.hi[j]
        if self._scaled(j) or j in dict(self.form.rate_changes):
            span = AMPLITUDE_REACH if self._scaled(j) else 2 * MAX_EXPONENT
            return s_hat - span, s_hat + span
        if j in dict(self.form.breaks):
            ref = self.problem.log_ref[dict(self.form.breaks)[j]]
            return lo + ref, hi + ref
        return float(lo), float(hi)

    def loss_at(self, j: int, s: float, start: np.ndarray) -> tuple[float, np.ndarray]:
        """The least-squares loss with parameter j pinned at coordinate s, the others refitted from start."""
        problem, ly = self.problem, self.ly
        others = problem.free.copy()
        others[j] = False
        if not others.any():
            theta = self.pin(j, s, start)
            return float(np.sum(problem.residuals(theta, ly) ** 2)), theta

        def full(t):
            theta = start.copy()
            theta[others] = t
            return self.pin(j, s, theta)

        lo, hi = self.lo[others], self.hi[others]
        x0 = np.clip(start[others], lo + 1e-9 * (hi - lo), hi - 1e-9 * (hi - lo))
        sol = least_squares(lambda t: problem.residuals(full(t), ly), x0, bounds=(lo, hi), method="trf",
                            x_scale="jac", max_nfev=50 * (1 + int(others.sum())))
        theta = full(sol.x)
        return float(np.sum(problem.residuals(theta, ly) ** 2)), theta

    def side(self, j: int, direction: float) -> Side:
        s_hat = self.coordinate(j, self.theta)
        lo, hi = self.reach(j, s_hat)
        limit = hi if direction > 0 else lo
        scale = max(float(self.problem.data.y.min()), 1e-12) if self.form.params[j] == "E" else 1.0
        step = FIRST_STEP * scale
        inside, theta_in = s_hat, self.theta
        for _ in range(MAX_DOUBLINGS):
            s = s_hat + direction * step
            if (s - limit) * direction >= 0:
                s = limit
            loss, theta = self.loss_at(j, s, theta_in)
            if loss > self.threshold:
                return Side(self._bisect(j, inside, s, theta_in), True)
            inside, theta_in = s, theta
            if s == limit:
                return Side(limit, False)
            step *= 2
        return Side(inside, False)

    def _bisect(self, j: int, inside: float, outside: float, theta_in: np.ndarray) -> float:
        for _ in range(BISECTIONS):
            mid = 0.5 * (inside + outside)
            loss, theta = self.loss_at(j, mid, theta_in)
            if loss > self.threshold:
                outside = mid
            else:
                inside, theta_in = mid, theta
        return 0.5 * (inside + outside)

    def interval(self, j: int) -> Interval:
        return Interval(self.side(j, -1.0), self.side(j, +1.0))


def profile_intervals(problem, theta: np.ndarray, level: float) -> dict[int, Interval]:
    """Profile intervals of the free parameters, by index, in the walk's coordinate (log for amplitudes)."""
    profile = Profile(problem, theta, level)
    return {j: profile.interval(j) for j in np.flatnonzero(problem.free)}
