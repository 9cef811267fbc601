"""The results table of a study: one row per fine-tuning trial, every axis, metric, compute and status.
`target_size` is the number of target training images a trial used (the whole split, its shots or a subset);
`reference` marks from-scratch trials on more images of a synthetic target than its training split holds
(scaling/sweep/reference.py): they feed the scratch curve of effective data transferred and nothing else.

Built from the trial ledger, written as Parquet (the input of the fits and the dashboard) and CSV.
"""
from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from scaling.analysis.grid import cell_columns
from scaling.config import BOTH, SCRATCH, Recipe
from scaling.files import publish_file
from scaling.train.faults import DIVERGED_STEP, describe_divergence

#: FLOPs of a training step per image: forward + backward ~ 3x the forward
TRAIN_FLOPS_PER_FORWARD = 3


def results_table(ledger_entries: dict[str, dict], pretrain: Recipe, finetune: Recipe) -> pd.DataFrame:
    """One row per trial of the ledger; the FLOPs of its fine-tuning (its steps at `finetune`'s batch size) and
    of the pre-training it started from (`pretrain`'s steps per stage: none from scratch, two for "both")."""
    rows = []
    for name, entry in sorted(ledger_entries.items()):
        metrics = entry.get("metrics", {})
        # what ended a trial that did not finish: where it diverged, or its error (e.g. out of memory)
        row = {"trial": name, "status": entry["status"], "status_detail": describe_divergence(metrics)
               if DIVERGED_STEP in metrics else entry.get("error", "")}
        row.update({k: entry[k] for k in ("model", "source", "pretrain_size", "budget", "shots", "sample",
                                            "target_subset", "target_size", "lr", "weight_decay", "params",
                                            "flops_per_image")})
        row["reference"] = bool(entry.get("reference", False))  # ledgers from before it: none
        row.update({k: v for k, v in metrics.items() if not k.endswith("_confusion")})
        per_step = TRAIN_FLOPS_PER_FORWARD * entry["flops_per_image"] * finetune.batch_size
        row["finetune_flops"] = per_step * metrics.get("step", 0)
        stages = {SCRATCH: 0, BOTH: 2}.get(entry["source"], 1)
        row["pretrain_flops"] = stages * TRAIN_FLOPS_PER_FORWARD * entry["flops_per_image"] * \
            pretrain.batch_size * pretrain.steps
        # present in every table, a study whose trials all diverged included (the dashboard reads it)
        row["test_error"] = 1.0 - metrics["test_roc_auc"] if "test_roc_auc" in metrics else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def best_per_cell(table: pd.DataFrame, reference: bool = False) -> pd.DataFrame:
    """Per cell (all axes but the hyper-parameter sample), the finished trial with the best validation AUC:
    the tuned result of that cell; the scratch reference cells only with `reference` (effective data
    transferred alone reads them)."""
    if len(table) and not reference and "reference" in table:
        table = table[~table["reference"].astype(bool)]
    done = table[(table["status"] == "finished") & table["val_roc_auc"].notna()] if len(table) else table
    if done.empty:
        return done
    cell = cell_columns(table)
    best = done.loc[done.groupby(cell)["val_roc_auc"].idxmax()]
    return best.sort_values(cell).reset_index(drop=True)


def write_table(table: pd.DataFrame, study_dir: Path) -> list[Path]:
    """results.parquet and results.csv, each serialised in memory and published atomically: a full disk
    raises `scaling.files.NoSpace` naming the file and its size, and leaves the previous table readable."""
    parquet = io.BytesIO()
    table.to_parquet(parquet, index=False)
    return [publish_file(study_dir / "results.parquet", parquet.getvalue()),
            publish_file(study_dir / "results.csv", table.to_csv(index=False).encode())]
