"""Effective data transferred (Hernandez et al. 2021) per fine-tuned cell, with bootstrap intervals.

The from-scratch error against target training images (scratch trials at several ``target_size``) is fitted
per (model, budget, shots) and inverted at each fine-tuned cell's error: a scratch model would need ``D_E``
target images to do as well, so pre-training was worth ``D_T = D_E - D_target`` of them, a multiplier
``D_E / D_target`` on the target data. Where a model has scratch reference trials (``reference``: on more
images of a synthetic target than its split holds, scaling/sweep/reference.py), its scratch curve is theirs
instead: every scratch trial at the reference trials' budget, within the split and beyond it, read by the model's
fine-tuned cells at every budget (Hernandez et al. read D_T off scratch models trained to convergence). Intervals resample the seeds (paired by seed index, as every trial trained
the same seeds) and refit the scratch law each time. Cells whose error lies outside the range the scratch
trials reached are marked: their D_E is read off the law beyond its data.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from scaling.analysis.fits import fit_curve, intervals
from scaling.analysis.grid import GROUP, has_target_axis, plain
from scaling.config import SCRATCH
from scaling.laws import FitError, fit, fit_transfer, scratch_size_for
from scaling.laws.intervals import percentile_interval

N_BOOT = 100
#: the 95% interval's quantiles, written out as fits.json has always had them: (1 - 0.95) / 2 is not 0.025 to
#: the last bit, nor would the interval be
QUANTILES = (0.025, 0.975)
NO_AXIS = "no target-size axis: effective data transferred needs scratch trials at >= 2 target sizes"


def _quantiles(values: np.ndarray) -> list[float | None]:
    """The 95% interval of bootstrap draws; None for an end that is unbounded (a D_E beyond the law's floor)."""
    finite = values[~np.isnan(values)]
    if not len(finite):
        return [None, None]
    q = percentile_interval(np.clip(finite, -1e300, 1e300), quantiles=QUANTILES)
    return [None if abs(v) >= 1e299 else float(v) for v in q]


def _cell_errors(points: pd.DataFrame, draws: np.ndarray, n_seeds: int) -> np.ndarray:
    """Mean test error of one trial's points over each draw's seed indices (a seed it lacks is skipped)."""
    by_seed = points.set_index("seed_index")["test_error"].reindex(range(n_seeds)).to_numpy(float)
    return np.nanmean(by_seed[draws], axis=1)


def _scratch_points(scratch: pd.DataFrame, seeds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    parts = [part.set_index("seed_index")["test_error"].reindex(seeds).dropna().to_frame().assign(x=size)
             for size, part in scratch.groupby("target_size")]
    both = pd.concat(parts)
    return both["x"].to_numpy(float), both["test_error"].to_numpy(float)


def _reference(table: pd.DataFrame) -> pd.Series:
    return table["reference"].astype(bool) if "reference" in table else pd.Series(False, index=table.index)


def scratch_curve(points: pd.DataFrame, model, budget, shots) -> pd.DataFrame:
    """The scratch trials a (model, budget, shots) group's cells are read against: the model's reference curve
    (every scratch trial at the largest budget that has reference trials) where it has one, else the scratch
    trials of the group itself."""
    scratch = points[(points["source"] == SCRATCH) & (points["model"] == model) & (points["shots"] == shots)]
    reference = scratch[_reference(scratch)]
    return scratch[scratch["budget"] == (reference["budget"].max() if len(reference) else budget)]


def _scratch_laws(scratch: pd.DataFrame, n_seeds: int, rng: np.random.Generator, seed: int):
    """The scratch law (or the FitError that stopped it), the bootstrap's seed draws and the law refitted on each
    (None where that refit failed)."""
    try:
        law = fit_curve(*_scratch_points(scratch, np.arange(n_seeds)), seed)
    except FitError as e:
        return e, None, []
    draws = rng.integers(0, n_seeds, size=(N_BOOT, n_seeds))
    boot_laws = []
    for d in draws:
        try:  # from the full grid of starts: a warm start from `law` bounded 2 of 34 intervals of the default
            boot_laws.append(fit(*_scratch_points(scratch, d), form=law.form, seed=seed, n_boot=2))
        except FitError:
            boot_laws.append(None)
    return law, draws, boot_laws


def transfer_cells(points: pd.DataFrame, seed: int) -> tuple[list[dict], str | None]:
    """D_T, D_E and the multiplier per fine-tuned cell with 95% intervals, or none and why."""
    if not has_target_axis(points):
        return [], NO_AXIS
    rng = np.random.default_rng(seed)
    n_seeds = int(points["seed_index"].max()) + 1
    cells, curves = [], {}
    for key, group in points.groupby(GROUP):
        scratch = scratch_curve(points, *key)
        tuned = group[group["source"] != SCRATCH]
        if scratch["target_size"].nunique() < 2 or tuned.empty:
            continue
        curve = tuple(sorted(scratch["trial"].unique()))  # a reference curve serves every budget: fitted once
        if curve not in curves:
            curves[curve] = _scratch_laws(scratch, n_seeds, rng, seed)
        law, draws, boot_laws = curves[curve]
        if isinstance(law, FitError):
            cells.append({**dict(zip(GROUP, map(plain, key))), "error": f"scratch law: {law}"})
            continue
        seen = scratch.groupby("target_size")["test_error"].mean()
        trials = list(tuned.groupby("trial"))
        boot_errors = np.array([_cell_errors(cell, draws, n_seeds) for _, cell in trials])  # (cells, N_BOOT)
        boot_sizes = np.full(boot_errors.shape, np.nan)
        for i, boot_law in enumerate(boot_laws):
            if boot_law is not None:
                boot_sizes[:, i] = scratch_size_for(boot_law, boot_errors[:, i])
        for (trial, cell), boot in zip(trials, boot_sizes):
            first = cell.iloc[0]
            d_target = float(first["target_size"])
            error = float(cell["test_error"].mean())
            d_e = float(scratch_size_for(law, error)[0])
            where = "within" if seen.min() <= error <= seen.max() else "below" if error < seen.min() else "above"
            cells.append({
                **dict(zip(GROUP, map(plain, key))), "trial": trial, "source": first["source"],
                "pretrain_size": plain(first["pretrain_size"]), "params": plain(first["params"]),
                "target_size": d_target, "test_error": error, "scratch_form": law.form,
                "effective_size": d_e if np.isfinite(d_e) else None,
                "transferred": d_e - d_target if np.isfinite(d_e) else None,
                "transferred_ci": _quantiles(boot - d_target),
                "multiplier": d_e / d_target if np.isfinite(d_e) else None,
                "multiplier_ci": _quantiles(boot / d_target),
                # below: better than any scratch run, D_E extrapolated; above: worse than the smallest scratch run
                "scratch_range": where, "scratch_budget": plain(scratch["budget"].iloc[0]),
                "scratch_reference": bool(_reference(scratch).any()),
                "scratch_error_range": [float(seen.min()), float(seen.max())],
            })
    return cells, None if cells else "no (model, budget, shots) has both scratch trials at >= 2 target sizes " \
                                     "and fine-tuned trials"


def transfer_law(cells: list[dict], seed: int) -> tuple[list[dict], str | None]:
    """``D_T = k·D_F^α·N^β`` per source where the cells span >= 2 target sizes and >= 2 model sizes."""
    usable = pd.DataFrame([c for c in cells if c.get("transferred") and c["transferred"] > 0])
    laws = []
    for source, part in (usable.groupby("source") if len(usable) else []):
        if part["target_size"].nunique() < 2 or part["params"].nunique() < 2 or len(part) < 4:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                law = fit_transfer(part["target_size"], part["params"], part["transferred"], seed=seed)
            laws.append({"axis": "transfer", "source": source, "form": law.form, "formula": law.formula,
                         "params": law.params, **intervals(law),
                         "n_points": int(len(part))})
        except FitError as e:
            laws.append({"axis": "transfer", "source": source, "error": str(e)})
    return laws, None if laws else "D_T = k·D_F^α·N^β needs cells at >= 2 target sizes and >= 2 model sizes " \
                                   "with D_T > 0"
