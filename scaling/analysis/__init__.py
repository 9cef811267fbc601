"""The analysis stage of a study: tuned results per cell, laws along every axis the grid has, effective data
transferred, findings, figures, and the summary a researcher reads first.

Errors are 1 - test ROC-AUC (balanced accuracy at a fixed threshold is biased on imbalanced targets). Writes
``fits.json`` (laws, D_T per cell, the axes the grid lacks and why), ``findings.json`` and ``figures/``.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from scaling.analysis.figures import draw_figures
from scaling.analysis.findings import findings, findings_table
from scaling.analysis.fits import all_laws
from scaling.analysis.grid import GROUP, per_seed, plain, with_target_size
from scaling.analysis.results import best_per_cell
from scaling.analysis.transfer import transfer_cells, transfer_law


def summary_table(best: pd.DataFrame) -> pd.DataFrame:
    """The tuned test AUC per model, source, pre-training size and target size: the mean over the trial's seeds,
    and their spread (sd; absent with one seed)."""
    cols = [*with_target_size([*GROUP, "source", "pretrain_size"], best), "test_roc_auc",
            *(["test_roc_auc_sd"] if "test_roc_auc_sd" in best else [])]
    return best[cols].rename(columns={"test_roc_auc": "test_auc", "test_roc_auc_sd": "sd"})


def analyse(table: pd.DataFrame, study_dir: Path, seed: int, log) -> dict:
    """Write fits.json, findings.json and figures/; return what the summary needs."""
    best = best_per_cell(table)
    if best.empty:
        log("analysis: no finished trials to analyse")
        return {"fits": [], "figures": [], "findings": None, "absent": {}}
    points = per_seed(best)
    fits, absent = all_laws(points, seed)
    cells, reason = transfer_cells(per_seed(best_per_cell(table, reference=True)), seed)
    if reason:
        absent["target_size"] = reason
    transfer_laws, reason = transfer_law(cells, seed)
    if reason and cells:
        absent["transfer_law"] = reason
    for axis, why in absent.items():
        log(f"analysis: no {axis} laws: {why}")
    result = findings(best, study_dir, seed, table)
    stored = [{k: v for k, v in f.items() if k != "law"} for f in fits]  # the fitted object is for the figures
    (study_dir / "fits.json").write_text(json.dumps(
        {"laws": stored + transfer_laws, "effective_data": cells, "absent": absent}, indent=1, default=plain))
    (study_dir / "findings.json").write_text(json.dumps(result, indent=1, default=plain))
    figures = draw_figures(points, fits, cells, study_dir / "figures", seed)
    fits = [{k: v for k, v in f.items() if k != "curve"} for f in stored]  # the curves are for the dashboard
    return {"fits": fits, "effective_data": cells, "absent": absent, "findings": result,
            "figures": [str(p) for p in figures], "table": summary_table(best)}


def describe_fits(fits: list[dict]) -> list[str]:
    lines = []
    for f in fits:
        group = ", ".join(f"{k} {f[k] if k != 'shots' else f[k] or 'all'}"
                          for k in ("source", "model", "pretrain_size", "target_size", "budget", "shots")
                          if k in f and k != f["axis"])
        head = f"error vs {f['axis']:<13} {group:<50}"
        if "params" not in f:
            lines.append(f"{head} no fit: {f['error']}")
            continue
        exps = [(k, f["params"][k], f["ci"][k]) for k in ("alpha", "beta") if k in f["params"]]
        text = "  ".join(f"{k} {v:.3f} [{lo:.3f}, {hi:.3f}]" for k, v, (lo, hi) in exps)
        held = f.get("heldout", {})
        score = f"  held-out log RMSE {held['rmse_log']:.3f}" if "rmse_log" in held else ""
        lines.append(f"{head} {f['form']:<10} {text}{score}")
    return lines


def describe_transfer(cells: list[dict]) -> list[str]:
    """The D_T table: one line per fine-tuned cell."""
    lines = []
    for c in cells:
        if "error" in c:
            lines.append(f"{c['model']} budget {c['budget']}: {c['error']}")
            continue
        lo, hi = c["transferred_ci"]
        d_t = "unbounded" if c["transferred"] is None else f"{c['transferred']:.0f}"
        interval = f"[{'-' if lo is None else f'{lo:.0f}'}, {'inf' if hi is None else f'{hi:.0f}'}]"
        mult = "" if c["multiplier"] is None else f" x{c['multiplier']:.2f}"
        mark = "" if c["scratch_range"] == "within" else f" ({c['scratch_range']} the scratch errors: extrapolated)"
        lines.append(f"{c['source']:<8} {c['model']} {c['pretrain_size']:>6} pre-training images, "
                     f"{c['target_size']:.0f} target: D_T {d_t} {interval}{mult}{mark}")
    return lines


__all__ = ["analyse", "describe_fits", "describe_transfer", "findings_table", "per_seed", "summary_table"]
