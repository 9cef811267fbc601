"""The analysis stage of a study: tuned results per cell, power laws of target error against pre-training
data size per source, figures, and the summary a researcher reads first.

Errors are 1 - test ROC-AUC (balanced accuracy at a fixed threshold is biased on imbalanced targets).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from scaling.laws import FitError, fit
from scaling.results import best_per_cell

GROUP = ["model", "budget", "shots"]


def fit_transfer_laws(best: pd.DataFrame, seed: int) -> list[dict]:
    """Per (model, budget, shots) and pre-training source: error = f(pre-training images), the form chosen by
    held-out extrapolation where there are enough points (else the plain power law), with 95% intervals."""
    fits = []
    for key, group in best.groupby(GROUP):
        scratch = group.loc[group["source"] == "scratch", "test_error"]
        for source, points in group[group["source"] != "scratch"].groupby("source"):
            entry = {**dict(zip(GROUP, map(_plain, key))), "source": source,
                     "scratch_error": float(scratch.mean()) if len(scratch) else None,
                     "sizes": sorted(map(int, points["pretrain_size"].unique()))}
            try:
                law = _fit(points["pretrain_size"].to_numpy(float), points["test_error"].to_numpy(float), seed)
                entry.update(form=law.form, formula=law.formula, params=law.params,
                             ci={k: list(v) for k, v in law.ci.items()}, rmse_log=law.rmse)
            except FitError as e:
                entry["error"] = str(e)
            fits.append(entry)
    return fits


def _fit(x, y, seed: int):
    try:
        return fit(x, y, form="auto", seed=seed)
    except FitError:
        return fit(x, y, form="power", seed=seed)


def per_seed(best: pd.DataFrame) -> pd.DataFrame:
    """One row per seed of every tuned trial, with that seed's test error: the points the laws are fitted to
    and the figures show (a trial trains its seeds side by side and reports their mean)."""
    rows = best.assign(test_roc_auc=best["test_roc_auc_seeds"].map(json.loads)).explode("test_roc_auc")
    rows["test_roc_auc"] = rows["test_roc_auc"].astype(float)
    rows["test_error"] = 1.0 - rows["test_roc_auc"]
    return rows.reset_index(drop=True)


def summary_table(best: pd.DataFrame) -> pd.DataFrame:
    """The tuned test AUC per model, source and pre-training size: the mean over the trial's seeds, and their
    spread (sd; absent with one seed)."""
    cols = [*GROUP, "source", "pretrain_size", "test_roc_auc"] + (["test_roc_auc_sd"] if "test_roc_auc_sd" in best
                                                                   else [])
    return best[cols].rename(columns={"test_roc_auc": "test_auc", "test_roc_auc_sd": "sd"})


def analyse(table: pd.DataFrame, study_dir: Path, seed: int, log) -> dict:
    """Write fits.json and figures/; return what the summary needs."""
    best = best_per_cell(table)
    if best.empty:
        log("analysis: no finished trials to analyse")
        return {"fits": [], "figures": []}
    points = per_seed(best)
    fits = fit_transfer_laws(points, seed)
    (study_dir / "fits.json").write_text(json.dumps(fits, indent=1, default=_plain))
    figures = draw_figures(points, study_dir / "figures", seed)
    return {"fits": fits, "figures": [str(p) for p in figures], "table": summary_table(best)}


def draw_figures(best: pd.DataFrame, out: Path, seed: int) -> list[Path]:
    """Per budget and shots: the transfer curves (one panel per model), and the fitted laws with their bands
    extrapolated a decade beyond the largest pre-training set."""
    from scaling.laws import plots

    labels = {"xlabel": "pre-training images", "ylabel": "test error (1 - ROC-AUC)"}
    paths: list[Path] = []
    for (budget, shots), part in best.groupby(["budget", "shots"]):
        stem = f"b{budget}_shots{shots or 'all'}"
        fig = plots.plot_transfer(part, facet="model", seed=seed, **labels)
        paths += plots.save_figure(fig, out / f"transfer_{stem}")
        pretrained = part[part["source"] != "scratch"]
        if pretrained["pretrain_size"].nunique() > 1:
            fig = plots.plot_fits(pretrained, "pretrain_size", "test_error", ["source", "model"],
                                  extrapolate_to=10 * pretrained["pretrain_size"].max(), seed=seed, **labels)
            paths += plots.save_figure(fig, out / f"laws_{stem}")
    return paths


def describe_fits(fits: list[dict]) -> list[str]:
    lines = []
    for f in fits:
        head = f"{f['model']} budget {f['budget']} shots {f['shots'] or 'all'} {f['source']:<8}"
        if "params" not in f:
            lines.append(f"{head} no fit: {f['error']}")
            continue
        alpha, (low, high) = f["params"].get("alpha", math.nan), f["ci"].get("alpha", (math.nan, math.nan))
        lines.append(f"{head} {f['form']:<10} alpha {alpha:.3f} [{low:.3f}, {high:.3f}]  {f['formula']}")
    return lines


def _plain(value):
    return value.item() if hasattr(value, "item") else value
