"""scaling.laws figures and the command line: files written, non-empty and readable; a round trip of the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scaling.laws import (fit_groups, plot_effective_data, plot_fits, plot_transfer, save_figure,
                          transfer_table)
from scaling.laws.cli import main
from test_laws_transfer import study_results

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MAGIC = {"png": b"\x89PNG", "svg": b"<?xml", "pdf": b"%PDF"}


def assert_figures(paths: list[Path], stem: Path, formats=("png", "svg")) -> None:
    assert sorted(p.name for p in paths) == sorted(f"{stem.name}.{ext}" for ext in formats)
    for path in paths:
        data = path.read_bytes()
        assert len(data) > 2000, path
        assert data.startswith(MAGIC[path.suffix[1:]]), path


@pytest.fixture(scope="module")
def results() -> pd.DataFrame:
    return study_results()


def test_fit_plot_written_in_three_formats(results: pd.DataFrame, tmp_path: Path) -> None:
    tuned = results[(results.source != "scratch") & (results.budget == 400)]
    fits = fit_groups(tuned, "pretrain_size", "test_error", ["source"], n_boot=30)
    assert set(fits) == {("medical",), ("natural",)}
    assert not isinstance(fits[("natural",)], Exception) or "needs" in str(fits[("natural",)])
    fig = plot_fits(tuned, "pretrain_size", "test_error", ["source"], fits=fits, extrapolate_to=1e5)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("α=" in label for label in labels)  # exponents with intervals in the legend
    assert_figures(save_figure(fig, tmp_path / "fits", MAGIC), tmp_path / "fits", MAGIC)


def test_transfer_and_effective_data_plots_written(results: pd.DataFrame, tmp_path: Path) -> None:
    fig = plot_transfer(results[results.budget == 400], facet="params", n_boot=20)
    assert len(fig.axes) == 2
    assert any("from scratch" in t.get_text() for t in fig.legends[0].get_texts())
    assert_figures(save_figure(fig, tmp_path / "transfer"), tmp_path / "transfer")
    table = transfer_table(results, x="budget", model="params", n_boot=0)
    fig = plot_effective_data(table, x="budget", model="params")
    assert_figures(save_figure(fig, tmp_path / "effective"), tmp_path / "effective")


def test_cli_round_trip_on_parquet(results: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "results.parquet"
    results.to_parquet(path)
    out = tmp_path / "out"
    code = main(["fit", str(path), "--x", "budget", "--y", "test_error", "--group-by", "source", "params",
                 "--out", str(out), "--n-boot", "20", "--extrapolate-to", "1e4", "--formats", "png", "svg", "pdf"])
    assert code == 0
    summary = json.loads((out / "fits.json").read_text())
    assert summary["x"] == "budget" and summary["group_by"] == ["source", "params"]
    assert len(summary["groups"]) == 3 * 2  # (scratch, medical, natural) x two model sizes
    for entry in summary["groups"]:
        law = entry["fit"]
        assert law["form"] in ("saturating", "power")
        assert all(np.isfinite(v) for v in law["params"].values())
        assert law["ci95"]["alpha"][0] <= law["params"]["alpha"] <= law["ci95"]["alpha"][1]
    scratch = next(e for e in summary["groups"] if e["group"] == {"source": "scratch", "params": 1e5})
    assert scratch["fit"]["n_points"] == 10
    assert_figures([out / f"fits.{ext}" for ext in MAGIC], out / "fits", MAGIC)


def test_cli_reports_groups_it_cannot_fit(tmp_path: Path) -> None:
    frame = pd.DataFrame({"n": [1, 2, 4, 8, 1, 2], "err": [0.5, 0.4, 0.3, 0.25, 0.2, 0.2],
                          "g": ["a"] * 4 + [None] * 2})  # a missing group key becomes a group of its own
    path = tmp_path / "r.csv"
    frame.to_csv(path, index=False)
    code = main(["fit", str(path), "--x", "n", "--y", "err", "--group-by", "g", "--out", str(tmp_path / "o"),
                 "--n-boot", "10", "--formats", "png"])
    assert code == 1
    groups = {e["label"]: e for e in json.loads((tmp_path / "o" / "fits.json").read_text())["groups"]}
    assert "fit" in groups["a"] and "constant" in groups["nan"]["error"]
    assert groups["nan"]["group"] == {"g": None}


def test_cli_rejects_bad_arguments(results: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "results.csv"
    results.to_csv(path, index=False)
    for argv, message in [
        (["--x", "steps", "--y", "test_error"], "lacks column(s) ['steps']"),
        (["--x", "budget", "--y", "test_error", "--query", "source == 'nothing'"], "no rows to fit"),
        (["--x", "budget", "--y", "test_error", "--n-boot", "1"], "--n-boot must be >= 2"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(["fit", str(path), *argv, "--out", str(tmp_path / "o")])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["fit", str(tmp_path / "absent.parquet"), "--x", "a", "--y", "b", "--out", str(tmp_path)])
    assert "results file not found" in capsys.readouterr().err


def test_module_entry_point_runs(tmp_path: Path) -> None:
    frame = pd.DataFrame({"n": [1e3, 2e3, 4e3, 8e3, 16e3], "err": [0.30, 0.22, 0.17, 0.13, 0.11]})
    frame.to_csv(tmp_path / "r.csv", index=False)
    done = subprocess.run([sys.executable, "-m", "scaling.laws", "fit", str(tmp_path / "r.csv"), "--x", "n",
                           "--y", "err", "--out", str(tmp_path / "o"), "--n-boot", "10", "--formats", "svg"],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "o" / "fits.svg").stat().st_size > 2000
    assert json.loads((tmp_path / "o" / "fits.json").read_text())["groups"][0]["fit"]["form"] in ("saturating",
                                                                                                 "power")
