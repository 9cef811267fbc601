"""Every job path of the platform, side by side in one run: its fixed cost per job and its throughput.

  - plain:       the loop in this process (Ray Train's local mode, called directly; no Tune, no workers),
  - tune-local:  `resources.num_workers: 0`, the default's path: each job trains inside its Tune trial's process
                 (local mode), trial actors reused,
  - tune-ray-1:  `resources.num_workers: 1`: each Tune trial runs a one-worker TorchTrainer (the cluster path),
  - ray-1/ray-2: a TorchTrainer job with one / two workers (DDP over gloo, each with half the threads), fit directly.

The Tune paths run `--jobs` small jobs one after another, as a sweep with one job slot does. A job's fixed cost
is the time that is not its steps: from its trial's start (the first job) or from the previous job's last report
(every later one) to its first step, the latter being the cost a study pays per job once warm. For the direct
paths it is fit() -> first step plus last report -> fit() returning. `pids` says how many trial processes served
the jobs (1: Tune reused the actor, so torch and timm were imported once).

    python benchmarks/bench_train_job.py [--steps 60] [--jobs 3] [--rung NAME] [--resolution 48]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import replace

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def _tune_jobs(spec, resources, jobs: int, work: str) -> tuple[list[dict], float]:
    """`jobs` copies of `spec` as a Tune sweep with one slot, each job its own Train run as in a study; returns
    each job's last result (with Tune's trial start time) and the wall time."""
    from ray import tune

    from scaling.sweep.tune import trial_resources
    from scaling.train.job import run_job

    label = f"tune-w{resources.num_workers}"

    def trainable(config):
        run_job(spec, name=f"{label}-{config['job']}", storage_path=work, resources=resources, tune=True)

    class Starts(tune.Callback):
        def __init__(self):
            self.at = {}

        def on_trial_start(self, iteration, trials, trial, **info):
            self.at[trial.config["job"]] = time.time()

    starts = Starts()
    started = time.time()
    grid = tune.Tuner(
        tune.with_resources(trainable, trial_resources(resources)),
        param_space={"job": tune.grid_search(list(range(jobs)))},
        tune_config=tune.TuneConfig(max_concurrent_trials=1, reuse_actors=True),
        run_config=tune.RunConfig(name=label, storage_path=os.path.join(work, "tune"), callbacks=[starts],
                                  verbose=0),
    ).fit()
    wall = time.time() - started
    ordered = sorted(grid, key=lambda r: r.config["job"])
    return [{**r.metrics, "trial_started_at": starts.at[r.config["job"]]} for r in ordered], wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--resolution", type=int, default=48)
    parser.add_argument("--jobs", type=int, default=3, help="jobs per Tune path (at least 2)")
    parser.add_argument("--rung", default=None, help="CPU ladder rung (default: the middle one)")
    args = parser.parse_args()

    import ray
    import torch

    from scaling.config import Recipe, ResourcesConfig
    from scaling.data.registry import open_dataset
    from scaling.data.shards import Preprocess, prepare_shards
    from scaling.models import LADDERS
    from scaling.study import TRAIN_ENV
    from scaling.train.job import run_job, run_local
    from scaling.train.spec import JobSpec

    cpus = os.cpu_count() or 2
    rungs = LADDERS["cpu"].rungs
    rung = args.rung or rungs[len(rungs) // 2].name
    work = tempfile.mkdtemp(prefix="bench-train-")
    dataset = open_dataset("synthetic-covidx", size=1024, test_size=64, image_size=args.resolution)
    shards = prepare_shards(dataset, Preprocess(resolution=args.resolution), work)
    recs = shards.records
    train = tuple(int(i) for i in recs["index"][recs["split"] == "train"])
    recipe = Recipe(steps=args.steps, batch_size=args.batch_size, lr=0.05, eval_every=args.steps)
    spec = JobSpec(kind="scratch", ladder="cpu", model=rung, shards=str(shards.path), train=train[:-128],
                   val=train[-128:], test=(), recipe=recipe, seeds=(0,))
    images = args.steps * args.batch_size

    ray.init(num_cpus=cpus, log_to_driver=False, runtime_env={"env_vars": TRAIN_ENV})  # as a study runs its jobs
    torch.set_num_threads(cpus)
    run_local(replace(spec, recipe=replace(recipe, steps=5, eval_every=5)), name="warm-up", storage_path=work)
    rows = []  # label, img/s, first job's start s, fixed s per later job, teardown s, wall s per job, pids
    for label, workers in (("plain", 0), ("ray-1", 1), ("ray-2", 2)):
        started = time.time()
        if workers == 0:  # after a warm-up job, so that first-use costs of torch do not count against it
            result = run_local(spec, name=label, storage_path=work)
        else:
            result = run_job(spec, name=label, storage_path=work,
                             resources=ResourcesConfig(num_workers=workers, cpus_per_worker=cpus / workers))
        ended = time.time()
        m = result.metrics
        start, teardown = m["first_step_at"] - started, ended - m["reported_at"]
        rows.append((label, images / m["train_seconds"], start, start + teardown, teardown, ended - started, "-"))
    for label, workers in (("tune-local", 0), ("tune-ray-1", 1)):
        results, wall = _tune_jobs(spec, ResourcesConfig(num_workers=workers, cpus_per_worker=cpus), args.jobs, work)
        gaps = [b["first_step_at"] - a["reported_at"] for a, b in zip(results, results[1:])]
        throughput = statistics.mean(images / m["train_seconds"] for m in results)
        rows.append((label, throughput, results[0]["first_step_at"] - results[0]["trial_started_at"],
                     statistics.mean(gaps), float("nan"), wall / len(results), str(len({m["pid"] for m in results}))))
    ray.shutdown()

    base = rows[0][1]
    print(f"\nrung {rung} ({args.resolution} px, batch {args.batch_size}, {args.steps} steps, {cpus} cores; "
          f"Tune paths: {args.jobs} jobs in a row)")
    head = (f"{'job path':<11} {'img/s':>7} {'ratio':>6} {'1st job start s':>16} {'fixed s/job':>12} "
            f"{'teardown s':>11} {'wall s/job':>11} {'pids':>5}")
    print(head)
    for label, tp, start, fixed, teardown, wall, pids in rows:
        print(f"{label:<11} {tp:>7.1f} {tp / base:>6.2f} {start:>16.1f} {fixed:>12.2f} {teardown:>11.1f} "
              f"{wall:>11.1f} {pids:>5}")


if __name__ == "__main__":
    main()
