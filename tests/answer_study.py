"""A small made-up study directory shaped like the default's (tests/study_tables.py): two rungs, scratch, medical
and natural at three pre-training sizes on one budget, scratch at three target sizes, and a budget slice (two more
budgets on the larger rung at the largest pre-training size), analysed as a study analyses it."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

import study_tables
from scaling.analysis import analyse
from scaling.analysis.results import write_table

SOURCES = ("scratch", "medical", "natural")
#: a pre-trained cell matches scratch on gain x its target images: natural at 300 images is worth half the target
#: (a D_T inside the scratch curve's range: bounded), every other cell lies beyond the scratch trials' errors
GAIN = {("medical", 300): 1.3, ("medical", 1000): 2.0, ("medical", 3000): 4.0,
        ("natural", 300): 0.5, ("natural", 1000): 1.5, ("natural", 3000): 5.0}


def sliced_table() -> pd.DataFrame:
    gain = lambda source, size, params: GAIN[source, size]  # noqa: E731
    grid = study_tables.table(models=("w8", "w16"), sources=SOURCES, sizes=(300, 1000, 3000), gain=gain,
                              target_sizes=[150, 300, 600], seeds=4, noise=0.01, seed=1)
    grid = grid[(grid["source"] == "scratch") | (grid["target_size"] == 600)]  # fine-tuned on the full target
    budgets = study_tables.table(models=("w16",), sources=SOURCES, sizes=(3000,), budgets=(40, 80), gain=gain,
                                 target_sizes=[600], seeds=4, noise=0.01, seed=2)
    return pd.concat([grid, budgets], ignore_index=True)


def analysed_study(path: Path) -> Path:
    """`path` holding results.parquet, fits.json, findings.json and figures/ of `sliced_table`."""
    table = sliced_table()
    path.mkdir(parents=True, exist_ok=True)
    write_table(table, path)
    analyse(table, path, seed=0, log=lambda _: None)
    return path
