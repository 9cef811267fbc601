"""A stand-in for studies/scaling_law.py with the same command-line contract, for the time-limit test of
ray_cluster: a study longer than one job. It runs one-second steps as Ray tasks on the cluster at --address;
SIGUSR1/SIGTERM make it save how far it got and exit 75. Its first attempt has more work than any job has time
for (it runs until it is told to stop); a resumed attempt completes after `--steps-after-resume` more steps and
writes `summary.json` last. Every attempt is appended to `<out>/standin_attempts.jsonl` for the test to read,
with what it saw of MLflow's login: its own request to the server with the credentials of its environment, and
whether its Ray tasks have them too."""
from __future__ import annotations

import argparse
import base64
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
    p.add_argument("--rehearse", action="store_true")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    out = Path(args.out)
    state = out / "standin_state.json"
    done = json.loads(state.read_text())["done"] if state.is_file() else 0
    target = done + args.steps_after_resume if state.is_file() else None
    attempt = {"job": os.environ.get("SLURM_JOB_ID"), "from": done, "rehearse": args.rehearse}

    # the study's own request to the MLflow REST API, with the login the job gave it
    login = f"{os.environ['MLFLOW_TRACKING_USERNAME']}:{os.environ['MLFLOW_TRACKING_PASSWORD']}"
    request = urllib.request.Request(f"{args.tracking_uri}/api/2.0/mlflow/experiments/get?experiment_id=0",
                                     headers={"Authorization": "Basic " + base64.b64encode(login.encode()).decode()})
    with urllib.request.urlopen(request, timeout=120) as r:  # the server's first login check is slow on a busy node
        attempt["mlflow"] = r.status
    import ray

    ray.init(address=args.address, log_to_driver=False)
    _catch_stop_signals()  # ray.init puts in its own SIGTERM handler

    @ray.remote(num_cpus=1)
    def step() -> bool:
        time.sleep(1)
        return "MLFLOW_TRACKING_PASSWORD" in os.environ  # the nodes can log to MLflow too

    state.write_text(json.dumps({"done": done}))
    nodes_logged_in = []
    while not stop and (target is None or done < target):
        nodes_logged_in.append(ray.get(step.remote()))
        done += 1
        state.write_text(json.dumps({"done": done}))
    attempt.update(to=done, stopped_by=stop[0] if stop else None, nodes_logged_in=all(nodes_logged_in))
    with (out / "standin_attempts.jsonl").open("a") as f:
        f.write(json.dumps(attempt) + "\n")
    if stop:
        return 75
    (out / "summary.json").write_text(json.dumps({"steps": done}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
