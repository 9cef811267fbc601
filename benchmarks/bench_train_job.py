"""A training job on Ray Train against the same loop run in one plain process, side by side.

Prints steady-state throughput (images/s over the training steps, as timed inside the loop) for
  - plain:   the loop in this process (Ray Train's local mode: no worker processes, no DDP),
  - ray-1:   a TorchTrainer job with one worker,
  - ray-2:   a TorchTrainer job with two workers (DDP over gloo, each with half the threads),
and the fixed cost of each job: from fit() to the first step, and from the last report to fit() returning.

    python benchmarks/bench_train_job.py [--steps 200] [--rung NAME] [--resolution 48]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--resolution", type=int, default=48)
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
    from scaling.train.loop import JobSpec

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

    ray.init(num_cpus=cpus, log_to_driver=False, runtime_env={"env_vars": TRAIN_ENV})  # as a study runs its jobs
    rows = []
    for label, workers in (("plain", 0), ("ray-1", 1), ("ray-2", 2)):
        started = time.time()
        if workers == 0:  # the plain-PyTorch baseline
            torch.set_num_threads(cpus)
            result = run_local(spec, name=label, storage_path=work)
        else:
            result = run_job(spec, name=label, storage_path=work,
                             resources=ResourcesConfig(num_workers=workers, cpus_per_worker=cpus / workers))
        ended = time.time()
        m = result.metrics
        throughput = args.steps * args.batch_size / m["train_seconds"]
        rows.append((label, throughput, m["first_step_at"] - started, ended - m["reported_at"], ended - started))
    ray.shutdown()

    base = rows[0][1]
    print(f"\nrung {rung} ({args.resolution} px, batch {args.batch_size}, {args.steps} steps, {cpus} cores)")
    print(f"{'job':<7} {'img/s':>9} {'ratio':>7} {'fit->1st step s':>16} {'teardown s':>11} {'wall s':>8}")
    for label, tp, start, teardown, wall in rows:
        print(f"{label:<7} {tp:>9.1f} {tp / base:>7.2f} {start:>16.1f} {teardown:>11.1f} {wall:>8.1f}")


if __name__ == "__main__":
    main()
