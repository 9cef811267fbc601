"""The sweep engine against brute force: Optuna + per-cell ASHA versus an exhaustive grid of learning rates.

On a small from-scratch grid of the smoke study (cells = fine-tuning budgets), both get `--samples` trials per
cell: the sweep as a study runs it (Optuna samples learning rate and weight decay with the config's
`sweep.sampler`, ASHA stops a cell's poorer trials at its evaluations), the grid with `--samples` learning rates
log-spaced over the scratch cells' learning-rate range (weight decay at the geometric middle of its range), every
trial trained to its budget. Per cell it prints the best
validation AUC of each and the optimizer steps each used, and their ratios (sweep / grid).

    python benchmarks/bench_sweep.py [--samples 4] [--budgets 30 60]
"""
from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

import numpy as np  # noqa: E402  (Ray reads the settings above)
import ray  # noqa: E402
from ray import tune  # noqa: E402

from scaling.config import load_config  # noqa: E402
from scaling.data.stage import prepare_study_data  # noqa: E402
from scaling.study import TRAIN_ENV  # noqa: E402
from scaling.sweep.jobs import StudyJobs  # noqa: E402
from scaling.sweep.ledger import Ledger  # noqa: E402
from scaling.sweep.plan import finetune_points  # noqa: E402
from scaling.sweep.search import METRIC, point_of  # noqa: E402
from scaling.sweep.tune import concurrency, run_finetuning, trial_resources  # noqa: E402
from scaling.track.progress import Progress  # noqa: E402
from scaling.track.runs import StudyTracker  # noqa: E402
from scaling.train.job import run_job  # noqa: E402

SMOKE = Path(__file__).resolve().parent.parent / "studies" / "configs" / "smoke.yaml"


def _grid(jobs, points, work: Path) -> list[tuple]:
    """(cell, last result) of each (point, lr), trained to the end of its budget (no scheduler)."""
    cfg = jobs.cfg
    wd = math.sqrt(cfg.finetune.weight_decay_range[0] * cfg.finetune.weight_decay_range[1])

    def trainable(config):
        point, lr = point_of(config["point"]), config["point"]["lr"]
        run_job(jobs.finetune_spec(point, lr, wd), name=f"grid-{point.name}-{lr:.4g}", storage_path=work / "jobs",
                resources=cfg.resources, tune=True)

    grid = tune.Tuner(
        tune.with_resources(trainable, trial_resources(cfg.resources)),
        param_space={"point": tune.grid_search([{**p.as_dict(), "lr": lr} for p, lr in points])},
        tune_config=tune.TuneConfig(max_concurrent_trials=cfg.sweep.max_concurrent_trials, reuse_actors=True),
        run_config=tune.RunConfig(name="grid", storage_path=str(work / "tune"), verbose=0),
    )
    return [(point_of(r.config["point"]).cell, r.metrics) for r in grid.fit()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=4, help="trials per cell, for both")
    parser.add_argument("--budgets", type=int, nargs="+", default=[30, 60])
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    os.chdir(work)  # MLflow puts a SQLite store's artifacts under ./mlruns
    budgets = "[" + ", ".join(map(str, args.budgets)) + "]"
    cfg = load_config(SMOKE, ["sweep.sources=[scratch]", f"finetune.budgets={budgets}",
                              f"sweep.trials_per_cell={args.samples}", f"data.cache_dir={work / 'cache'}"])
    progress = Progress(every=1e9)
    data = prepare_study_data(cfg, log=progress.say)
    jobs = StudyJobs(cfg=cfg, data=data, store_dir=str(work / "checkpoints"), jobs_dir=str(work / "jobs"))
    tracker = StudyTracker(f"sqlite:///{work / 'mlflow.db'}", "bench-sweep", "bench-sweep")
    ray.init(num_cpus=os.cpu_count(), log_to_driver=False, runtime_env={"env_vars": TRAIN_ENV})
    concurrent = concurrency(cfg.resources, cfg.sweep.max_concurrent_trials, ray.cluster_resources())

    points = finetune_points(cfg)
    progress.stage("sweep", len(points), concurrent, rank_by=METRIC)
    started = time.time()
    ledger = Ledger(work / "trials")
    run_finetuning(jobs, points, ledger, concurrent, tracker, progress, 0, work / "optuna.db")
    sweep_wall = time.time() - started
    by_cell = {p.name: p.cell for p in points}
    sweep = [(by_cell[name], e["metrics"]) for name, e in ledger.entries().items()]

    cells = sorted({p.cell for p in points}, key=lambda c: c[3])
    lrs = np.geomspace(*cfg.finetune.lr_range_for("scratch"), args.samples)
    firsts = [p for p in points if p.sample == 0]
    started = time.time()
    grid = _grid(jobs, [(p, float(lr)) for p in firsts for lr in lrs], work)
    grid_wall = time.time() - started
    ray.shutdown()

    print(f"\nfrom scratch on the smoke target, {args.samples} trials per cell, {len(cfg.sweep.seeds)} seeds per "
          f"trial; wall: sweep {sweep_wall:.0f} s, grid {grid_wall:.0f} s")
    print(f"{'budget':>6} {'grid AUC':>9} {'sweep AUC':>10} {'ratio':>6} {'grid steps':>11} {'sweep steps':>12} "
          f"{'ratio':>6}")
    for cell in cells:
        best = {k: max(m[METRIC] for c, m in rows if c == cell) for k, rows in (("grid", grid), ("sweep", sweep))}
        steps = {k: sum(m["step"] for c, m in rows if c == cell) for k, rows in (("grid", grid), ("sweep", sweep))}
        print(f"{cell[3]:>6} {best['grid']:>9.3f} {best['sweep']:>10.3f} {best['sweep'] / best['grid']:>6.2f} "
              f"{steps['grid']:>11} {steps['sweep']:>12} {steps['sweep'] / steps['grid']:>6.2f}")


if __name__ == "__main__":
    main()
