"""The grid a study's results span: which axes it has, the tuned trials as points per seed, and the order and
colours every figure and the dashboard share."""
from __future__ import annotations

import json

import pandas as pd

from scaling.config import SCRATCH

#: one colour per source in every figure and the dashboard (Okabe-Ito: safe under colour-vision deficiencies)
SOURCE_COLOURS = {"scratch": "#555555", "natural": "#E69F00", "medical": "#0072B2", "both": "#009E73"}
EXTRA_COLOURS = ("#CC79A7", "#D55E00", "#56B4E9", "#F0E442")
#: the axes of a cell that the laws, effective data and trust fits group by (one curve per group)
GROUP = ["model", "budget", "shots"]
#: the axes of a cell, every axis of a trial but its hyper-parameter sample (target_size too where a table has
#: it: `cell_columns`)
CELL = ["model", "source", "pretrain_size", "budget", "shots"]
TRUST_COLUMNS = ("test_ece", "test_ece_calibrated", "test_brier", "test_ensemble_roc_auc", "test_aurc",
                 "saliency_pointing", "saliency_pointing_baseline")


def source_colours(sources) -> dict[str, str]:
    """The fixed colours, and stable extra ones for sources of other names (merged sources)."""
    extra = sorted(s for s in set(sources) if s not in SOURCE_COLOURS)
    return {**SOURCE_COLOURS, **{s: EXTRA_COLOURS[i % len(EXTRA_COLOURS)] for i, s in enumerate(extra)}}


def model_order(table: pd.DataFrame) -> list[str]:
    """Model names by parameter count (w8 before w16), not by name."""
    sizes = table.groupby("model")["params"].first().sort_values(kind="stable")
    return [str(m) for m in sizes.index]


def has_target_axis(table: pd.DataFrame) -> bool:
    """Scratch trials at several target sizes: the curve effective data transferred is read from."""
    return "target_size" in table and table.loc[table["source"] == SCRATCH, "target_size"].nunique() >= 2


def on_full_target(table: pd.DataFrame) -> pd.DataFrame:
    """The trials on the whole target training split (per budget and shots): scratch trials on nested subsets
    (`sweep.scratch_target_sizes`) feed effective data transferred, never the scratch level of the error views."""
    if "target_size" not in table or table.empty:
        return table
    return table[table["target_size"] == table.groupby(["budget", "shots"])["target_size"].transform("max")]


def with_target_size(columns: list[str], table: pd.DataFrame) -> list[str]:
    """`columns`, and target_size where the table has it: scratch trials at several target sizes are cells (and
    curves) of their own."""
    return columns + (["target_size"] if "target_size" in table else [])


def cell_columns(table: pd.DataFrame) -> list[str]:
    """Every axis of a trial but its hyper-parameter sample."""
    return with_target_size(CELL, table)


def per_seed(best: pd.DataFrame) -> pd.DataFrame:
    """One row per seed of every tuned trial, with that seed's test error and its index in ``sweep.seeds``:
    the points the laws are fitted to and the figures show (a trial trains its seeds side by side and reports
    their mean)."""
    aucs = best["test_roc_auc_seeds"].map(json.loads)
    rows = best.assign(test_roc_auc=aucs, seed_index=aucs.map(lambda a: list(range(len(a)))))
    rows = rows.explode(["test_roc_auc", "seed_index"])
    rows["test_roc_auc"] = rows["test_roc_auc"].astype(float)
    rows["seed_index"] = rows["seed_index"].astype(int)
    rows["test_error"] = 1.0 - rows["test_roc_auc"]
    return rows.reset_index(drop=True)


def plain(value):
    """numpy scalars as Python ones, for JSON."""
    return value.item() if hasattr(value, "item") else value
