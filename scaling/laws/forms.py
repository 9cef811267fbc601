"""The functional forms of scaling laws, in one place.

Each form is a :class:`Form`: its public parameter names (as written in its formula), how many input variables
it takes, and the small functions the fitter needs (prediction, bounds, starting grid, and for the forms studies
fit most, the gradient of the prediction). Fitting happens on an
*internal* parameter vector in which every input is centred, ``u = log(x / x_ref)`` with ``x_ref`` the
geometric middle of the data: amplitudes then stay near the scale of ``y`` and are not collinear with their
exponents, which keeps the local optimiser well conditioned when ``x`` spans 1e6..1e10. ``Form.to_public``
converts back to the units of the data.

Forms (``x`` one variable unless said; all exponents are decay rates, so the laws fall with ``x``):

``power``       ``A·x^-alpha``
``saturating``  ``E + A·x^-alpha``
``m4``          ``(y - E) / (E0 - y)^gamma = A·x^-alpha``  (Alabdulmohsin et al. 2022, M4: falls from the chance
                plateau ``E0`` at small ``x`` to ``E`` at large ``x``; solved for ``y``)
``broken``      ``E + A·x^-alpha·(1 + (x/x_b)^(1/s))^(-delta·s)``  (Caballero et al. 2022, one break at ``x_b``
                of sharpness ``s``; the decay rate is ``alpha`` before it and ``alpha + delta`` after it)
``joint``       ``E + A/N^alpha + B/D^beta`` over two variables (Hoffmann et al. 2022)
``transfer``    ``D_T = k·D_F^alpha·N^beta`` over two variables (Hernandez et al. 2021; exponents are growth
                rates here, and ``y`` is the effective data transferred, not an error)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.optimize import nnls
from scipy.special import expit

Inputs = tuple[np.ndarray, ...]  # centred log inputs, one array per variable
Bounds = tuple[np.ndarray, np.ndarray]

MAX_EXPONENT = 5.0  # decays faster than x^-5 are not scaling laws but fitting accidents
AMPLITUDE_SPAN = 30.0  # internal log-amplitudes may range this far (in e-folds) beyond log(y)


@dataclass(frozen=True)
class Data:
    """What the bounds and starting grids of a form may look at: centred log inputs and the targets."""

    u: Inputs
    y: np.ndarray
    chance: float | None = None  # fixes E0 of m4 when given

    @property
    def ly(self) -> np.ndarray:
        return np.log(self.y)


@dataclass(frozen=True)
class Form:
    """A scaling-law form: ``log_predict(theta, u)`` on internal parameters and centred log inputs."""

    name: str
    formula: str
    params: tuple[str, ...]
    variables: int
    log_predict: Callable[[np.ndarray, Inputs], np.ndarray]
    bounds: Callable[[Data], Bounds]
    starts: Callable[[Data], np.ndarray]
    # d log_predict / d theta, shape (n, n_params); None: the optimiser differentiates numerically. Given for the
    # forms a study fits hundreds of times in bootstraps: their refits then run 1.2-1.35x faster, same results.
    gradient: Callable[[np.ndarray, Inputs], np.ndarray] | None = None
    # (amplitude index, exponent index, variable index, sign): log amp_public = log amp_internal
    #  + sign * exponent * log x_ref[variable]; what centring the inputs does to each amplitude.
    scaled: tuple[tuple[int, int, int, float], ...] = ()
    log_params: tuple[int, ...] = ()  # internal entries that are logs of public ones (amplitudes, x_b)
    breaks: tuple[tuple[int, int], ...] = ()  # (index, variable): a location on the x axis, stored centred
    # (index, base): internally the rate after a break (bounded >= 0), publicly its change from the rate before
    rate_changes: tuple[tuple[int, int], ...] = ()

    @property
    def n_params(self) -> int:
        return len(self.params)

    def to_public(self, theta: np.ndarray, log_ref: np.ndarray) -> np.ndarray:
        """Internal (centred, log amplitudes) -> public parameters in the units of the data."""
        out = np.array(theta, dtype=float, copy=True)
        for amp, exp, var, sign in self.scaled:
            out[..., amp] = out[..., amp] + sign * out[..., exp] * log_ref[var]
        for idx, var in self.breaks:
            out[..., idx] = out[..., idx] + log_ref[var]
        for idx, base in self.rate_changes:
            out[..., idx] = out[..., idx] - out[..., base]
        out[..., list(self.log_params)] = np.exp(out[..., list(self.log_params)])
        return out


# --- shared pieces ------------------------------------------------------------------------------------------


def _floor_grid(data: Data) -> np.ndarray:
    """Candidate asymptotes E as fractions of the lowest observed y."""
    return np.array([0.0, 0.5, 0.8, 0.9, 0.95, 0.99]) * data.y.min()


def _log_amp_bounds(data: Data) -> tuple[float, float]:
    return float(data.ly.min()) - AMPLITUDE_SPAN, float(data.ly.max()) + AMPLITUDE_SPAN


def _slope_fit(u: np.ndarray, z: np.ndarray) -> tuple[float, float]:
    """Least-squares line z = a - alpha*u, returned as (a, alpha)."""
    slope, icpt = np.polyfit(u, z, 1)
    return float(icpt), float(-slope)


def _softplus(z: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, z)


# --- power --------------------------------------------------------------------------------------------------


def _power_log(theta: np.ndarray, u: Inputs) -> np.ndarray:
    a, alpha = theta
    return a - alpha * u[0]


def _power_gradient(theta: np.ndarray, u: Inputs) -> np.ndarray:
    return np.column_stack([np.ones_like(u[0]), -u[0]])


def _power_bounds(data: Data) -> Bounds:
    lo_a, hi_a = _log_amp_bounds(data)
    return np.array([lo_a, 0.0]), np.array([hi_a, MAX_EXPONENT])


def _power_starts(data: Data) -> np.ndarray:
    return np.array([_slope_fit(data.u[0], data.ly)])


# --- saturating ---------------------------------------------------------------------------------------------


def _saturating_log(theta: np.ndarray, u: Inputs) -> np.ndarray:
    e, a, alpha = theta
    return np.log(e + np.exp(a - alpha * u[0]))


def _saturating_gradient(theta: np.ndarray, u: Inputs) -> np.ndarray:
    e, a, alpha = theta
    z = np.exp(a - alpha * u[0])
    total = e + z
    return np.column_stack([1.0 / total, z / total, -u[0] * z / total])


def _saturating_bounds(data: Data) -> Bounds:
    lo_a, hi_a = _log_amp_bounds(data)
    return np.array([0.0, lo_a, 0.0]), np.array([data.y.min(), hi_a, MAX_EXPONENT])


def _saturating_starts(data: Data) -> np.ndarray:
    # Profile over the asymptote: for a fixed E the rest is a straight line in log-log.
    return np.array([(e, *_slope_fit(data.u[0], np.log(data.y - e))) for e in _floor_grid(data)])


# --- m4 -----------------------------------------------------------------------------------------------------


def _m4_fraction(c: np.ndarray, gamma: float) -> np.ndarray:
    """Solve log s - gamma·log(1 - s) = c for s in (0, 1); returned as t = logit(s).

    The left side rises with t (like t for t << 0, like gamma·t for t >> 0), so Newton's method from the
    matching asymptote, kept inside a shrinking bracket, converges in a few steps.
    """
    if gamma <= 0.0:  # no cap: s = e^c, saturating at s = 1 (y = E0) where c >= 0
        return np.where(c < 0, c - np.log(-np.expm1(np.minimum(c, -1e-300))), 700.0)
    t = np.clip(np.where(c < 0, c, c / gamma), -700.0, 700.0)
    lo, hi = np.full_like(t, -750.0), np.full_like(t, 750.0)
    tol = 1e-13 * (1.0 + np.abs(c))
    for _ in range(100):
        h = gamma * _softplus(t) - _softplus(-t) - c
        done = np.abs(h) <= tol
        if done.all():
            break
        lo = np.where(h < 0, t, lo)
        hi = np.where(h > 0, t, hi)
        step = t - h / (expit(-t) + gamma * expit(t))
        t = np.where(done, t, np.where((step >= lo) & (step <= hi), step, 0.5 * (lo + hi)))
    return t


def _m4_log(theta: np.ndarray, u: Inputs) -> np.ndarray:
    e, e0, a, alpha, gamma = theta
    b = e0 - e
    c = a - alpha * u[0] + (gamma - 1.0) * np.log(b)
    t = _m4_fraction(c, gamma)
    return np.log(e + b * expit(t))


def _m4_e0_range(data: Data) -> tuple[float, float]:
    if data.chance is not None:
        return data.chance, data.chance
    top = float(data.y.max())
    # An error rate's chance level is at most 1; other losses get room of one data range above the top.
    high = 1.0 if top < 1.0 else top + (top - float(data.y.min()))
    return top * (1.0 + 1e-6) + 1e-12, high


def _m4_bounds(data: Data) -> Bounds:
    lo_a, hi_a = _log_amp_bounds(data)
    e0_lo, e0_hi = _m4_e0_range(data)
    return (np.array([0.0, e0_lo, lo_a, 0.0, 0.0]),
            np.array([data.y.min(), e0_hi, hi_a, MAX_EXPONENT, MAX_EXPONENT]))


def _m4_starts(data: Data) -> np.ndarray:
    # For fixed (E, E0) the form is linear: log(y-E) = a - alpha*u + gamma*log(E0-y) (the paper's own step).
    e0_lo, e0_hi = _m4_e0_range(data)
    e0_grid = np.unique([e0_lo, e0_hi, e0_lo + 0.1 * (e0_hi - e0_lo), e0_lo + 0.01 * (e0_hi - e0_lo)])
    rows = []
    for e in _floor_grid(data):
        for e0 in e0_grid:
            design = np.column_stack([np.ones_like(data.y), -data.u[0], np.log(e0 - data.y)])
            coef = np.linalg.lstsq(design, np.log(data.y - e), rcond=None)[0]
            rows.append((e, e0, coef[0], coef[1], coef[2]))
            rows.append((e, e0, *_slope_fit(data.u[0], np.log(data.y - e)), 0.0))
    return np.array(rows)


# --- broken -------------------------------------------------------------------------------------------------


def _broken_log(theta: np.ndarray, u: Inputs) -> np.ndarray:
    e, a, alpha, ub, after, s = theta  # internally the rate after the break, so that it can be bounded >= 0
    z = a - alpha * u[0] - (after - alpha) * s * _softplus((u[0] - ub) / s)
    return np.log(e + np.exp(z))


def _broken_bounds(data: Data) -> Bounds:
    lo_a, hi_a = _log_amp_bounds(data)
    u = data.u[0]
    # A break outside the data cannot be seen in it, only invented: keep it inside.
    return (np.array([0.0, lo_a, 0.0, u.min(), 0.0, 0.05]),
            np.array([data.y.min(), hi_a, MAX_EXPONENT, u.max(), MAX_EXPONENT, 5.0]))


def _broken_starts(data: Data) -> np.ndarray:
    u = data.u[0]
    rows = []
    for e in _floor_grid(data):
        z = np.log(data.y - e)
        for q in (0.25, 0.5, 0.75):
            ub = float(np.quantile(u, q))
            left, right = u <= ub, u >= ub
            if left.sum() < 2 or right.sum() < 2 or np.ptp(u[left]) == 0 or np.ptp(u[right]) == 0:
                continue
            a, alpha = _slope_fit(u[left], z[left])
            after = _slope_fit(u[right], z[right])[1]
            for s in (0.2, 1.0):
                rows.append((e, a, alpha, ub, after, s))
    return np.array(rows).reshape(-1, 6)


# --- joint --------------------------------------------------------------------------------------------------


def _joint_log(theta: np.ndarray, u: Inputs) -> np.ndarray:
    e, a, alpha, b, beta = theta
    return np.log(e + np.exp(a - alpha * u[0]) + np.exp(b - beta * u[1]))


def _joint_gradient(theta: np.ndarray, u: Inputs) -> np.ndarray:
    e, a, alpha, b, beta = theta
    za, zb = np.exp(a - alpha * u[0]), np.exp(b - beta * u[1])
    total = e + za + zb
    return np.column_stack([1.0 / total, za / total, -u[0] * za / total, zb / total, -u[1] * zb / total])


def _joint_bounds(data: Data) -> Bounds:
    lo_a, hi_a = _log_amp_bounds(data)
    return (np.array([0.0, lo_a, 0.0, lo_a, 0.0]),
            np.array([data.y.min(), hi_a, MAX_EXPONENT, hi_a, MAX_EXPONENT]))


def _joint_starts(data: Data) -> np.ndarray:
    # For fixed (E, alpha, beta) the amplitudes solve a non-negative linear least squares.
    rows = []
    exps = (0.1, 0.3, 0.6, 1.0)
    for e in _floor_grid(data)[:4]:
        for alpha in exps:
            for beta in exps:
                design = np.column_stack([np.exp(-alpha * data.u[0]), np.exp(-beta * data.u[1])])
                amp = nnls(design, data.y - e)[0]
                amp = np.maximum(amp, 1e-6 * data.y.min())
                rows.append((e, np.log(amp[0]), alpha, np.log(amp[1]), beta))
    return np.array(rows)


# --- transfer -----------------------------------------------------------------------------------------------


def _transfer_log(theta: np.ndarray, u: Inputs) -> np.ndarray:
    lk, alpha, beta = theta
    return lk + alpha * u[0] + beta * u[1]


def _transfer_gradient(theta: np.ndarray, u: Inputs) -> np.ndarray:
    return np.column_stack([np.ones_like(u[0]), u[0], u[1]])


def _transfer_bounds(data: Data) -> Bounds:
    lo_a, hi_a = _log_amp_bounds(data)
    return np.array([lo_a, -MAX_EXPONENT, -MAX_EXPONENT]), np.array([hi_a, MAX_EXPONENT, MAX_EXPONENT])


def _transfer_starts(data: Data) -> np.ndarray:
    design = np.column_stack([np.ones_like(data.y), data.u[0], data.u[1]])
    return np.linalg.lstsq(design, data.ly, rcond=None)[0][None, :]


FORMS: dict[str, Form] = {
    form.name: form
    for form in (
        Form("power", "A·x^-α", ("A", "alpha"), 1, _power_log, _power_bounds, _power_starts, _power_gradient,
             scaled=((0, 1, 0, 1.0),), log_params=(0,)),
        Form("saturating", "E + A·x^-α", ("E", "A", "alpha"), 1, _saturating_log, _saturating_bounds,
             _saturating_starts, _saturating_gradient, scaled=((1, 2, 0, 1.0),), log_params=(1,)),
        Form("m4", "(y - E)/(E0 - y)^γ = A·x^-α", ("E", "E0", "A", "alpha", "gamma"), 1, _m4_log,
             _m4_bounds, _m4_starts, scaled=((2, 3, 0, 1.0),), log_params=(2,)),
        Form("broken", "E + A·x^-α·(1 + (x/x_b)^(1/s))^(-δ·s)", ("E", "A", "alpha", "x_b", "delta", "s"), 1,
             _broken_log, _broken_bounds, _broken_starts, scaled=((1, 2, 0, 1.0),), log_params=(1, 3),
             breaks=((3, 0),), rate_changes=((4, 2),)),
        Form("joint", "E + A/N^α + B/D^β", ("E", "A", "alpha", "B", "beta"), 2, _joint_log, _joint_bounds,
             _joint_starts, _joint_gradient, scaled=((1, 2, 0, 1.0), (3, 4, 1, 1.0)), log_params=(1, 3)),
        Form("transfer", "D_T = k·D_F^α·N^β", ("k", "alpha", "beta"), 2, _transfer_log, _transfer_bounds,
             _transfer_starts, _transfer_gradient, scaled=((0, 1, 0, -1.0), (0, 2, 1, -1.0)), log_params=(0,)),
    )
}
