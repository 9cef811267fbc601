"""scaling.laws.transfer: effective data transferred and its law, against cases solvable by hand."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from scaling.laws import (FitError, effective_data_transferred, fit, fit_transfer, scratch_size_for,
                          transfer_table)

D = np.array([100.0, 200, 400, 800, 1600, 3200])


def test_inverse_of_a_saturating_law_and_its_limits() -> None:
    law = fit(D, 0.02 + 2.0 * D ** -0.5, form="saturating", n_boot=0)
    # 0.02 + 2/sqrt(d) = 0.03  =>  d = (2 / 0.01)^2 = 40000
    sizes = scratch_size_for(law, [0.03, 0.02, 0.019])
    assert sizes[0] == pytest.approx(40000, rel=0.01)
    assert np.isinf(sizes[1]) and np.isinf(sizes[2])  # at or below the floor E: no scratch data suffices


def test_effective_data_transferred_matches_hand_computation() -> None:
    result = effective_data_transferred((D, 2.0 * D ** -0.5), [100, 400, 400], [0.1, 0.05, 0.2], form="power")
    # D_E = (2 / err)^2: 400, 1600, 100
    assert result.effective_size == pytest.approx([400, 1600, 100], rel=1e-3)
    assert result.transferred == pytest.approx([300, 1200, -300], rel=1e-3)  # the last run lost to scratch
    assert result.fraction_effective == pytest.approx([0.75, 0.75, -3.0], rel=1e-3)
    assert result.scratch.form == "power"


def test_effective_data_accepts_a_fitted_scratch_law_and_rejects_bad_input() -> None:
    law = fit(D, 2.0 * D ** -0.5, form="power", n_boot=0)
    assert effective_data_transferred(law, [100], [0.1]).transferred[0] == pytest.approx(300, rel=1e-3)
    with pytest.raises(FitError, match="finetuned_error must be > 0"):
        effective_data_transferred(law, [100], [0.0])
    with pytest.raises(FitError, match="2 values"):
        effective_data_transferred(law, [100, 200], [0.1])
    with pytest.raises(FitError, match="non-finite"):
        effective_data_transferred(law, [np.nan], [0.1])


def test_transfer_law_recovered_and_unusable_points_dropped_loudly() -> None:
    rng = np.random.default_rng(0)
    d_f = np.repeat([100.0, 300, 1000, 3000], 3)
    n = np.tile([1e5, 1e6, 1e7], 4)
    d_t = 3.0 * d_f ** 0.2 * n ** 0.4 * np.exp(rng.normal(0, 0.02, 12))
    with pytest.warns(UserWarning, match="dropped 2 of 14"):
        law = fit_transfer(np.r_[d_f, 50, 60], np.r_[n, 1e5, 1e5], np.r_[d_t, -10.0, np.inf], n_boot=40)
    assert law.form == "transfer"
    assert law.params["alpha"] == pytest.approx(0.2, abs=0.03)
    assert law.params["beta"] == pytest.approx(0.4, abs=0.02)
    assert law.ci["beta"][0] < 0.4 < law.ci["beta"][1]


def study_results(seed: int = 0) -> pd.DataFrame:
    """A results table like the study's: scratch and pre-trained runs, errors from a known law, two seeds."""
    rng = np.random.default_rng(seed)
    rows = []
    for params in (1e5, 1e6):
        for budget in (100, 200, 400, 800, 1600):
            for seed_ in range(2):
                for source, pretrain, gain in (("scratch", np.nan, 0.0), ("medical", 1000, 3.0),
                                               ("medical", 8000, 6.0), ("natural", 1000, 1.0)):
                    effective = budget * (1 + gain)
                    err = (0.05 + 2.0 * effective ** -0.5 * (params / 1e5) ** -0.1) * np.exp(rng.normal(0, 0.01))
                    rows.append({"source": source, "model": f"m{params:g}", "params": params,
                                 "pretrain_size": pretrain, "budget": budget, "seed": seed_,
                                 "test_auc": 1 - err, "test_error": err})
    return pd.DataFrame(rows)


def test_transfer_table_recovers_the_built_in_gain() -> None:
    table = transfer_table(study_results(), x="budget", y="test_error", model="params")
    assert len(table) == 2 * 3 * 5  # model x (source, pretrain_size) x budget, seeds averaged
    assert set(table["scratch_form"]) <= {"saturating", "power"}
    ratio = (table["effective_x"] / table["budget"]).groupby([table["source"], table["pretrain_size"]]).median()
    # errors were generated as if pre-training multiplied the data by 1 + gain
    assert ratio[("medical", 8000)] == pytest.approx(7.0, rel=0.25)
    assert ratio[("medical", 1000)] == pytest.approx(4.0, rel=0.25)
    assert ratio[("natural", 1000)] == pytest.approx(2.0, rel=0.25)


def test_transfer_table_names_what_is_missing() -> None:
    results = study_results()
    with pytest.raises(FitError, match="lack column"):
        transfer_table(results, x="steps")
    with pytest.raises(FitError, match="no from-scratch rows"):
        transfer_table(results[~((results.source == "scratch") & (results.params == 1e6))], model="params")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean table raises no warnings
        transfer_table(results[results.params == 1e5], model="params")
