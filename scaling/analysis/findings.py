"""The findings of a study: each statement of the seed question, its paired evidence and a verdict.

Statements: a source beats another (medical vs scratch, natural vs scratch, both vs medical, medical vs
natural), pooled over the grid's cells and per cell; a source's gain over scratch grows with model size, with
pre-training data and with fine-tuning budget (the gain at the largest value minus the gain at the smallest).
Each is a contrast of tuned trials' mean test AUCs with a 95% paired bootstrap interval (:mod:`scaling.laws.
compare`): over seeds and test images where the study stored per-image test scores
(``predictions/<trial>.npz``), else over seeds only. The verdict is *supported* when the interval lies above 0,
*contradicted* below it, *inconclusive* when it holds 0 or the grid cannot measure the statement (then with why).

The pooled statements are the primary ones, each judged at 95%. The per-cell statements are many (48 in the
default, over 100 with budget and shots axes), so they are judged together under Benjamini-Hochberg at q = 0.05
(:mod:`scaling.laws.multiplicity`): a per-cell table is read as a map of where an effect shows, and BH keeps the
share of false entries on that map at or below 5% while, unlike Holm's family-wise control, it does not need
p-values below 0.05/m (0.0005 for 100 cells, finer than what the seed counts of a study resolve) to find any
cell at all. Each per-cell entry keeps its raw figures (``ci_unadjusted``, ``verdict_unadjusted``, ``p_value``)
beside the adjusted ones (``p_adjusted``, ``verdict``, and ``ci`` at the false-coverage-rate ``level``).

Where a cell has several hyper-parameter samples, the tuned trial is the best of them by validation AUC, and
another draw of samples would have picked another: that spread (the sd of the chosen trial's test AUC over
bootstrap resamples of the cell's samples) is added to each contrast's standard error and interval. With one
sample per cell it cannot be measured, and the findings say that their intervals are conditional on the drawn
hyper-parameters.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from scaling.analysis.grid import cell_columns, plain
from scaling.config import BOTH, MEDICAL, NATURAL, SCRATCH
from scaling.laws.compare import Contrast, ImageBootstrap, contrast_seeds, verdict
from scaling.laws.multiplicity import benjamini_hochberg, fcr_level

PAIRS = ((MEDICAL, SCRATCH), (NATURAL, SCRATCH), (BOTH, MEDICAL), (MEDICAL, NATURAL))
#: axis column -> how a statement names it
GROWTH = {"params": "model size", "pretrain_size": "pre-training data", "budget": "fine-tuning budget"}
N_BOOT = 1000
FDR = 0.05  # Benjamini-Hochberg's q over the per-cell statements
TUNING_BOOT = 200  # resamples of a cell's hyper-parameter samples
CONDITIONAL = "conditional on the drawn hyper-parameters (one sample per cell: the draw's spread is not measured)"


def tuning_spread(table: pd.DataFrame | None, best: pd.DataFrame, seed: int) -> dict[str, float]:
    """Per tuned trial with >= 2 finished samples in its cell: the sd of the tuned test AUC over bootstrap
    resamples of the cell's samples (each resample's best by validation AUC), i.e. the luck of the draw."""
    if table is None or "sample" not in table:
        return {}
    cols = cell_columns(best)
    done = table[(table["status"] == "finished") & table["val_roc_auc"].notna() & table["test_roc_auc"].notna()]
    rng = np.random.default_rng(seed)
    trial_of = {tuple(map(plain, row[cols])): row["trial"] for _, row in best.iterrows()}
    out = {}
    for key, part in done.groupby(cols):
        trial = trial_of.get(tuple(map(plain, key if isinstance(key, tuple) else (key,))))
        if trial is None or len(part) < 2:
            continue
        val, test = part["val_roc_auc"].to_numpy(float), part["test_roc_auc"].to_numpy(float)
        picks = rng.integers(0, len(part), size=(TUNING_BOOT, len(part)))
        chosen = picks[np.arange(TUNING_BOOT), np.argmax(val[picks], axis=1)]
        out[trial] = float(np.std(test[chosen], ddof=1))
    return out


class Evidence:
    """Per-trial test scores, read once: per-image probabilities where stored, else per-seed AUCs."""

    def __init__(self, best: pd.DataFrame, study_dir: Path, tuning: dict[str, float] | None = None):
        self.tuning = tuning or {}
        self.aucs = {t: np.asarray(json.loads(s), float) for t, s in zip(best["trial"], best["test_roc_auc_seeds"])}
        self.images: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for trial in best["trial"]:
            path = study_dir / "predictions" / f"{trial}.npz"
            if path.exists():
                with np.load(path) as f:
                    self.images[trial] = (np.asarray(f["probs"], float), np.asarray(f["labels"]))
        self._boot: dict[tuple[int, int], ImageBootstrap] = {}  # by (seeds, seed): one set of draws per pairing

    def contrast(self, weights: dict[str, float], seed: int) -> Contrast:
        """The contrast's paired bootstrap, with the hyper-parameter draw's spread added where every trial in it
        has one (independent draws per cell: the variances add with the weights squared)."""
        c = self._bootstrap(weights, seed)
        if weights and all(t in self.tuning for t in weights):
            c = c.with_tuning(float(np.sqrt(sum(w * w * self.tuning[t] ** 2 for t, w in weights.items()))))
        return c

    def _bootstrap(self, weights: dict[str, float], seed: int) -> Contrast:
        trials = list(weights)
        w = [weights[t] for t in trials]
        if all(t in self.images for t in trials):
            seeds = min(self.images[t][0].shape[0] for t in trials)
            if (seeds, seed) not in self._boot:
                self._boot[seeds, seed] = ImageBootstrap(self.images[trials[0]][1], seeds, n_boot=N_BOOT, seed=seed)
            return self._boot[seeds, seed].contrast(w, [self.images[t][0][:seeds] for t in trials],
                                                    keys=[(t, seeds) for t in trials])
        seeds = min(len(self.aucs[t]) for t in trials)  # paired by seed index: the same seed list for all
        return contrast_seeds(w, [self.aucs[t][:seeds] for t in trials], n_boot=N_BOOT, seed=seed)


def _result(statement: str, weights: dict[str, float] | None, evidence: Evidence, seed: int,
            reason: str = "", **extra) -> dict:
    if not weights:
        return {"statement": statement, "verdict": "inconclusive", "reason": reason or "not measurable", **extra}
    c = evidence.contrast(weights, seed)
    tuning = "included" if c.tuning_sd is not None else CONDITIONAL
    return {"statement": statement, **c.to_dict(), "verdict": verdict(c), "trials": sorted(weights),
            "tuning": tuning, **({"tuning_sd": c.tuning_sd} if c.tuning_sd is not None else {}), "_contrast": c,
            **extra}


def _add(total: dict[str, float], part: dict[str, float], scale: float) -> None:
    for k, v in part.items():
        total[k] = total.get(k, 0.0) + scale * v


class Grid:
    """Tuned trials by cell, and the gains a contrast is built from."""

    def __init__(self, best: pd.DataFrame):
        self.cols = cell_columns(best)
        self.best = best
        self.by_cell = {tuple(map(plain, row[self.cols])): row["trial"] for _, row in best.iterrows()}

    def trial(self, **cell) -> str | None:
        return self.by_cell.get(tuple(plain(cell[c]) for c in self.cols))

    def versus(self, a: str, b: str, cell: dict) -> dict[str, float] | None:
        """AUC(a) - AUC(b) at a cell; scratch has no pre-training size."""
        ta = self.trial(**{**cell, "source": a})
        tb = self.trial(**{**cell, "source": b, **({"pretrain_size": 0} if b == SCRATCH else {})})
        return {ta: 1.0, tb: -1.0} if ta and tb else None

    def cells(self, source: str) -> list[dict]:
        rows = self.best[self.best["source"] == source]
        return [dict(zip(self.cols, map(plain, r))) for r in rows[self.cols].itertuples(index=False)]


def _label(cell: dict) -> str:
    shots = cell["shots"] or "all"
    extra = f", {cell['target_size']} target images" if "target_size" in cell else ""
    return f"{cell['model']}, {cell['pretrain_size']} pre-training images, budget {cell['budget']}, " \
           f"shots {shots}{extra}"


def comparisons(grid: Grid, evidence: Evidence, seed: int) -> list[dict]:
    """"a beats b": pooled over every cell where both ran (equal weight per cell), with the per-cell evidence."""
    out = []
    for a, b in PAIRS:
        if a not in set(grid.best["source"]) or b not in set(grid.best["source"]):
            continue
        per_cell, pooled = [], {}
        measured = [(cell, grid.versus(a, b, cell)) for cell in grid.cells(a)]
        measured = [(cell, w) for cell, w in measured if w]
        for cell, w in measured:
            per_cell.append(_result(f"{a} beats {b} at {_label(cell)}", w, evidence, seed,
                                    **{k: cell[k] for k in cell if k != "source"}))
            _add(pooled, w, 1.0 / len(measured))
        out.append(_result(f"{a} pre-training beats {b} (mean AUC difference over {len(measured)} cells)",
                           pooled, evidence, seed, reason=f"no cell has both {a} and {b}", cells=per_cell,
                           compare=[a, b]))
    return out


def growth(grid: Grid, evidence: Evidence, seed: int) -> list[dict]:
    """"the gain of a source over scratch grows with an axis": gain at the largest value minus at the smallest,
    holding the other axes fixed, pooled over where that can be measured."""
    out = []
    best = grid.best
    for source in sorted(set(best["source"]) - {SCRATCH}):
        for column, name in GROWTH.items():
            statement = f"the gain of {source} over scratch grows with {name}"
            values = sorted(best.loc[best["source"] == source, column].unique())
            if len(values) < 2:
                out.append(_result(statement, None, evidence, seed, axis=column, source=source,
                                   reason=f"the grid has one {name} value for {source}"))
                continue
            varied = "model" if column == "params" else column
            held = [c for c in grid.cols if c not in (varied, "source")]
            pooled, n = {}, 0
            rows = best[best["source"] == source]
            for _, part in rows.groupby(held):
                lo, hi = part.loc[part[column].idxmin()], part.loc[part[column].idxmax()]
                if lo[column] == hi[column]:
                    continue
                w_hi = grid.versus(source, SCRATCH, dict(zip(grid.cols, map(plain, hi[grid.cols]))))
                w_lo = grid.versus(source, SCRATCH, dict(zip(grid.cols, map(plain, lo[grid.cols]))))
                if w_hi and w_lo:
                    part_w: dict[str, float] = {}
                    _add(part_w, w_hi, 1.0)
                    _add(part_w, w_lo, -1.0)
                    _add(pooled, part_w, 1.0)
                    n += 1
            pooled = {k: v / n for k, v in pooled.items() if abs(v) > 1e-12} if n else {}
            out.append(_result(f"{statement} (largest minus smallest, {n} comparisons)" if n else statement,
                               pooled, evidence, seed, axis=column, source=source,
                               reason=f"no scratch trial to pair with {source} at both ends of {name}"))
    return out


def adjust_cells(statements: list[dict]) -> dict:
    """Benjamini-Hochberg over every per-cell statement: adjusted p-values and verdicts, and intervals at the
    false-coverage-rate level that goes with them; the raw figures are kept beside them. Returns a summary."""
    cells = [c for s in statements for c in s.get("cells", []) if "_contrast" in c]
    p = np.array([c["_contrast"].p_value for c in cells])
    adjusted = benjamini_hochberg(p)
    level = fcr_level(p, FDR)
    for cell, q in zip(cells, adjusted):
        c = cell["_contrast"]
        low, high = c.at_level(level)
        found = bool(q <= FDR)  # NaN (no spread to test) is never a finding
        cell.update(ci_unadjusted=cell["ci"], level_unadjusted=cell["level"], verdict_unadjusted=cell["verdict"],
                    p_adjusted=None if np.isnan(q) else float(q), ci=[low, high], level=level,
                    verdict="inconclusive" if not found else "supported" if c.estimate > 0 else "contradicted")
    changed = sum(c["verdict"] != c["verdict_unadjusted"] for c in cells)
    return {"method": "Benjamini-Hochberg", "q": FDR, "family": "every per-cell statement",
            "tested": int(np.isfinite(p).sum()), "findings": int(np.sum(adjusted <= FDR)),
            "findings_unadjusted": sum(c["verdict_unadjusted"] != "inconclusive" for c in cells),
            "verdicts_changed": changed, "interval_level": level,
            "note": "per-cell verdicts: BH-adjusted p <= q; their ci at the false-coverage-rate level 1 - R·q/m "
                    "(Benjamini & Yekutieli 2005; R findings of m tested), estimate ± quantile·se; raw 95% "
                    "figures in ci_unadjusted / verdict_unadjusted / p_value. Pooled statements are primary and "
                    "judged at 95%."}


def _strip(statement: dict) -> dict:
    out = {k: v for k, v in statement.items() if k != "_contrast"}
    if "cells" in out:
        out["cells"] = [_strip(c) for c in out["cells"]]
    return out


def findings(best: pd.DataFrame, study_dir: Path, seed: int, table: pd.DataFrame | None = None) -> dict:
    """findings.json's content; ``table`` (every trial, all hyper-parameter samples) gives the tuning spread."""
    tuning = tuning_spread(table, best, seed)
    evidence = Evidence(best, study_dir, tuning)
    grid = Grid(best)
    statements = comparisons(grid, evidence, seed) + growth(grid, evidence, seed)
    multiplicity = adjust_cells(statements)
    statements = [_strip(s) for s in statements]
    methods = sorted({s["bootstrap"] for s in statements if "bootstrap" in s})
    return {
        "metric": "test ROC-AUC of the tuned trial per cell, mean over seeds",
        "interval": "95% paired bootstrap percentile interval",
        "bootstrap": methods,
        "bootstrap_note": "seeds+images: seeds and test images resampled together (predictions/<trial>.npz); "
                          "seeds: seeds resampled (paired by seed index), no per-image scores stored",
        "n_boot": N_BOOT,
        "multiplicity": multiplicity,
        "tuning": f"included: the sd of the tuned trial's test AUC over resamples of its cell's hyper-parameter "
                  f"samples, added to each contrast's se ({len(tuning)} of {len(best)} trials)" if tuning else
                  CONDITIONAL,
        "statements": statements,
    }


def findings_table(result: dict) -> pd.DataFrame:
    """One row per statement, for the printed summary."""
    rows = []
    for s in result["statements"]:
        has = "ci" in s
        rows.append({"statement": s["statement"],
                     "AUC diff": f"{s['estimate']:+.3f}" if has else "",
                     "95% interval": f"[{s['ci'][0]:+.3f}, {s['ci'][1]:+.3f}]" if has else s.get("reason", ""),
                     "seeds": s.get("n_seeds", ""), "bootstrap": s.get("bootstrap", ""), "verdict": s["verdict"]})
    return pd.DataFrame(rows)
