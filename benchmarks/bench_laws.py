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
VARIANTS = {  # column name -> keyword arguments of fit()
    "power": {"form": "power"},
    "saturating": {"form": "saturating"},
    "m4": {"form": "m4"},
    "broken": {"form": "broken"},
    "auto": {"form": "auto"},
    "auto(all 4)": {"form": "auto", "candidates": ("saturating", "power", "m4", "broken")},
}
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
    domain, name, df, variants = args
    train, test = df[df["Training"] == 1], df[df["Training"] == 0]
    row: dict[str, object] = {"domain": domain, "curve": name, "n_train": len(train), "n_test": len(test)}
    for variant in variants:
        try:
            law = fit(train["Seen Examples"].to_numpy(), train["Loss"].to_numpy(), n_boot=0, **VARIANTS[variant])
        except FitError as err:
            print(f"  {name} {variant}: {err}", file=sys.stderr)
            row[variant] = np.inf
            continue
        pred = law.predict(test["Seen Examples"].to_numpy())
        row[variant] = float(np.sqrt(np.mean((np.log(test["Loss"].to_numpy()) - np.log(pred)) ** 2)))
        row[f"{variant} chose"] = law.form
    return row


def summary(scores: pd.DataFrame, variants: tuple[str, ...]) -> pd.DataFrame:
    rows = []
    for domain, df in [*scores.groupby("domain", sort=False), ("all", scores)]:
        for variant in variants:
            s = df[variant]
            rows.append({"domain": domain, "curves": len(df), "method": variant, "mean": s.mean(),
                         "median": s.median(), "worst": s.max()})
    return pd.DataFrame(rows)


def chinchilla() -> None:
    df = pd.read_csv(DATA / "epoch_chinchilla_svg_extracted_data.csv")
    # Epoch AI fitted all but the five highest-loss points; their intervals belong to that protocol.
    protocols = {"all 245 points": df, "Epoch's protocol (5 highest losses dropped)":
                 df[df["loss"] < np.sort(df["loss"].to_numpy())[-5]]}
    print("\nChinchilla (Epoch AI points), joint law E + A/N^alpha + B/D^beta; D = FLOP / (6 N):")
    for label, part in protocols.items():
        n = part["Model Size"].to_numpy()
        law = fit({"N": n, "D": part["Training FLOP"].to_numpy() / (6 * n)}, part["loss"].to_numpy(),
                  form="joint", n_boot=0)
        p = law.params
        verdicts = ", ".join(f"{k} {p[k]:.3f} {'inside' if lo <= p[k] <= hi else 'OUTSIDE'} [{lo}, {hi}]"
                             for k, (lo, hi) in EPOCH.items())
        print(f"  {label} (n={len(part)}): E {p['E']:.3f}, A {p['A']:.4g}, B {p['B']:.4g}; {verdicts}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    variants = tuple(args.methods)
    if not DATA.is_dir():
        sys.exit(f"benchmark data not found at {DATA}")

    start = time.perf_counter()
    curves = load_curves()
    jobs = [(domain, name, df, variants) for domain, name, df in curves]
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
    table = summary(scores, variants)
    wide = table.pivot_table(index="domain", columns="method", values=["mean", "median", "worst"], sort=False)
    wide = wide.swaplevel(axis=1)[[v for v in variants]]
    print(wide.to_string(float_format=lambda v: f"{v:.4f}"))
    print("\nAnchors (mean over 92 curves, public recipes): "
          + ", ".join(f"{k} {v:.3f}" for k, v in ANCHORS.items()))
    for variant in (v for v in variants if v.startswith("auto")):
        overall = table[(table.domain == "all") & (table.method == variant)].iloc[0]
        chose = scores[f"{variant} chose"].value_counts()
        print(f"{variant}: mean {overall['mean']:.4f} (goal <= {GOAL['mean']}), worst {overall['worst']:.4f} "
              f"(goal <= {GOAL['worst']}); chose " + ", ".join(f"{k} {v}" for k, v in chose.items()))
    worst_of = variants[-1] if "auto" not in variants else "auto"
    worst = scores.nlargest(5, worst_of)[["domain", "curve", *variants]]
    print(f"\nWorst curves for {worst_of}:\n" + worst.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    chinchilla()


if __name__ == "__main__":
    main()
