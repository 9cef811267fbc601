"""Scaling laws: fitting with uncertainty, checked by extrapolation; transfer analysis; figures.

Needs only numpy, scipy and matplotlib (pandas only to read files in the CLI), never torch or Ray, so it runs on
exported results anywhere.

Fitting
-------
>>> import numpy as np
>>> from scaling.laws import fit
>>> n = np.array([1e3, 2e3, 4e3, 8e3, 16e3, 32e3])
>>> law = fit(n, 0.05 + 3.0 * n ** -0.4, form="saturating", n_boot=50)
>>> law.form, sorted(law.params)
('saturating', ['A', 'E', 'alpha'])
>>> low, high = law.ci["alpha"]                      # 95% profile-likelihood interval
>>> kinds = law.interval_kinds()                     # two-sided, or "lower bound only" where data bound one side
>>> band = law.predict_interval([1e5, 1e6])         # (low, high) of the law beyond the data

``fit(x, y, form="auto" | name)`` returns a :class:`Fit` with ``form``, ``params``, ``ci``, ``predict(x)`` and
``predict_interval(x, level=0.95)``. Forms (parameters named as written):

==============  ==========================================================================================
``power``       ``A·x^-alpha``
``saturating``  ``E + A·x^-alpha``
``m4``          ``(y - E)/(E0 - y)^gamma = A·x^-alpha``, falling from the chance plateau ``E0``
                (Alabdulmohsin et al. 2022); ``chance=`` fixes ``E0``
``broken``      ``E + A·x^-alpha·(1 + (x/x_b)^(1/s))^(-delta·s)``, one smooth break (Caballero et al. 2022)
``joint``       ``E + A/N^alpha + B/D^beta`` (Hoffmann et al. 2022): ``fit({"N": n, "D": d}, y, form="joint")``
``transfer``    ``D_T = k·D_F^alpha·N^beta`` (Hernandez et al. 2021), see :func:`fit_transfer`
==============  ==========================================================================================

The loss is Huber on log residuals, minimised by a bounded optimiser from a grid of starts. ``form="auto"``
skips the opening transient of dense learning curves, then keeps the saturating law unless the power law
predicts the held-out largest x much better (``candidates=`` widens the choice); ``fit.selection`` holds the
held-out errors. ``frontier_bins=`` fits only the best error per log-x bin. Bad input (NaN, x or y <= 0,
constant y, too few points) raises :class:`FitError` before any fitting.

Transfer
--------
>>> from scaling.laws import effective_data_transferred
>>> d = np.array([100, 200, 400, 800, 1600])
>>> t = effective_data_transferred((d, 2.0 * d ** -0.5), finetuned_size=[100], finetuned_error=[0.1], form="power")
>>> t.transferred.round().tolist()   # D_T = D_E - D_F: the scratch model needs 400 examples, not 100
[300.0]

:func:`transfer_table` does this for a whole results DataFrame (one scratch law per model size) and
:func:`fit_transfer` fits ``D_T = k·D_F^alpha·N^beta``.

Comparisons
-----------
:mod:`scaling.laws.compare`: a contrast of runs' mean ROC-AUCs (``[+1, -1]``: a gain) with a 95% paired bootstrap
interval, over seeds and test images from per-image scores (``contrast_images``), or over seeds alone from
per-seed AUCs (``contrast_seeds``); ``verdict`` reads it as supported / contradicted / inconclusive.

Figures (``scaling.laws.plots``, imported on first use)
-------------------------------------------------------
All take a results DataFrame and column names, return a matplotlib ``Figure``; :func:`save_figure` writes
PNG and SVG (PDF when asked) in one style with a colour-blind-safe palette. With the study's columns (``source`` in
scratch/natural/medical/both, ``model``, ``params``, ``pretrain_size``, ``budget``, ``seed``, ``test_auc``,
``test_error``):

>>> fig = plot_fits(df, x="pretrain_size", y="test_error", group_by=["source"], extrapolate_to=1e7)  # doctest: +SKIP
>>> fig = plot_transfer(df, x="pretrain_size", y="test_error", source="source", facet="params")     # doctest: +SKIP
>>> table = transfer_table(df, x="budget", y="test_error", model="params", keys=["pretrain_size"])   # doctest: +SKIP
>>> fig = plot_effective_data(table, x="budget", model="params")                                  # doctest: +SKIP
>>> save_figure(fig, "out/effective_data")                                                        # doctest: +SKIP

``fit_groups(df, x, y, group_by)`` gives the per-group fits that ``plot_fits(..., fits=...)`` reuses.

Command line
------------
``python -m scaling.laws fit RESULTS.parquet --x COL --y COL [--group-by COL ...] --out DIR`` writes
``DIR/fits.json`` and ``DIR/fits.{png,svg,pdf}``; ``--help`` lists the options.
"""

from __future__ import annotations

from typing import Any

from .checks import FitError
from .fitting import Fit, choose_form, extrapolation_scores, fit, transient_end
from .frontier import pareto_frontier
from .forms import FORMS
from .transfer import Transfer, effective_data_transferred, fit_transfer, scratch_size_for, transfer_table

_PLOTS = ("fit_groups", "group_label", "paper_style", "plot_effective_data", "plot_fits", "plot_transfer",
          "save_figure")

__all__ = ["FORMS", "Fit", "FitError", "Transfer", "choose_form", "effective_data_transferred",
           "extrapolation_scores", "fit", "fit_transfer", "pareto_frontier", "scratch_size_for", "transfer_table",
           "transient_end", *_PLOTS]


def __getattr__(name: str) -> Any:
    # matplotlib is imported only when a figure function is first asked for.
    if name in _PLOTS:
        from . import plots

        return getattr(plots, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
