"""Laws of test error along every axis a study's grid has, each also scored on its held-out largest x.

Axes: pre-training images per (source, model, budget, shots); model parameters per (source, pre-training
size, budget, shots) and the joint law ``E + A/N^α + B/D^β`` per (source, budget, shots); fine-tuning budget
and shots per the other axes. A law along an axis needs ``MIN_VALUES`` distinct values of it (two for
pre-training images, the axis of the seed question); an axis with fewer is reported as absent.

The laws are independent and each is seeded, so they are fitted in parallel on every CPU this process may use
(their bootstrap bands and held-out refits are most of the analysis's time) without changing a digit.
"""
from __future__ import annotations

import os

import numpy as np
import pandas as pd

from scaling.analysis.grid import GROUP, plain, with_target_size
from scaling.config import SCRATCH
from scaling.data.executors import process_pool
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


def _joint_entry(law, x: dict, y: np.ndarray, seed: int) -> dict:
    return dict(form=law.form, formula=law.formula, params=law.params, rmse_log=law.rmse, **intervals(law),
                n_points=int(len(y)), heldout=heldout(x, y, "joint", seed))


def _fitted(_, task: tuple) -> dict:
    """What one curve's entry gains: its law fitted, banded and scored, or why it has none (a pool worker's
    item: `task` is (form, x, y, seed), "auto" for the chosen form along one axis or "joint")."""
    form, x, y, seed = task
    try:
        if form == "joint":
            return _joint_entry(fit(x, y, form="joint", seed=seed), x, y, seed)
        return _law_entry(fit_curve(x, y, seed), x, y, seed)
    except FitError as e:
        return {"error": str(e)}


def axis_laws(points: pd.DataFrame, axis: str, seed: int) -> tuple[list[dict], str | None]:
    """The curves along one axis, each with the `task` that fits its law where it has enough points, or none and
    why the grid does not have that axis."""
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
        entry["task"] = ("auto", part[column].to_numpy(float), part["test_error"].to_numpy(float), seed)
        fits.append(entry)
    return fits, None


def joint_laws(points: pd.DataFrame, seed: int) -> list[dict]:
    """``E + A/N^α + B/D^β`` per (source, budget, shots) where the grid has >= 3 model and pre-training sizes (each
    entry with the `task` that fits it)."""
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
        entry["task"] = ("joint", x, part["test_error"].to_numpy(float), seed)
        fits.append(entry)
    return fits


def all_laws(points: pd.DataFrame, seed: int) -> tuple[list[dict], dict[str, str]]:
    """Every law the grid allows, and for each axis it lacks, why."""
    fits, absent = [], {}
    for axis in AXES:
        found, reason = axis_laws(points, axis, seed)
        fits += found
        if reason:
            absent[axis] = reason
    fits += joint_laws(points, seed)
    pending = [f for f in fits if "task" in f]
    # spawned, not forked: the study's driver holds Ray's and MLflow's threads
    fit_all = process_pool(len(os.sched_getaffinity(0)), start_method="spawn")
    for position, gained in fit_all(_fitted, None, [f.pop("task") for f in pending]):
        pending[position].update(gained)
    for axis in [*AXES, "joint"]:
        if axis not in absent and not any("params" in f for f in fits if f["axis"] == axis):
            absent[axis] = (f"no curve has {MIN_VALUES} distinct {AXES[axis][0]} values" if axis in AXES else
                            f"the joint law needs >= {MIN_VALUES} model sizes and pre-training sizes together")
    return fits, absent
