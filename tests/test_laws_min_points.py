"""One rule for every axis of a study's laws: no law on fewer than 3 distinct x, and the refusal is stated."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from scaling.analysis.fits import MIN_VALUES, all_laws
from scaling.analysis.grid import per_seed
from scaling.analysis.results import best_per_cell
import study_tables


def test_a_curve_on_two_pretraining_sizes_gets_no_law_and_says_why():
    three = study_tables.table(models=("w8",), sizes=(300, 1000, 3000), seeds=2, noise=0.01)
    two = study_tables.table(models=("w16",), sizes=(300, 1000), seeds=2, noise=0.01)
    two = two[two["source"] != "scratch"]  # w16 has only two pre-training sizes
    points = per_seed(best_per_cell(pd.concat([three, two], ignore_index=True)))
    fits, absent = all_laws(points, seed=0)
    curves = {f["model"]: f for f in fits if f["axis"] == "pretrain_size"}
    assert "params" in curves["w8"] and "heldout" in curves["w8"]
    # three sizes: the held-out refit would stand on two, so it is not scored, and says so
    assert "a law needs 3" in curves["w8"]["heldout"]["error"]
    assert "params" not in curves["w16"] and "curve" not in curves["w16"]
    assert curves["w16"]["error"] == f"no law: pretrain_size has 2 distinct value(s) (300, 1000); a law needs {MIN_VALUES}"
    assert "pretrain_size" not in absent
    # the model-size axis, with two models, is absent under the same rule
    assert absent["params"] == f"params has 2 value(s); a law needs {MIN_VALUES}"


def test_laws_fitted_in_parallel_equal_those_fitted_in_one_process():
    cpus = os.sched_getaffinity(0)
    if len(cpus) < 2:
        pytest.skip("one CPU: the laws are fitted in this process anyway")
    table = study_tables.table(models=("w8", "w16", "w32"), sizes=(300, 1000, 3000, 10000), seeds=2, noise=0.02)
    points = per_seed(best_per_cell(table))
    parallel, absent = all_laws(points, seed=0)
    os.sched_setaffinity(0, {min(cpus)})  # one CPU: no pool
    try:
        alone, absent_alone = all_laws(points, seed=0)
    finally:
        os.sched_setaffinity(0, cpus)
    assert absent == absent_alone and len(parallel) == len(alone) > 5
    for a, b in zip(parallel, alone):
        assert {k: v for k, v in a.items() if k != "law"} == {k: v for k, v in b.items() if k != "law"}
        if "law" in a:
            grid = np.geomspace(100, 1e5, 7)
            assert np.array_equal(a["law"].predict(grid), b["law"].predict(grid))
            assert np.array_equal(a["law"].predict_interval(grid), b["law"].predict_interval(grid))
