"""``python -m scaling.laws fit RESULTS --x COL --y COL [--group-by COL ...] --out DIR``.

Reads a results table (Parquet, or CSV by its suffix), fits ``y`` against ``x`` per group and writes
``DIR/fits.json`` (one entry per group: its key, and the fit or the reason it could not be made) and the figure
``DIR/fits.{png,svg,pdf}``. Exits with status 1 when some group could not be fitted, 2 on bad arguments or
unreadable input.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Sequence

from .checks import FitError
from .fitting import Fit
from .forms import FORMS
from .plots import fit_groups, group_label, plot_fits, save_figure


def read_results(path: Path) -> Any:
    """The results table at ``path``: Parquet, or CSV when the name ends in ``.csv``."""
    import pandas as pd  # only the CLI reads files; the library itself takes arrays or DataFrames

    if not path.is_file():
        raise FileNotFoundError(f"results file not found: {path}")
    if path.suffix.lower() == ".csv":
        return pd.read_csv(path)
    return pd.read_parquet(path)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m scaling.laws", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    cmd = commands.add_parser("fit", help="fit laws per group and write fits.json and figures")
    cmd.add_argument("results", type=Path, help="results table (.parquet, or .csv)")
    cmd.add_argument("--x", required=True, help="column of sizes (data, parameters, budget, compute)")
    cmd.add_argument("--y", required=True, help="column of errors or losses (> 0)")
    cmd.add_argument("--group-by", nargs="+", default=[], metavar="COL", help="one law per group of these columns")
    cmd.add_argument("--query", help="keep only rows matching this pandas query, e.g. \"source != 'scratch'\"")
    cmd.add_argument("--out", type=Path, required=True, help="folder for fits.json and the figures")
    cmd.add_argument("--form", default="auto", choices=["auto", *(k for k, f in FORMS.items() if f.variables == 1)])
    cmd.add_argument("--x-min", type=float, help="fit only rows with x >= this")
    cmd.add_argument("--frontier-bins", type=int, help="fit only the best y in each of this many log-x bins")
    cmd.add_argument("--chance", type=float, help="chance-level error, fixes E0 of m4 (0.5 for 1 - AUC)")
    cmd.add_argument("--extrapolate-to", type=float, help="draw each law out to this x")
    cmd.add_argument("--n-boot", type=int, default=200, help="bootstrap replicates for intervals (default 200)")
    cmd.add_argument("--seed", type=int, default=0)
    cmd.add_argument("--formats", nargs="+", default=["png", "svg", "pdf"], choices=["png", "svg", "pdf"])
    return parser


def _json_value(value: Any) -> Any:
    """A group key as JSON has it: numpy scalars as Python ones, a missing value (NaN) as null."""
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and math.isnan(value) else value


def _entry(group_by: Sequence[str], key: tuple, result: Fit | FitError) -> dict[str, Any]:
    entry: dict[str, Any] = {"group": {c: _json_value(v) for c, v in zip(group_by, key)},
                             "label": group_label(group_by, key)}
    if isinstance(result, Fit):
        entry["fit"] = result.to_dict()
    else:
        entry["error"] = str(result)
    return entry


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.n_boot < 2:
        parser.error(f"--n-boot must be >= 2 to give intervals, got {args.n_boot}")
    try:
        results = read_results(args.results)
        if args.query:
            results = results.query(args.query)
    except Exception as err:  # any reader or query failure is the user's input, reported as such
        parser.error(f"cannot read {args.results}{' with --query ' + repr(args.query) if args.query else ''}: {err}")
    missing = [c for c in (args.x, args.y, *args.group_by) if c not in results.columns]
    if missing:
        parser.error(f"{args.results} lacks column(s) {missing}; it has {list(results.columns)}")
    if results.empty:
        parser.error(f"no rows to fit in {args.results}" + (f" after --query {args.query!r}" if args.query else ""))

    options = dict(form=args.form, x_min=args.x_min, frontier_bins=args.frontier_bins, chance=args.chance,
                   n_boot=args.n_boot, seed=args.seed)
    fits = fit_groups(results, args.x, args.y, args.group_by, **options)
    entries = []
    for key, result in fits.items():
        entries.append(_entry(args.group_by, key, result))
        if isinstance(result, FitError):
            print(f"group {group_label(args.group_by, key)!r}: {result}", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {"results": str(args.results), "x": args.x, "y": args.y, "group_by": args.group_by,
               "query": args.query, "options": options, "groups": entries}
    (args.out / "fits.json").write_text(json.dumps(summary, indent=2, allow_nan=False))
    figure = plot_fits(results, args.x, args.y, args.group_by, fits=fits, extrapolate_to=args.extrapolate_to)
    for path in [args.out / "fits.json", *save_figure(figure, args.out / "fits", args.formats)]:
        print(path)
    return 1 if any(isinstance(r, FitError) for r in fits.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
