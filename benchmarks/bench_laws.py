"""Extrapolation benchmark of scaling.laws on public learning curves.

Run from the project root: ``python benchmarks/bench_laws.py [--forms ...] [--workers N]``.

1. Alabdulmohsin, Neyshabur & Zhai (2022) benchmark: 92 curves (duplicated rows of the language file dropped).
   Each form is fitted to a curve's training points and scored by the RMSE of log(loss) on its held-out points
   (larger x); the table gives mean, median and worst per domain and overall, beside the anchors measured with
   public recipes (see ../shared/data/README.md).
2. Chinchilla points extracted by Epoch AI (Besiroglu et al. 2024): the joint law's alpha and beta against
   Epoch's 95% intervals.
"""

from __future__ import annotations

import argparse
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scaling.laws import FitError, fit  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "scaling-benchmarks"
FORMS = ("power", "saturating", "m4", "broken", "auto")
ANCHORS = {  # mean over the 92 curves, public recipes, from the data README
    "saturating power law, Huber (public recipe)": 0.041,
    "M3 (paper's code)": 0.052,
    "best of five in hindsight": 0.027,
}
GOAL = {"mean": 0.025, "worst": 0.15}
EPOCH = {"alpha": (0.317, 0.373), "beta": (0.331, 0.415)}  # 95% intervals of Besiroglu et al. 2024


def load_curves() -> list[tuple[str, str, pd.DataFrame]]:
    frames = [pd.read_csv(DATA / name) for name in ("benchmark.vision.csv", "benchmark.lang.csv")]
    table = pd.concat(frames, ignore_index=True).drop_duplicates()
    curves = []
    for (domain, task, model), df in table.groupby(["Domain", "Task", "Model"], sort=False):
        curves.append((str(domain), f"{task} | {model}", df.sort_values("Seen Examples")))
    return curves


def score_curve(args: tuple[str, str, pd.DataFrame, tuple[str, ...]]) -> dict[str, object]:
    domain, name, df, forms = args
    train, test = df[df["Training"] == 1], df[df["Training"] == 0]
    row: dict[str, object] = {"domain": domain, "curve": name, "n_train": len(train), "n_test": len(test)}
    for form in forms:
        try:
            law = fit(train["Seen Examples"].to_numpy(), train["Loss"].to_numpy(), form=form)
        except FitError as err:
            print(f"  {name} {form}: {err}", file=sys.stderr)
            row[form] = np.inf
            continue
        pred = law.predict(test["Seen Examples"].to_numpy())
        row[form] = float(np.sqrt(np.mean((np.log(test["Loss"].to_numpy()) - np.log(pred)) ** 2)))
        if form == "auto":
            row["auto_choice"] = law.form
    return row


def summary(scores: pd.DataFrame, forms: tuple[str, ...]) -> pd.DataFrame:
    rows = []
    for domain, df in [*scores.groupby("domain", sort=False), ("all", scores)]:
        for form in forms:
            s = df[form]
            rows.append({"domain": domain, "curves": len(df), "form": form, "mean": s.mean(),
                         "median": s.median(), "worst": s.max()})
    return pd.DataFrame(rows)


def chinchilla() -> dict[str, float]:
    df = pd.read_csv(DATA / "epoch_chinchilla_svg_extracted_data.csv")
    n = df["Model Size"].to_numpy()
    d = df["Training FLOP"].to_numpy() / (6 * n)
    law = fit({"N": n, "D": d}, df["loss"].to_numpy(), form="joint", n_boot=0)
    return law.params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--forms", nargs="+", default=list(FORMS), choices=FORMS)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    forms = tuple(args.forms)
    if not DATA.is_dir():
        sys.exit(f"benchmark data not found at {DATA}")

    start = time.perf_counter()
    curves = load_curves()
    jobs = [(domain, name, df, forms) for domain, name, df in curves]
    if args.workers > 1:
        with Pool(args.workers) as pool:
            rows = pool.map(score_curve, jobs, chunksize=1)
    else:
        rows = [score_curve(job) for job in jobs]
    scores = pd.DataFrame(rows)
    elapsed = time.perf_counter() - start

    pd.set_option("display.width", 160)
    pd.set_option("display.max_rows", 200)
    print(f"Learning-curve extrapolation: {len(curves)} curves, RMSE of log(loss) on held-out points "
          f"({elapsed:.0f} s on {args.workers} worker(s))\n")
    table = summary(scores, forms)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print("\nAnchors (mean over 92 curves): " + ", ".join(f"{k} {v:.3f}" for k, v in ANCHORS.items()))
    if "auto" in forms:
        overall = table[(table.domain == "all") & (table.form == "auto")].iloc[0]
        print(f"Goal for auto: mean <= {GOAL['mean']} (got {overall['mean']:.4f}), worst <= {GOAL['worst']} "
              f"(got {overall['worst']:.4f})")
        print("auto chose: " + ", ".join(f"{k} {v}" for k, v in scores["auto_choice"].value_counts().items()))
        worst = scores.nlargest(5, "auto")[["domain", "curve", "auto", "auto_choice", *[f for f in forms if f != "auto"]]]
        print("\nWorst curves for auto:\n" + worst.to_string(index=False, float_format=lambda v: f"{v:.4f}"))

    params = chinchilla()
    print("\nChinchilla (Epoch AI points), joint law E + A/N^alpha + B/D^beta:")
    print("  " + ", ".join(f"{k} {v:.4g}" for k, v in params.items()))
    for name, (lo, hi) in EPOCH.items():
        verdict = "inside" if lo <= params[name] <= hi else "OUTSIDE"
        print(f"  {name} = {params[name]:.3f}, Epoch AI 95% interval [{lo}, {hi}]: {verdict}")


if __name__ == "__main__":
    main()
