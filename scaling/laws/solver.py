"""One form fitted to one data set: Huber loss on log residuals, minimised by a bounded trust-region optimiser
(:func:`scipy.optimize.least_squares`) from the best few of the form's starting points."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from .checks import FitError, check_enough_points
from .forms import Data, Form

DEFAULT_HUBER_DELTA = 1e-3  # in log units, as Hoffmann et al. 2022: close to L1, robust to outlier runs
N_LOCAL_STARTS = 3  # the best starts of the grid that get a full local optimisation
# Noisy data converge in tens of evaluations; noise-free data never meet the relative tolerances (the loss goes
# to zero), so the budget is what stops them.
MAX_NFEV_PER_PARAM = 60


def huber(r: np.ndarray, delta: float) -> np.ndarray:
    a = np.abs(r)
    return np.where(a <= delta, r * r, delta * (2.0 * a - delta))


@dataclass(frozen=True)
class Problem:
    """A form on centred data, with the bounds split into free parameters and ones pinned by lo == hi."""

    form: Form
    data: Data
    log_ref: np.ndarray  # the centre of each log input
    delta: float
    lo: np.ndarray
    hi: np.ndarray

    @classmethod
    def make(cls, form: Form, arrays: tuple[np.ndarray, ...], y: np.ndarray, delta: float,
             chance: float | None) -> Problem:
        logs = tuple(np.log(a) for a in arrays)
        log_ref = np.array([0.5 * (lx.min() + lx.max()) for lx in logs])
        data = Data(tuple(lx - r for lx, r in zip(logs, log_ref)), y, chance)
        lo, hi = form.bounds(data)
        return cls(form, data, log_ref, delta, np.asarray(lo, float), np.asarray(hi, float))

    def centred(self, arrays: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
        return tuple(np.log(a) - r for a, r in zip(arrays, self.log_ref))

    @property
    def free(self) -> np.ndarray:
        return self.hi > self.lo

    def full(self, theta_free: np.ndarray) -> np.ndarray:
        theta = self.lo.copy()
        theta[self.free] = theta_free
        return theta

    def residuals(self, theta: np.ndarray, ly: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            r = ly - self.form.log_predict(theta, self.data.u)
        # The optimiser may probe the edge of a form's domain; a large finite residual steers it back.
        return np.where(np.isfinite(r), r, 1e3)

    def loss(self, theta: np.ndarray, ly: np.ndarray) -> float:
        return float(np.sum(huber(self.residuals(theta, ly), self.delta)))

    def clip(self, theta: np.ndarray) -> np.ndarray:
        span = self.hi - self.lo
        return np.clip(theta, self.lo + 1e-9 * span, self.hi - 1e-9 * span)

    def jacobian(self, theta: np.ndarray) -> np.ndarray:
        """d residuals / d theta (free entries), where the form gives its gradient; finite like the residuals."""
        with np.errstate(all="ignore"):
            jac = -self.form.gradient(theta, self.data.u)[:, self.free]
        return np.where(np.isfinite(jac), jac, 0.0)

    def local(self, start: np.ndarray, ly: np.ndarray) -> np.ndarray:
        free = self.free
        jac = (lambda t: self.jacobian(self.full(t))) if self.form.gradient else "2-point"
        sol = least_squares(lambda t: self.residuals(self.full(t), ly), self.clip(start)[free], jac=jac,
                            bounds=(self.lo[free], self.hi[free]), loss="huber", f_scale=self.delta,
                            method="trf", x_scale="jac", max_nfev=MAX_NFEV_PER_PARAM * (1 + int(free.sum())))
        return self.full(sol.x)

    def solve(self) -> np.ndarray:
        ly = self.data.ly
        starts = np.array([self.clip(s) for s in self.form.starts(self.data) if np.all(np.isfinite(s))])
        if not len(starts):
            raise FitError(f"form {self.form.name!r}: no valid starting point for these data")
        order = np.argsort([self.loss(s, ly) for s in starts])
        fits = [self.local(starts[i], ly) for i in order[:N_LOCAL_STARTS]]
        best = min(fits, key=lambda t: self.loss(t, ly))
        if not np.all(np.isfinite(best)) or not np.isfinite(self.loss(best, ly)):
            raise FitError(f"form {self.form.name!r} did not converge to finite parameters")
        return best


def solve(form: Form, arrays: tuple[np.ndarray, ...], y: np.ndarray, delta: float,
          chance: float | None) -> tuple[np.ndarray, Problem]:
    """The best internal parameters of `form` on the data, and the problem they solve (for predictions and the
    bootstrap's refits)."""
    if len(y) < 2:
        raise FitError(f"form {form.name!r} cannot be fitted to {len(y)} point(s)")
    problem = Problem.make(form, arrays, y, delta, chance)
    check_enough_points(form, arrays, y, n_fixed=int((~problem.free).sum()))
    return problem.solve(), problem
