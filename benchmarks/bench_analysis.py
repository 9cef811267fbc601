"""The post-sweep stage of a finished study, part by part: where its wall time goes.

Runs on a copy of the study directory (the study itself is left as it was) what `scaling.study` runs after the
sweep, in its order: saliency of the tuned trial per cell (with --saliency: it needs the study's jobs/ and its
data cache), the analysis (laws with bootstraps, effective data transferred, findings, figures), the trust
figures and fits, and the dashboard. The analysis is split into its steps by timers around them, and the time
every part spent writing figures (matplotlib savefig, by format) and refitting laws in bootstraps is counted.

    python benchmarks/bench_analysis.py [STUDY_DIR (runs/default)] [--saliency] [--cache-dir DIR]
"""
from __future__ import annotations

import argparse
import collections
import functools
import shutil
import tempfile
import time
from pathlib import Path

#: big folders the analysis never reads (jobs/ is copied for saliency only)
SKIP = ("jobs", "checkpoints", "mlartifacts", "tune", "saliency", "logs")


class Clock:
    """Seconds and calls per label, from timers wrapped around functions."""

    def __init__(self):
        self.seconds: dict[str, float] = collections.defaultdict(float)
        self.calls: collections.Counter = collections.Counter()

    def wrap(self, owner, name: str, label: str) -> None:
        inner = getattr(owner, name)

        @functools.wraps(inner)
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - started
                self.calls[label] += 1

        setattr(owner, name, timed)

    def savefig_by_format(self) -> None:
        from matplotlib.figure import Figure

        inner = Figure.savefig

        def savefig(fig, fname, *args, format=None, **kwargs):
            started = time.perf_counter()
            try:
                return inner(fig, fname, *args, format=format, **kwargs)
            finally:
                label = f"  savefig {format or Path(str(fname)).suffix[1:]}"
                self.seconds[label] += time.perf_counter() - started
                self.calls[label] += 1

        Figure.savefig = savefig


def _saliency(table, study: Path, cache_dir: str | None):
    from scaling.analysis import saliency
    from scaling.config import load_config
    from scaling.data.stage import prepare_study_data
    from scaling.analysis.results import best_per_cell

    cfg = load_config(study / "config.yaml", [f"data.cache_dir={cache_dir}"] if cache_dir else [])
    data = prepare_study_data(cfg, log=lambda _: None)  # reuses the cache; not part of the stage
    best = best_per_cell(table)
    return lambda: saliency.run_stage(best, data.target, cfg.data.target, cfg.models.ladder, cfg.seed, study, None,
                                      lambda _: None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", nargs="?", default="runs/default", type=Path)
    parser.add_argument("--saliency", action="store_true", help="also time the saliency stage (reads jobs/)")
    parser.add_argument("--cache-dir", help="the data cache the study used (default: its config's)")
    args = parser.parse_args()
    if not (args.study / "results.parquet").exists():
        parser.error(f"{args.study} holds no results.parquet: give a finished study's directory")

    import pandas as pd

    import dashboards
    import scaling.analysis as analysis
    import scaling.analysis.trust as trust
    from scaling.laws import solver

    clock = Clock()
    for name in ("all_laws", "transfer_cells", "findings", "draw_figures"):
        clock.wrap(analysis, name, f"  {name}")
    clock.wrap(solver.Problem, "local", "  law refits (least_squares)")
    clock.savefig_by_format()

    with tempfile.TemporaryDirectory() as tmp:
        study = Path(tmp) / args.study.name
        shutil.copytree(args.study, study, ignore=shutil.ignore_patterns(*(s for s in SKIP
                                                                           if s != "jobs" or not args.saliency)))
        table = pd.read_parquet(study / "results.parquet")
        parts = []
        if args.saliency:
            from scaling.config import ConfigError

            try:
                parts.append(("saliency", _saliency(table, study, args.cache_dir)))
            except ConfigError as e:  # a study's config.yaml that load_config refuses (e.g. empty lists)
                print(f"saliency not timed: {study / 'config.yaml'}: {e}")
        parts += [("analysis", lambda: analysis.analyse(table, study, 0, lambda _: None)),
                  ("trust figures", lambda: trust.trust_figures(table, study, 0)),
                  ("dashboard", lambda: dashboards.build(study))]
        rows = []
        for name, run in parts:
            before, calls = dict(clock.seconds), dict(clock.calls)
            started = time.perf_counter()
            run()
            rows.append((name, time.perf_counter() - started, ""))
            rows += [(label, clock.seconds[label] - before.get(label, 0.0),
                      f"{clock.calls[label] - calls.get(label, 0)} calls")
                     for label in sorted(clock.seconds) if clock.seconds[label] - before.get(label, 0.0) > 0.01]
    total = sum(seconds for name, seconds, _ in rows if not name.startswith(" "))
    print(f"post-sweep stage of {args.study} ({len(table)} trials)")
    print(f"{'part':<32}{'seconds':>9}{'share':>8}  note")
    for name, seconds, note in rows:
        print(f"{name:<32}{seconds:>9.2f}{seconds / total:>8.0%}  {note}")
    print(f"{'total':<32}{total:>9.2f}{1:>8.0%}")


if __name__ == "__main__":
    main()
