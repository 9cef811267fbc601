"""Input checks of the laws: every bad input (NaN, x or y <= 0, constant y, mismatched lengths, too few points)
raises :class:`FitError` naming what is wrong, before any fitting starts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Union

import numpy as np

from .forms import Form

ArrayLike = Union[Sequence[float], np.ndarray]
XLike = Union[ArrayLike, Mapping[str, ArrayLike]]


class FitError(ValueError):
    """Input a law cannot be fitted to, or a fit that did not produce finite parameters."""


def as_vector(values: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise FitError(f"{name} must be a 1-D array of numbers, got shape {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise FitError(f"{name} has {bad.size} non-finite value(s) (NaN or inf), first at index {bad[0]}: "
                       f"{arr[bad[0]]}; drop or fix those rows before fitting")
    return arr


def positive(arr: np.ndarray, name: str) -> np.ndarray:
    bad = np.flatnonzero(arr <= 0)
    if bad.size:
        raise FitError(f"{name} must be > 0 (laws are fitted in log space), but {bad.size} value(s) are not, "
                       f"first at index {bad[0]}: {arr[bad[0]]}")
    return arr


def named_inputs(x: XLike) -> tuple[tuple[str, ...], tuple[np.ndarray, ...]]:
    """Named positive 1-D inputs: a mapping of several, or one array called 'x'."""
    if isinstance(x, Mapping):
        if not x:
            raise FitError("x is an empty mapping; give one named 1-D array per variable")
        names = tuple(str(k) for k in x)
        arrays = tuple(positive(as_vector(v, f"x[{k!r}]"), f"x[{k!r}]") for k, v in x.items())
    else:
        names, arrays = ("x",), (positive(as_vector(x, "x"), "x"),)
    if len({len(a) for a in arrays}) > 1:
        raise FitError(f"inputs differ in length: {dict(zip(names, (len(a) for a in arrays)))}")
    return names, arrays


def check_enough_points(form: Form, arrays: tuple[np.ndarray, ...], y: np.ndarray, n_fixed: int = 0) -> None:
    p = form.n_params - n_fixed
    distinct = len({tuple(col) for col in np.column_stack(arrays)})
    if len(y) < p + 1 or distinct < p:
        raise FitError(f"form {form.name!r} has {p} free parameters and needs at least {p + 1} points at "
                       f"{p} or more distinct x; got {len(y)} points at {distinct} distinct x")


def target_values(y: ArrayLike, n: int) -> np.ndarray:
    ys = positive(as_vector(y, "y"), "y")
    if len(ys) != n:
        raise FitError(f"y has {len(ys)} values but x has {n}")
    if np.ptp(ys) == 0:
        raise FitError(f"y is constant ({ys[0]}): there is no trend to fit a law to")
    return ys


def check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise FitError(f"level must be in (0, 1), got {level}")
