"""A stand-in for studies/scaling_law.py with the same command-line contract, for the time-limit test of
ray_cluster: a study longer than one job. It runs one-second steps as Ray tasks on the cluster at --address;
SIGUSR1/SIGTERM make it save how far it got and exit 75. Its first attempt has more work than any job has time
for (it runs until it is told to stop); a resumed attempt completes after `--steps-after-resume` more steps and
writes `summary.json` last. Every attempt is appended to `<out>/standin_attempts.jsonl` for the test to read."""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import urllib.request
from pathlib import Path

stop = []


def _catch_stop_signals() -> None:
    signal.signal(signal.SIGUSR1, lambda *_: stop.append("USR1"))
    signal.signal(signal.SIGTERM, lambda *_: stop.append("TERM"))


# first of all: a stop request may come while Ray is still being imported
_catch_stop_signals()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--steps-after-resume", type=int, required=True)
    p.add_argument("--config", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--address", required=True)
    p.add_argument("--tracking-uri", required=True)
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    out = Path(args.out)
    state = out / "standin_state.json"
    done = json.loads(state.read_text())["done"] if state.is_file() else 0
    target = done + args.steps_after_resume if state.is_file() else None
    attempt = {"job": os.environ.get("SLURM_JOB_ID"), "from": done}

    with urllib.request.urlopen(f"{args.tracking_uri}/health", timeout=10) as r:  # the MLflow server answers
        attempt["mlflow"] = r.status
    import ray

    ray.init(address=args.address, log_to_driver=False)
    _catch_stop_signals()  # ray.init puts in its own SIGTERM handler

    @ray.remote(num_cpus=1)
    def step(i: int) -> int:
        time.sleep(1)
        return i

    state.write_text(json.dumps({"done": done}))
    while not stop and (target is None or done < target):
        ray.get(step.remote(done))
        done += 1
        state.write_text(json.dumps({"done": done}))
    attempt.update(to=done, stopped_by=stop[0] if stop else None)
    with (out / "standin_attempts.jsonl").open("a") as f:
        f.write(json.dumps(attempt) + "\n")
    if stop:
        return 75
    (out / "summary.json").write_text(json.dumps({"steps": done}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
