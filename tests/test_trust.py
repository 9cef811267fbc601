"""Trust figures and fits from a results table: reliability diagrams per source and size, calibration error and
localisation against pre-training size."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
from scipy.special import expit

from scaling.evaluate import calibration
from scaling.analysis.trust import FITS_FILE, trust_figures, trust_table


def _table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for source in ("scratch", "natural", "medical"):
        for size in ((0,) if source == "scratch" else (64, 512, 4096)):
            z = rng.normal(0, 2, 600)
            y = (rng.random(600) < expit(z)).astype(int)
            over = 1 + 8 * size ** -0.3 if size else 3.0  # over-confidence shrinking with pre-training data
            scalars, _, diagram = calibration.calibrate("binary", over * z[:300], y[:300], over * z[300:], y[300:])
            rows.append({"trial": f"{source}-{size}", "status": "finished", "model": "w8", "source": source,
                         "pretrain_size": size, "budget": 50, "shots": 0, "val_roc_auc": 0.8,
                         "test_reliability": json.dumps(diagram),
                         **{f"test_{k}": v for k, v in scalars.items()},
                         "saliency_pointing": 1 - 0.9 * (size or 8) ** -0.2})
    return pd.DataFrame(rows)


def test_trust_figures_and_fits(tmp_path):
    table = _table()
    paths = trust_figures(table, tmp_path, seed=0, n_boot=10)
    names = {p.name for p in paths}
    assert {"reliability_w8_b50_shotsall.png", "trust_test_ece_w8_b50_shotsall.png",
            "trust_test_ece_calibrated_w8_b50_shotsall.svg", "trust_saliency_pointing_w8_b50_shotsall.png"} <= names
    assert not any(p.suffix == ".pdf" for p in paths)  # PDF is for the laws' figures, the ones papers take
    assert all(p.stat().st_size > 0 for p in paths)
    fits = json.loads((tmp_path / FITS_FILE).read_text())
    ece = [f for f in fits if f["column"] == "test_ece" and f["source"] == "medical"]
    assert len(ece) == 1 and ece[0]["sizes"] == [64, 512, 4096]
    assert ece[0]["params"]["alpha"] > 0  # calibration error falls with pre-training data, as constructed
    assert {f["source"] for f in fits} == {"natural", "medical"}  # scratch has no pre-training axis
    summary = trust_table(table)
    assert len(summary) == 7 and (summary["ece_T"] < summary["ece"]).all()


def test_no_calibration_columns_no_figures(tmp_path):
    table = _table().drop(columns=["test_reliability"])
    assert trust_figures(table, tmp_path) == []
    assert not (tmp_path / FITS_FILE).exists()
