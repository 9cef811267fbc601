"""One training job = one Ray Train V2 `TorchTrainer` run (DDP over gloo on CPU, nccl on GPU)."""
from __future__ import annotations

from pathlib import Path

import torch

from scaling.train.loop import STATE_FILE, JobSpec, train_loop

#: a start that keeps failing (e.g. workers that cannot be placed) must end, not retry for ever
CONTROLLER_FAILURE_LIMIT = 3


def _worker(config: dict) -> dict:
    return train_loop(config["spec"])


def run_job(spec: JobSpec, *, name: str, storage_path: str | Path, resources, callbacks=()):
    """Fit one job and return Ray Train's `Result` (a job that fails after its retries raises).

    `name` must be stable for the job: constructing the trainer again with the same name and storage
    resumes from the job's last checkpoint, which is how an interrupted study continues.
    `resources` is a scaling.config.ResourcesConfig."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    per_worker = {"CPU": resources.cpus_per_worker}
    if resources.use_gpu:
        per_worker["GPU"] = resources.gpus_per_worker
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
            callbacks=list(callbacks),
        ),
    )
    return trainer.fit()


def run_local(spec: JobSpec, *, name: str, storage_path: str | Path):
    """The same loop in this process: Train's local mode (no worker processes, DDP, persistence or fault
    tolerance). The plain baseline of benchmarks and a fast path for tests of the loop itself."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    return TorchTrainer(_worker, train_loop_config={"spec": spec}, scaling_config=ScalingConfig(num_workers=0),
                        run_config=RunConfig(name=name, storage_path=str(storage_path))).fit()


def export_weights(result, dest: str | Path) -> None:
    """Write the final model weights of a finished job (its first seed's) as a plain state-dict file: the
    checkpoint-store artefact that later jobs start from (`JobSpec.init`)."""
    with result.checkpoint.as_directory() as d:
        state = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=True)
    torch.save(state["replicas"][0]["model"], dest)
