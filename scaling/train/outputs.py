"""What a finished job leaves behind, found from the driver: its final training state and test predictions.

Contract (what saliency, the predictions copy and the paired bootstrap rely on):
  - `final_state(jobs_dir, name)` -> the dict the loop saved at the job's last report ({"replicas": [{"model":
    state_dict, ...} per seed in JobSpec.seeds order], "step": int}), on the CPU;
  - `final_predictions(jobs_dir, name)` -> path of its PREDICTIONS_FILE (npz: probs (seeds, n_test) float32,
    labels (n_test,), index (n_test,) test shard rows in JobSpec.test order, seeds), present once the job ran its
    final evaluation;
  - `collect_predictions(jobs_dir, names, dest)` copies them to `dest/<name>.npz`.
Layout read: Ray Train V2 keeps a run's checkpoints as `<storage_path>/<name>/checkpoint_<timestamp>`, a local-mode
job's `LocalSession` as `<storage_path>/<name>/checkpoint_<step, 9 digits>`; both sort as text, the newest last
(`run_job` gives each job a stable name under the study's jobs/ folder).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import torch

from scaling.train.spec import PREDICTIONS_FILE, STATE_FILE


class JobOutputError(FileNotFoundError):
    """A job has no checkpoint (or no predictions) where the driver looks for it."""


def final_checkpoint(jobs_dir: str | Path, name: str) -> Path:
    """The newest checkpoint directory of job `name`."""
    run = Path(jobs_dir) / name
    found = sorted(p for p in run.glob("checkpoint_*") if (p / STATE_FILE).is_file())
    if not found:
        raise JobOutputError(f"job {name!r} has no checkpoint with {STATE_FILE} under {run}")
    return found[-1]


def final_state(jobs_dir: str | Path, name: str) -> dict:
    return torch.load(final_checkpoint(jobs_dir, name) / STATE_FILE, map_location="cpu", weights_only=True)


def final_predictions(jobs_dir: str | Path, name: str) -> Path:
    path = final_checkpoint(jobs_dir, name) / PREDICTIONS_FILE
    if not path.is_file():
        raise JobOutputError(f"job {name!r}: its last checkpoint {path.parent} has no {PREDICTIONS_FILE} "
                             "(the job did not reach its final evaluation, or has no test split)")
    return path


def collect_predictions(jobs_dir: str | Path, names: list[str], dest: str | Path) -> list[Path]:
    """Copy the predictions of the jobs `names` to `dest/<name>.npz`; jobs without any are left out."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in names:
        try:
            source = final_predictions(jobs_dir, name)
        except JobOutputError:
            continue
        copied.append(Path(shutil.copyfile(source, dest / f"{name}.npz")))
    return copied
