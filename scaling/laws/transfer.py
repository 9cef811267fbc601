"""Effective data transferred (Hernandez et al. 2021, "Scaling Laws for Transfer").

A model pre-trained elsewhere and fine-tuned on ``D_F`` target examples (or steps) reaches some error. A model
of the same size trained from scratch on the target would need ``D_E`` examples to reach that error; the
pre-training was worth ``D_T = D_E - D_F`` extra target examples. ``D_E`` comes from inverting a law fitted to
the from-scratch curve, so it is an extrapolation wherever the fine-tuned error lies below the scratch data.
Hernandez et al. fit ``D_T = k·D_F^alpha·N^beta`` across fine-tuning sizes ``D_F`` and model sizes ``N``
(:func:`fit_transfer`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .checks import ArrayLike, FitError, as_vector, positive
from .fitting import Fit, fit

SEARCH_DECADES = 12.0  # how far beyond the scratch data the inverse looks before calling D_E 0 or infinite


def scratch_size_for(law: Fit, error: ArrayLike) -> np.ndarray:
    """The ``x`` at which a fitted one-variable law reaches ``error``: its inverse, by bisection in log x.

    Returns ``inf`` where ``error`` is at or below what the law reaches ``SEARCH_DECADES`` decades beyond its
    data (at or below its floor ``E``: no amount of scratch data gets there), and 0 where it is above what the
    law gives that far below its data.
    """
    if len(law.variables) != 1:
        raise FitError(f"scratch_size_for needs a one-variable law, got {law.form!r} over {law.variables}")
    target = as_vector(np.atleast_1d(error), "error")
    lo = np.full(target.shape, np.log(law.x[0].min()) - SEARCH_DECADES * np.log(10))
    hi = np.full(target.shape, np.log(law.x[0].max()) + SEARCH_DECADES * np.log(10))
    never = target <= law.predict(np.exp(hi))
    instant = target >= law.predict(np.exp(lo))
    for _ in range(80):  # the laws fall monotonically in x, so bisection on log x cannot miss
        mid = 0.5 * (lo + hi)
        above = law.predict(np.exp(mid)) > target
        lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
    size = np.exp(0.5 * (lo + hi))
    return np.where(never, np.inf, np.where(instant, 0.0, size))


@dataclass(frozen=True)
class Transfer:
    """Effective data transferred for a set of fine-tuned runs against one from-scratch law."""

    finetuned_size: np.ndarray  # D_F
    finetuned_error: np.ndarray
    effective_size: np.ndarray  # D_E, inf where the fine-tuned error is beyond the scratch law's reach
    transferred: np.ndarray  # D_T = D_E - D_F; negative where pre-training hurt
    scratch: Fit

    @property
    def fraction_effective(self) -> np.ndarray:
        """``D_T / D_E``: the share of the effective data that pre-training supplied (Hernandez et al.)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(np.isinf(self.effective_size), 1.0,
                            np.where(self.effective_size > 0, self.transferred / self.effective_size, -np.inf))


def effective_data_transferred(scratch: Fit | tuple[ArrayLike, ArrayLike], finetuned_size: ArrayLike,
                               finetuned_error: ArrayLike, **fit_kwargs: Any) -> Transfer:
    """Effective data transferred ``D_T = D_E - D_F`` for fine-tuned runs.

    Args:
        scratch: a fitted from-scratch law (error against target data size or budget), or the raw curve
            ``(sizes, errors)`` to fit with ``fit_kwargs`` (default ``form="auto"``).
        finetuned_size: ``D_F``, the target data size (or budget) of each fine-tuned run, same axis as scratch.
        finetuned_error: the error each fine-tuned run reached.

    Example:
        >>> import numpy as np
        >>> d = np.array([100, 200, 400, 800, 1600, 3200])
        >>> result = effective_data_transferred((d, 2.0 * d ** -0.5), [100, 400], [0.1, 0.05], form="power")
        >>> np.round(result.transferred).tolist()  # (2 / 0.1)^2 - 100, (2 / 0.05)^2 - 400
        [300.0, 1200.0]
    """
    law = scratch if isinstance(scratch, Fit) else fit(scratch[0], scratch[1], **fit_kwargs)
    if len(law.variables) != 1:
        raise FitError(f"the scratch law must have one variable, got {law.variables}")
    d_f = positive(as_vector(finetuned_size, "finetuned_size"), "finetuned_size")
    err = positive(as_vector(finetuned_error, "finetuned_error"), "finetuned_error")
    if len(d_f) != len(err):
        raise FitError(f"finetuned_size has {len(d_f)} values but finetuned_error has {len(err)}")
    d_e = scratch_size_for(law, err)
    return Transfer(d_f, err, d_e, d_e - d_f, law)


def fit_transfer(finetuned_size: ArrayLike, model_size: ArrayLike, transferred: ArrayLike,
                 **fit_kwargs: Any) -> Fit:
    """Fit ``D_T = k·D_F^alpha·N^beta`` (form ``transfer``) to effective data transferred.

    Only finite, positive ``D_T`` can enter a log-space fit; the others (pre-training that hurt, or fine-tuned
    errors beyond the scratch law's floor) are dropped with a warning that counts them.
    """
    d_f = as_vector(finetuned_size, "finetuned_size")
    n = as_vector(model_size, "model_size")
    d_t = np.asarray(transferred, dtype=float)
    if not (len(d_f) == len(n) == len(d_t)):
        raise FitError(f"lengths differ: finetuned_size {len(d_f)}, model_size {len(n)}, transferred {len(d_t)}")
    usable = np.isfinite(d_t) & (d_t > 0)
    if not usable.all():
        warnings.warn(f"fit_transfer: dropped {int((~usable).sum())} of {len(d_t)} points whose D_T is not finite "
                      f"and positive (negative transfer, or beyond the scratch law's floor)", stacklevel=2)
    return fit({"D_F": d_f[usable], "N": n[usable]}, d_t[usable], form="transfer", **fit_kwargs)


def transfer_table(results: Any, *, x: str = "budget", y: str = "test_error", source: str = "source",
                   scratch: str = "scratch", model: str = "params", keys: Sequence[str] = ("pretrain_size",),
                   **fit_kwargs: Any) -> Any:
    """Effective data transferred for every fine-tuned cell of a results DataFrame.

    For each model size (column ``model``) the from-scratch rows (``source == scratch``) give the scratch law of
    ``y`` against ``x``; the other rows are averaged over seeds per (model, source, *keys, x) cell and measured
    against it. Returns a DataFrame with those columns and ``y``, ``effective_x`` (D_E), ``transferred``
    (D_T) and ``scratch_form``.
    """
    missing = [c for c in (x, y, source, model, *keys) if c not in results.columns]
    if missing:
        raise FitError(f"results lack column(s) {missing}; have {list(results.columns)}")
    cells = [model, source, *keys, x]
    tuned = results[results[source] != scratch].groupby(cells, as_index=False, dropna=False)[y].mean()
    if tuned.empty:
        raise FitError(f"no fine-tuned rows ({source} != {scratch!r}) in the results")
    effective = np.full(len(tuned), np.nan)
    forms = np.empty(len(tuned), dtype=object)
    for size, idx in tuned.groupby(model, sort=True).indices.items():
        base = results[(results[source] == scratch) & (results[model] == size)]
        if base.empty:
            raise FitError(f"no from-scratch rows ({source} == {scratch!r}) for {model} = {size}")
        rows = tuned.iloc[idx]
        result = effective_data_transferred((base[x].to_numpy(), base[y].to_numpy()), rows[x].to_numpy(),
                                            rows[y].to_numpy(), **fit_kwargs)
        effective[idx] = result.effective_size
        forms[idx] = result.scratch.form
    return tuned.assign(effective_x=effective, transferred=effective - tuned[x].to_numpy(), scratch_form=forms)
