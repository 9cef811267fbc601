"""One training job = one Ray Train V2 `TorchTrainer` run: on Train workers (DDP over gloo on CPU, nccl on GPU),
or in the calling process (Train's local mode, for jobs small enough that starting workers would cost more)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from scaling.train.faults import DIVERGED_IN, DIVERGED_STEP, DIVERGED_VALUE
from scaling.train.loop import train_loop
from scaling.train.session import LocalSession
from scaling.train.spec import STATE_FILE, JobSpec

#: a start that keeps failing (e.g. workers that cannot be placed) must end, not retry for ever
CONTROLLER_FAILURE_LIMIT = 3


def _worker(config: dict) -> dict:
    if "local_dir" in config:
        return train_loop(config["spec"], LocalSession(config["local_dir"], tune=config["tune"]))
    return train_loop(config["spec"])


def run_job(spec: JobSpec, *, name: str, storage_path: str | Path, resources, tune: bool = False):
    """Fit one job and return Ray Train's `Result` (a job that fails after its retries raises).

    `name` must be stable for the job: running it again with the same name and storage resumes from the
    job's last checkpoint, which is how an interrupted study continues. `tune`: forward every report to the
    Tune trial this runs in. `resources` is a scaling.config.ResourcesConfig; `num_workers: 0` trains in this
    process (Train's local mode, see `run_local`), otherwise on that many Train workers."""
    if resources.num_workers == 0:
        torch.set_num_threads(max(1, int(resources.cpus_per_worker)))  # what Ray gives a worker of that size
        return run_local(spec, name=name, storage_path=storage_path, tune=tune)
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    per_worker = {"CPU": resources.cpus_per_worker}
    if resources.use_gpu:
        per_worker["GPU"] = resources.gpus_per_worker
    callbacks = []
    if tune:
        from ray.tune.integration.ray_train import TuneReportCallback

        callbacks.append(TuneReportCallback())
    trainer = TorchTrainer(
        _worker,
        train_loop_config={"spec": spec},
        scaling_config=ScalingConfig(num_workers=resources.num_workers, use_gpu=resources.use_gpu,
                                     resources_per_worker=per_worker),
        run_config=RunConfig(
            name=name,
            storage_path=str(Path(storage_path).resolve()),
            failure_config=FailureConfig(max_failures=resources.max_failures,
                                         controller_failure_limit=CONTROLLER_FAILURE_LIMIT),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=callbacks,
        ),
    )
    return trainer.fit()


def run_local(spec: JobSpec, *, name: str, storage_path: str | Path, tune: bool = False):
    """The same loop in this process: Train's local mode (no worker processes, no DDP, no fault tolerance).
    Local mode keeps checkpoints in memory only, so the loop's `LocalSession` writes them to
    `storage_path/name/` itself and resumes from there: the job restarts where it stopped, like a Train run
    under the same name. The path of small jobs (each inside its Tune trial) and of tests of the loop."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    folder = Path(storage_path).resolve() / name
    result = TorchTrainer(_worker, train_loop_config={"spec": spec, "local_dir": str(folder), "tune": tune},
                          scaling_config=ScalingConfig(num_workers=0),
                          run_config=RunConfig(name=name, storage_path=str(folder.parent))).fit()
    session = LocalSession(folder, tune=tune)
    session.ended()
    # the loop's final metrics and its persisted checkpoint, whether or not its reports went to Tune
    return dataclasses.replace(result, metrics=result.return_value, path=str(folder), checkpoint=session.latest())


def divergence(result) -> dict | None:
    """Where a finished job diverged (the loop's `DIVERGED_*` keys), or None: rank 0's return value says, on
    either path (a diverged job reports no checkpoint, so Train's `Result.metrics` would not)."""
    metrics = result.return_value or {}
    return {k: metrics[k] for k in (DIVERGED_STEP, DIVERGED_VALUE, DIVERGED_IN)} if DIVERGED_STEP in metrics else None


def export_weights(result, dest: str | Path) -> None:
    """Write the final model weights of a finished job (its first seed's) as a plain state-dict file: the
    checkpoint-store artefact that later jobs start from (`JobSpec.init`)."""
    with result.checkpoint.as_directory() as d:
        state = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=True)
    torch.save(state["replicas"][0]["model"], dest)
