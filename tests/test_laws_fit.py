"""scaling.laws fitting: recovery of known laws, intervals, selection, frontier, and every degenerate input."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scaling.laws import FitError, choose_form, extrapolation_scores, fit, pareto_frontier, transient_end
from scaling.laws.forms import FORMS, Data

LAWS_DIR = Path(__file__).resolve().parents[1] / "scaling" / "laws"


def noisy(values: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    return values * np.exp(np.random.default_rng(seed).normal(0.0, sigma, len(values)))


def m4_curve(y: np.ndarray, e: float, e0: float, a: float, alpha: float, gamma: float) -> np.ndarray:
    """x at which the M4 law takes each y, from its implicit form solved for x (independent of the fitter)."""
    return ((y - e) / (a * (e0 - y) ** gamma)) ** (-1.0 / alpha)


# --- the forms' own gradients -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n, f in FORMS.items() if f.gradient is not None])
def test_a_forms_gradient_matches_finite_differences(name: str) -> None:
    """The fitter trusts these instead of differencing: a wrong one would stop the optimiser in the wrong place."""
    form = FORMS[name]
    rng = np.random.default_rng(3)
    u = tuple(rng.uniform(-3, 3, 15) for _ in range(form.variables))
    data = Data(u, np.exp(rng.uniform(-2, -1, 15)))
    lo, hi = form.bounds(data)
    for _ in range(5):
        theta = rng.uniform(np.maximum(lo, -3), np.minimum(hi, 3))
        numeric = np.column_stack([(form.log_predict(theta + h, u) - form.log_predict(theta - h, u)) / 2e-6
                                   for h in np.eye(len(theta)) * 1e-6])
        np.testing.assert_allclose(form.gradient(theta, u), numeric, rtol=1e-5, atol=1e-7)


# --- recovery of known parameters ---------------------------------------------------------------------------


def test_power_law_recovered_with_interval_around_truth() -> None:
    x = np.logspace(2, 6, 10)
    law = fit(x, noisy(3.0 * x ** -0.4, 0.02, 0), form="power", n_boot=60)
    assert law.form == "power"
    assert law.params["alpha"] == pytest.approx(0.4, abs=0.02)
    assert law.params["A"] == pytest.approx(3.0, rel=0.2)
    lo, hi = law.ci["alpha"]
    assert lo < 0.4 < hi and hi - lo < 0.05


def test_saturating_law_recovered() -> None:
    x = np.logspace(3, 7, 14)
    law = fit(x, noisy(0.05 + 3.0 * x ** -0.4, 0.01, 1), form="saturating", n_boot=0)
    assert law.params["E"] == pytest.approx(0.05, rel=0.1)
    assert law.params["alpha"] == pytest.approx(0.4, rel=0.1)
    assert law.params["A"] == pytest.approx(3.0, rel=0.4)


def test_m4_law_recovered_from_its_implicit_form() -> None:
    y = np.linspace(0.85, 0.12, 16)  # from near the 0.9 chance plateau down towards E = 0.1
    x = m4_curve(y, e=0.1, e0=0.9, a=20.0, alpha=0.5, gamma=1.0)
    law = fit(x, noisy(y, 0.003, 2), form="m4", n_boot=0)
    assert law.params["E"] == pytest.approx(0.1, abs=0.01)
    assert law.params["E0"] == pytest.approx(0.9, abs=0.03)
    assert law.params["alpha"] == pytest.approx(0.5, rel=0.15)
    assert law.params["gamma"] == pytest.approx(1.0, abs=0.3)
    assert np.allclose(law.predict(x), y, rtol=0.02)


def test_m4_with_chance_given_keeps_e0_fixed() -> None:
    y = np.linspace(0.45, 0.1, 12)
    x = m4_curve(y, e=0.08, e0=0.5, a=5.0, alpha=0.6, gamma=0.8)
    law = fit(x, noisy(y, 0.003, 3), form="m4", chance=0.5, n_boot=0)
    assert law.params["E0"] == 0.5
    assert law.params["alpha"] == pytest.approx(0.6, rel=0.15)


def test_broken_law_recovered() -> None:
    x = np.logspace(2, 7, 30)
    y = 0.02 + 5.0 * x ** -0.1 * (1 + (x / 1e4) ** (1 / 0.3)) ** (-0.5 * 0.3)
    law = fit(x, noisy(y, 0.005, 4), form="broken", n_boot=0)
    assert law.params["alpha"] == pytest.approx(0.1, abs=0.05)
    assert law.params["alpha"] + law.params["delta"] == pytest.approx(0.6, abs=0.1)
    assert law.params["x_b"] == pytest.approx(1e4, rel=0.5)


def test_joint_law_recovered_from_named_inputs() -> None:
    n = np.repeat(np.logspace(4, 7, 6), 5)
    d = np.tile(np.logspace(5, 8, 5), 6)
    y = 0.5 + 20.0 * n ** -0.3 + 50.0 * d ** -0.4
    law = fit({"N": n, "D": d}, noisy(y, 0.005, 5), form="joint", n_boot=30)
    assert law.variables == ("N", "D")
    assert set(law.params) == {"E", "A", "alpha", "B", "beta"}
    assert law.params["alpha"] == pytest.approx(0.3, abs=0.05)
    assert law.params["beta"] == pytest.approx(0.4, abs=0.05)
    assert law.params["E"] == pytest.approx(0.5, rel=0.1)
    assert law.predict({"N": [1e9], "D": [1e10]})[0] == pytest.approx(0.5, rel=0.1)
    with pytest.raises(FitError, match="mapping"):
        law.predict([1e9])


def test_interval_coverage_near_nominal() -> None:
    """95% bootstrap intervals of the exponent cover the truth in most of 20 noisy replicates."""
    x = np.logspace(3, 6, 10)
    hits, widths = 0, []
    for r in range(20):
        law = fit(x, noisy(3.0 * x ** -0.4, 0.05, 100 + r), form="power", n_boot=40, seed=r)
        lo, hi = law.ci["alpha"]
        hits += lo <= 0.4 <= hi
        widths.append(hi - lo)
    # Measured over 200 replicates (n_boot=100) the coverage is 0.92; intervals that covered 0.6 would pass this
    # with < 0.1% chance.
    assert hits >= 16
    assert np.median(widths) < 0.1  # and the intervals are not uselessly wide


def test_prediction_band_contains_law_and_widens_beyond_data() -> None:
    x = np.logspace(3, 5, 12)
    law = fit(x, noisy(0.1 + 2.0 * x ** -0.5, 0.02, 6), form="saturating", n_boot=60, seed=1)
    grid = np.array([1e3, 1e4, 1e5, 1e7])
    low, high = law.predict_interval(grid)
    centre = law.predict(grid)
    assert np.all(low <= centre * 1.0001) and np.all(centre <= high * 1.0001)
    assert np.all(np.isfinite(low)) and np.all(np.isfinite(high))
    width = np.log(high / low)
    assert width[-1] > width[1]
    wide_low, wide_high = law.predict_interval(grid, noise=True)
    assert np.all(np.log(wide_high / wide_low) >= width - 1e-12)
    with pytest.raises(FitError, match="level"):
        law.predict_interval(grid, level=1.5)


def test_bands_need_bootstrap_replicates_and_parameter_intervals_do_not() -> None:
    x = np.logspace(1, 3, 6)
    law = fit(x, 2 * x ** -0.3 * np.exp(np.random.default_rng(0).normal(0, 0.01, 6)), form="power", n_boot=0)
    with pytest.raises(FitError, match="n_boot"):
        law.predict_interval([1e4])
    low, high = law.ci["alpha"]  # profile likelihood: no bootstrap
    assert low < 0.3 < high


# --- selection, windows, frontier ---------------------------------------------------------------------------


def test_auto_skips_transient_of_a_dense_learning_curve() -> None:
    x = np.logspace(6, 9, 30)
    y = np.minimum(0.95, 0.05 + 40.0 * x ** -0.25)  # flat at chance, then a saturating power law
    law = fit(x, noisy(y, 0.005, 7), n_boot=0)
    start = transient_end(x)
    assert start is not None and law.x[0].min() >= start
    assert law.form in ("saturating", "power")
    assert set(law.selection) == {"saturating", "power"}
    everything = fit(x, noisy(y, 0.005, 7), x_min=0, n_boot=0)
    assert len(everything.y) == 30


def test_auto_keeps_every_point_of_a_short_curve() -> None:
    x = np.array([1e3, 2e3, 4e3, 8e3, 16e3])
    assert transient_end(x) is None
    law = fit(x, 0.1 + 2 * x ** -0.5, n_boot=0)
    assert len(law.y) == 5


def test_auto_with_all_candidates_scores_each() -> None:
    x = np.logspace(2, 6, 20)
    law = fit(x, noisy(0.02 + 3 * x ** -0.3, 0.01, 8), candidates=("saturating", "power", "m4", "broken"), n_boot=0)
    assert set(law.selection) == {"saturating", "power", "m4", "broken"}
    assert all(v is None or (np.isfinite(v) and v >= 0) for v in law.selection.values())
    with pytest.raises(FitError, match="candidates"):
        fit(x, 1 / x, candidates=("joint",))


def test_choose_form_keeps_default_unless_a_rival_is_much_better() -> None:
    assert choose_form({"saturating": 0.02, "power": 0.01}) == "saturating"
    assert choose_form({"saturating": 0.2, "power": 0.01}) == "power"
    assert choose_form({"saturating": None, "power": 0.3, "m4": 0.1}) == "m4"
    assert choose_form({"saturating": None, "power": None}) == "power"


def test_extrapolation_scores_mark_unfittable_forms() -> None:
    x = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    scores = extrapolation_scores(x, 2 * x ** -0.5, ["power", "saturating", "m4"])
    assert scores["power"] == pytest.approx(0.0, abs=1e-6)
    assert scores["saturating"] is not None
    assert scores["m4"] is None  # 4 points left for 5 parameters


def test_pareto_frontier_keeps_best_per_bin() -> None:
    x = np.array([1, 1.1, 10, 11, 100, 110, 1000])
    y = np.array([1.0, 0.9, 0.5, 0.7, 0.6, 0.3, 0.2])
    idx = pareto_frontier(x, y, bins=4)
    assert idx.tolist() == [1, 2, 5, 6]  # 0.6 at x=100 is beaten by 0.3 in its own bin
    law = fit(x, y, form="power", frontier_bins=4, n_boot=0)
    assert len(law.y) == 4


# --- degenerate input is a clear error ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "y", "form", "message"),
    [
        ([1, 2, 3], [1.0, 0.5, 0.3], "saturating", "needs at least 4 points"),
        ([1, 2, 3, 4, 5], [1, 0.6, 0.5, 0.4, 0.35], "m4", "needs at least 6 points"),
        ([1, 1, 1, 1], [1.0, 0.9, 0.8, 0.7], "power", "distinct x"),
        ([1, 2, 3, 4], [1.0, 0.0, 0.3, 0.2], "power", "y must be > 0"),
        ([1, 2, 3, 4], [1.0, -0.5, 0.3, 0.2], "power", "y must be > 0"),
        ([1, 2, 3, 4], [0.3, 0.3, 0.3, 0.3], "power", "constant"),
        ([1, 2, np.nan, 4], [1.0, 0.5, 0.3, 0.2], "power", "non-finite.*index 2"),
        ([1, 2, 3, 4], [1.0, np.nan, 0.3, 0.2], "power", "non-finite.*index 1"),
        ([1, 2, 3, np.inf], [1.0, 0.5, 0.3, 0.2], "power", "non-finite"),
        ([0, 2, 3, 4], [1.0, 0.5, 0.3, 0.2], "power", "x must be > 0"),
        ([1, 2, 3], [1.0, 0.5, 0.3, 0.2], "power", "y has 4 values but x has 3"),
        ([[1, 2], [3, 4]], [1.0, 0.5], "power", "1-D"),
        ([1, 2, 3, 4], [1.0, 0.5, 0.3, 0.2], "cubic", "unknown form"),
        ([1, 2, 3, 4], [1.0, 0.5, 0.3, 0.2], "joint", "takes 2 variable"),
        ([1, 2], [1.0, 0.5], "auto", "needs at least 3 points"),
    ],
)
def test_degenerate_input_raises(x: object, y: object, form: str, message: str) -> None:
    with pytest.raises(FitError, match=message):
        fit(x, y, form=form, n_boot=0)


def test_degenerate_mappings_raise() -> None:
    with pytest.raises(FitError, match="differ in length"):
        fit({"N": [1, 2, 3, 4, 5, 6], "D": [1, 2, 3]}, [1, 2, 3, 4, 5, 6], form="joint")
    with pytest.raises(FitError, match="empty mapping"):
        fit({}, [1.0, 2.0])
    with pytest.raises(FitError, match="takes 1 variable"):
        fit({"N": [1, 2, 3, 4], "D": [1, 2, 3, 4]}, [1.0, 0.5, 0.3, 0.2], form="power")


def test_awkward_but_valid_curves_give_finite_results() -> None:
    """Rising, flat, outlier-ridden, noise-free tiny and random curves: a fit or a FitError, never NaN or inf."""
    x = np.logspace(1, 4, 12)
    curves = {"rising": 0.1 * x ** 0.2, "flat": np.r_[np.full(6, 0.5), np.full(6, 0.4999)],
              "outlier": np.r_[2 * x[:11] ** -0.3, 50.0], "tiny": 1e-12 * x ** -0.1,
              "random": np.random.default_rng(9).uniform(0.1, 1.0, 12)}
    for name, y in curves.items():
        forms = ("auto", "power", "saturating") if name == "random" else ("auto", "power", "saturating", "m4", "broken")
        for form in forms:
            law = fit(x, y, form=form, n_boot=0)
            assert all(np.isfinite(v) for v in law.params.values()), (name, form, law.params)
            assert np.all(np.isfinite(law.predict(np.logspace(0, 8, 9)))), (name, form)


# --- boundaries of the package ------------------------------------------------------------------------------


def test_import_pulls_in_neither_torch_nor_ray() -> None:
    code = ("import sys, scaling.laws, scaling.laws.plots, scaling.laws.cli; "
            "bad = [m for m in ('torch', 'ray') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=LAWS_DIR.parents[1], timeout=120)


def test_modules_import_only_numeric_and_plotting_libraries() -> None:
    allowed = set(sys.stdlib_module_names) | {"numpy", "scipy", "matplotlib", "pandas", "pyarrow"}
    for path in LAWS_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = [(node.module or "").split(".")[0]]
            else:
                continue
            assert set(roots) <= allowed, f"{path.name} imports {roots}"
