"""Laws of test error along every axis a study's grid has, each also scored on its held-out largest x.

Axes: pre-training images per (source, model, budget, shots); model parameters per (source, pre-training
size, budget, shots) and the joint law ``E + A/N^α + B/D^β`` per (source, budget, shots); fine-tuning budget
and shots per the other axes. A law along an axis needs ``MIN_VALUES`` distinct values of it (two for
pre-training images, the axis of the seed question); an axis with fewer is reported as absent.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from scaling.analysis.grid import GROUP, plain, with_target_size
from scaling.config import SCRATCH
from scaling.laws import FitError, fit

MIN_VALUES = 3  # the fewest distinct x that any law (and any held-out refit) is fitted on
#: axis -> (the column along which it runs, the columns that define one curve)
AXES = {
    "pretrain_size": ("pretrain_size", ["source", "model", "budget", "shots"]),
    "params": ("params", ["source", "pretrain_size", "budget", "shots"]),
    "budget": ("budget", ["source", "model", "pretrain_size", "shots"]),
    "shots": ("shots", ["source", "model", "pretrain_size", "budget"]),
}
CURVE_POINTS = 40
EXTRAPOLATE = 10.0  # curves are drawn this factor beyond the largest x (dashed)


def fit_curve(x: np.ndarray, y: np.ndarray, seed: int):
    """The form chosen by held-out extrapolation where there are enough points, else the plain power law."""
    try:
        return fit(x, y, form="auto", seed=seed)
    except FitError:
        return fit(x, y, form="power", seed=seed)


def too_few(values: np.ndarray, column: str) -> str | None:
    """Why no law may be fitted along these x values, or None when there are enough."""
    distinct = np.unique(values)
    if len(distinct) >= MIN_VALUES:
        return None
    shown = ", ".join(f"{plain(v):g}" for v in distinct)
    return f"{column} has {len(distinct)} distinct value(s) ({shown}); a law needs {MIN_VALUES}"


def heldout(x, y, form: str, seed: int) -> dict:
    """The law refitted without the points at its largest x, scored there (RMSE of log y)."""
    key = "D" if isinstance(x, dict) else None
    along = x[key] if key else x
    top = along.max()
    keep = along < top
    refused = too_few(along[keep], "below the held-out x, the axis")
    if refused:
        return {"x": float(top), "error": f"no held-out score: {refused}"}
    try:
        part = {k: v[keep] for k, v in x.items()} if key else x[keep]
        law = fit(part, y[keep], form=form, seed=seed, n_boot=2)
        held = {k: v[~keep] for k, v in x.items()} if key else x[~keep]
        r = np.log(y[~keep]) - np.log(law.predict(held))
        return {"x": float(top), "rmse_log": float(np.sqrt(np.mean(r ** 2)))}
    except FitError as e:
        return {"x": float(top), "error": str(e)}


def intervals(law) -> dict:
    """The law's 95% profile intervals for fits.json: ``ci`` (an open end, e.g. an amplitude the data do not bound
    above, is None) and ``ci_kind`` (two-sided, lower bound only, upper bound only, not identified)."""
    return {"ci": {k: law.to_dict()["ci95"][k] for k in law.ci}, "ci_kind": law.interval_kinds()}


def _law_entry(law, x: np.ndarray, y: np.ndarray, seed: int) -> dict:
    grid = np.geomspace(x.min(), EXTRAPOLATE * x.max(), CURVE_POINTS)
    low, high = law.predict_interval(grid)
    return {"law": law, "form": law.form, "formula": law.formula, "params": law.params,
            **intervals(law), "rmse_log": law.rmse, "n_points": int(len(y)),
            "heldout": heldout(x, y, law.form, seed),
            "curve": {"x": grid.tolist(), "y": law.predict(grid).tolist(), "low": low.tolist(),
                      "high": high.tolist(), "data_max": float(x.max())}}


def axis_laws(points: pd.DataFrame, axis: str, seed: int) -> tuple[list[dict], str | None]:
    """The laws along one axis, or none and why the grid does not have that axis."""
    column, keys = AXES[axis]
    keys = with_target_size(keys, points)  # a curve holds every other axis fixed
    rows = points[points["source"] != SCRATCH] if axis == "pretrain_size" else points
    if axis == "shots":
        rows = rows[rows["shots"] > 0]  # 0 means every target image, not a point on the shots axis
    if rows.empty or rows[column].nunique() < MIN_VALUES:
        besides = " besides 0 (every target image)" if axis == "shots" else ""
        return [], f"{column} has {rows[column].nunique() if len(rows) else 0} value(s){besides}; a law needs " \
                   f"{MIN_VALUES}"
    level = with_target_size(GROUP, points)
    scratch = points[points["source"] == SCRATCH].groupby(level)["test_error"].mean()
    fits = []
    for key, part in rows.groupby(keys):
        entry = {"axis": axis, **{k: plain(v) for k, v in zip(keys, key)},
                 "x": sorted(map(plain, part[column].unique()))}
        refused = too_few(part[column].to_numpy(float), column)
        if refused:  # a single value is no curve at all; two look like one, so say why there is no law
            if part[column].nunique() > 1:
                fits.append({**entry, "error": f"no law: {refused}"})
            continue
        if axis == "pretrain_size":
            entry["scratch_error"] = plain(scratch.get(tuple(entry[k] for k in level)))
        x, y = part[column].to_numpy(float), part["test_error"].to_numpy(float)
        try:
            entry.update(_law_entry(fit_curve(x, y, seed), x, y, seed))
        except FitError as e:
            entry["error"] = str(e)
        fits.append(entry)
    return fits, None if any("params" in f for f in fits) else f"no curve has {MIN_VALUES} distinct {column} values"


def joint_laws(points: pd.DataFrame, seed: int) -> tuple[list[dict], str | None]:
    """``E + A/N^α + B/D^β`` per (source, budget, shots) where the grid has >= 3 model and pre-training sizes."""
    rows = points[points["source"] != SCRATCH]
    keys = with_target_size(["source", "budget", "shots"], points)
    fits = []
    for key, part in rows.groupby(keys):
        entry = {"axis": "joint", **{k: plain(v) for k, v in zip(keys, key)}}
        refused = [why for c in ("params", "pretrain_size") if (why := too_few(part[c].to_numpy(float), c))]
        if refused:
            if part["params"].nunique() > 1 and part["pretrain_size"].nunique() > 1:
                fits.append({**entry, "error": "no law: " + "; ".join(refused)})
            continue
        x = {"N": part["params"].to_numpy(float), "D": part["pretrain_size"].to_numpy(float)}
        y = part["test_error"].to_numpy(float)
        try:
            law = fit(x, y, form="joint", seed=seed)
            entry.update(form=law.form, formula=law.formula, params=law.params, rmse_log=law.rmse,
                         **intervals(law), n_points=int(len(y)),
                         heldout=heldout(x, y, "joint", seed))
        except FitError as e:
            entry["error"] = str(e)
        fits.append(entry)
    reason = None if any("params" in f for f in fits) else f"the joint law needs >= {MIN_VALUES} model sizes and pre-training sizes together"
    return fits, reason


def all_laws(points: pd.DataFrame, seed: int) -> tuple[list[dict], dict[str, str]]:
    """Every law the grid allows, and for each axis it lacks, why."""
    fits, absent = [], {}
    for axis in AXES:
        found, reason = axis_laws(points, axis, seed)
        fits += found
        if reason:
            absent[axis] = reason
    found, reason = joint_laws(points, seed)
    fits += found
    if reason:
        absent["joint"] = reason
    return fits, absent
