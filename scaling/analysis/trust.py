"""Figures and fits of how trustworthy the tuned target models are: reliability diagrams per source and
pre-training size, and calibration error and localisation against pre-training data size, fitted with the same
laws as the target error (scaling.laws). Reads the results table (the job's test_* calibration columns and the
saliency stage's columns)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from scaling.analysis.fits import intervals
from scaling.analysis.grid import GROUP, on_full_target, plain, with_target_size
from scaling.analysis.results import best_per_cell
from scaling.config import SCRATCH

#: (column, what it is, its "error" -- the quantity fitted as falling with pre-training data)
TRUST_LAWS = (("test_ece", "test ECE (15 bins, positive class)", lambda s: s),
              ("test_ece_calibrated", "test ECE after temperature scaling", lambda s: s),
              ("saliency_pointing", "pointing-game miss rate (1 - hit rate)", lambda s: 1 - s))
N_BOOT = 50
FITS_FILE = "trust_fits.json"


def reliability_figure(part: pd.DataFrame):
    """One panel per source: observed positive rate against mean predicted probability per bin, a line per
    pre-training size, before (solid) and after (dashed) temperature scaling."""
    from matplotlib.figure import Figure

    from scaling.laws import plots

    sources = sorted(part["source"].unique())
    sizes = sorted(part["pretrain_size"].unique())
    with plots.paper_style():
        fig = Figure(figsize=(min(7.0, 0.5 + 2.3 * len(sources)), 2.6 + 0.14 * len(sizes)), layout="constrained")
        axes = fig.subplots(1, len(sources), sharey=True, squeeze=False)
        for ax, source in zip(axes.flat, sources):
            ax.plot([0, 1], [0, 1], color="0.6", linewidth=0.8)
            for _, row in part[part["source"] == source].sort_values("pretrain_size").iterrows():
                colour = plots.PALETTE[sizes.index(row["pretrain_size"]) % len(plots.PALETTE)]
                for stage, style in (("raw", "-"), ("calibrated", "--")):
                    bins = json.loads(row["test_reliability"])[stage]
                    count = np.asarray(bins["count"], dtype=float)
                    seen = count > 0
                    ax.plot(np.asarray(bins["confidence"])[seen] / count[seen],
                            np.asarray(bins["outcome"])[seen] / count[seen], style, color=colour, marker=".",
                            label=f"{int(row['pretrain_size'])} images" if stage == "raw" else None)
            ax.set(title=source, xlim=(0, 1), ylim=(0, 1), xlabel="predicted P(positive)")
        axes.flat[0].set_ylabel("observed positive rate")
        fig.legend(*axes.flat[0].get_legend_handles_labels(), loc="outside lower center",
                   ncols=min(len(sizes), 4), title="pre-training size (dashed: after temperature scaling)")
    return fig


def trust_figures(table: pd.DataFrame, study_dir: str | Path, seed: int = 0, n_boot: int = N_BOOT) -> list[Path]:
    """Write figures/reliability_*, figures/trust_* and FITS_FILE for the tuned trial per cell; returns the
    figures' paths (none, and no file, when no trial has the columns).

    Fits: per (model, budget, shots), source and TRUST_LAWS column, its error against pre-training images (a
    saturating or power law chosen as for the error laws) with 95% intervals from `n_boot` bootstrap replicates
    (fewer than the error laws' 200: these are secondary and there are three per group)."""
    from scaling.laws import plots

    study_dir = Path(study_dir)
    best = on_full_target(best_per_cell(table)) if len(table) else table
    if best.empty or "test_reliability" not in best:
        return []
    out, paths, entries = study_dir / "figures", [], []
    for key, part in best.groupby(GROUP):
        model, budget, shots = key
        stem = f"{model}_b{budget}_shots{shots or 'all'}"
        with_bins = part.dropna(subset=["test_reliability"])
        if len(with_bins):
            paths += plots.save_figure(reliability_figure(with_bins), out / f"reliability_{stem}")
        pretrained = part[part["source"] != SCRATCH]
        for column, what, error in TRUST_LAWS:
            if column not in pretrained or pretrained["pretrain_size"].nunique() < 2:
                continue
            points = pretrained.assign(**{what: error(pretrained[column])}).dropna(subset=[what])
            fits = plots.fit_groups(points, "pretrain_size", what, ["source"], form="auto", seed=seed, n_boot=n_boot)
            fig = plots.plot_fits(points, "pretrain_size", what, ["source"], fits=fits,
                                  xlabel="pre-training images", ylabel=what)
            paths += plots.save_figure(fig, out / f"trust_{column}_{stem}")
            entries += [_entry(dict(zip(GROUP, key)), source, column, what, points, law)
                        for (source,), law in fits.items()]
    (study_dir / FITS_FILE).write_text(json.dumps(entries, indent=1, default=plain))
    return paths


def trust_table(table: pd.DataFrame) -> pd.DataFrame:
    """Per tuned trial: calibration before and after temperature scaling, the seeds' mean AUC against their
    ensemble's, and the pointing game against its baseline (the columns a study has)."""
    best = best_per_cell(table) if len(table) else table
    columns = {"test_ece": "ece", "test_ece_calibrated": "ece_T", "test_temperature": "T",
               "test_roc_auc": "auc_mean", "test_ensemble_roc_auc": "auc_ensemble", "saliency_pointing": "pointing",
               "saliency_baseline": "baseline"}
    present = [c for c in columns if c in best]
    return best[[*with_target_size([*GROUP, "source", "pretrain_size"], best), *present]].rename(columns=columns)


def _entry(cell: dict, source: str, column: str, what: str, points: pd.DataFrame, law) -> dict:
    entry = {**{k: plain(v) for k, v in cell.items()}, "source": source, "column": column, "quantity": what,
             "sizes": sorted(map(int, points.loc[points["source"] == source, "pretrain_size"]))}
    if isinstance(law, Exception):
        return {**entry, "error": str(law)}
    return {**entry, "form": law.form, "params": law.params, **intervals(law)}
