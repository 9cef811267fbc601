"""Results tables of made-up studies with known answers, in the columns scaling/analysis/results.py writes: for the
analysis, findings and dashboard tests without training anything."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

MODELS = {"w8": 20_000, "w16": 80_000, "w32": 320_000}


def scratch_error(target_size: float) -> float:
    """The from-scratch curve the tables are made with: error 0.05 + 4·D^-0.5."""
    return 0.05 + 4.0 * target_size ** -0.5


def table(*, models=("w16", "w8"), sources=("scratch", "medical"), sizes=(300, 1000, 3000), budgets=(20,),
          target_sizes=None, seeds=3, noise=0.0, gain=None, seed=0, failed=0) -> pd.DataFrame:
    """One finished trial per cell. A pre-trained cell's error is the scratch error at ``gain(source, size,
    params)`` times its target size (so D_T = (gain - 1)·D_target exactly); ``noise`` is the sd of per-seed AUC
    noise. ``target_sizes`` None leaves the column out (a study without that axis)."""
    rng = np.random.default_rng(seed)
    gain = gain or (lambda source, size, params: 1 + size / 300 * (2 if source == "medical" else 1))
    rows = []
    for model in models:
        params = MODELS[model]
        for budget in budgets:
            for target in (target_sizes or [600]):
                for source in sources:
                    for size in ([0] if source == "scratch" else sizes):
                        factor = 1.0 if source == "scratch" else gain(source, size, params)
                        err = scratch_error(factor * target)
                        aucs = (1 - err) + noise * rng.standard_normal(seeds)
                        name = f"{model}-{source}-{size}-b{budget}-t{target}"
                        row = {"trial": name, "status": "finished", "model": model, "source": source,
                               "pretrain_size": size, "budget": budget, "shots": 0, "sample": 0,
                               "lr": 0.1, "weight_decay": 1e-5, "params": params, "flops_per_image": params * 10,
                               "val_roc_auc": float(aucs.mean()), "test_roc_auc": float(aucs.mean()),
                               "test_roc_auc_seeds": json.dumps(aucs.tolist()),
                               "test_roc_auc_sd": float(aucs.std(ddof=1)) if seeds > 1 else float("nan"),
                               "finetune_flops": 1e9, "pretrain_flops": 0 if source == "scratch" else 1e10,
                               "test_error": float(1 - aucs.mean())}
                        if target_sizes is not None:
                            row["target_size"] = target
                        rows.append(row)
    for i in range(failed):
        rows.append({**rows[0], "trial": f"failed-{i}", "status": "failed", "val_roc_auc": np.nan,
                     "test_roc_auc": np.nan, "test_error": np.nan, "sample": 1 + i})
    return pd.DataFrame(rows)


def write_predictions(table: pd.DataFrame, study_dir: Path, n_test: int = 200, seed: int = 0,
                      shift: dict[str, float] | None = None) -> np.ndarray:
    """predictions/<trial>.npz for every trial: per-seed test probabilities on one shared test set. Every trial's
    scores are the same signal plus its own noise; ``shift`` adds signal for some sources (an effect)."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n_test) % 2).astype(int)
    signal = labels * 1.0 + rng.standard_normal(n_test) * 0.8  # what every model sees in an image
    out = study_dir / "predictions"
    out.mkdir(parents=True, exist_ok=True)
    seeds = len(json.loads(table["test_roc_auc_seeds"].iloc[0]))
    for _, row in table.iterrows():
        extra = (shift or {}).get(row["source"], 0.0)
        scores = signal + extra * labels + rng.standard_normal((seeds, n_test)) * 0.8
        np.savez(out / f"{row['trial']}.npz", probs=1 / (1 + np.exp(-scores)), labels=labels)
    return labels
