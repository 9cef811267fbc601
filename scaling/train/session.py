"""Where the training loop reports to and resumes from: Ray Train's session, or the job's own folder.

A Ray Train worker (`TrainSession`) reports through `ray.train.report`, which persists checkpoints in the run's
storage and hands the last one back after a restart. Train's local mode (`ScalingConfig(num_workers=0)`, the job
trained inside its Tune trial's process) keeps reports in memory only and calls no RunConfig callbacks, so a
`LocalSession` persists each checkpoint itself under the job's storage folder (published atomically, the last two
kept while it trains, as the Train path's `CheckpointConfig(num_to_keep=2)`; only the final one once it has
ended), resumes from the newest one, and forwards metrics to Tune with `ray.tune.report` (what
`TuneReportCallback` does on the Train path).
"""
from __future__ import annotations

import re
import shutil
import tempfile
import warnings
from pathlib import Path

from scaling.files import MANIFEST, publish, verify

#: checkpoints a local job keeps while it trains (the newest one is what a restart resumes from; the one before
#: is there in case the newest is found damaged)
KEEP = 2
_NAME = re.compile(r"checkpoint_(\d{9})")


class TrainSession:
    """Ray Train's own session: the path of multi-worker jobs (DDP, FailureConfig, persistence by Train)."""

    def rank_and_world(self) -> tuple[int, int]:
        import ray.train

        ctx = ray.train.get_context()
        return ctx.get_world_rank(), ctx.get_world_size()

    def prepare_model(self, model, device):
        import ray.train.torch

        return ray.train.torch.prepare_model(model)  # to the device, and DDP across workers

    def latest(self):
        import ray.train

        return ray.train.get_checkpoint()

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        import ray.train

        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(checkpoint_dir)
                         if checkpoint_dir else None)


class LocalSession:
    """A job trained in this process: checkpoints under `folder` (`checkpoint_<step>/`, each with a manifest
    written last, so a half-written one is never resumed from), metrics to Tune when `tune` is set."""

    def __init__(self, folder: str | Path, *, tune: bool):
        self.folder, self.tune = Path(folder), tune
        self.folder.mkdir(parents=True, exist_ok=True)
        for partial in self.folder.glob(".tmp-*"):  # left by a process killed while writing
            shutil.rmtree(partial, ignore_errors=True)

    # Ray Train's context and prepare_model refuse to run inside a Tune trial, and one process needs neither
    def rank_and_world(self) -> tuple[int, int]:
        return 0, 1

    def prepare_model(self, model, device):
        return model.to(device)

    def _finished(self) -> list[Path]:
        found = [p for p in self.folder.iterdir() if _NAME.fullmatch(p.name) and (p / MANIFEST).is_file()]
        return sorted(found, key=lambda p: p.name)

    def latest(self):
        import ray.train

        for found in reversed(self._finished()):  # the newest one still as it was written (sha256, see publish)
            problem = verify(found)
            if not problem:
                return ray.train.Checkpoint.from_directory(str(found))
            warnings.warn(f"not resuming from {found}: {problem}; removed it", stacklevel=2)
            shutil.rmtree(found)  # else its step would be taken as written when reached again
        return None

    def ended(self) -> None:
        """The job has ended: keep only its final checkpoint. The one before could only serve a restart, and
        each holds every seed's model and optimiser state (550 MB for R50x1 with 3 seeds), so kept for every
        finished trial they would double what a study's jobs leave on disk."""
        for old in self._finished()[:-1]:
            shutil.rmtree(old, ignore_errors=True)

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        import ray.train

        checkpoint = None
        if checkpoint_dir:
            final = self.folder / f"checkpoint_{int(metrics['step']):09d}"
            if not (final / MANIFEST).is_file():  # else the end reported again after a restart: same state
                tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.folder))
                shutil.copytree(checkpoint_dir, tmp, dirs_exist_ok=True)
                if not publish(tmp, final, {"step": metrics["step"]}):
                    raise FileExistsError(f"{final} exists without a finished checkpoint (written by another "
                                          "job under the same name?)")
                for old in self._finished()[:-KEEP]:
                    shutil.rmtree(old, ignore_errors=True)
            checkpoint = ray.train.Checkpoint.from_directory(str(final))
        if self.tune:  # ray.train.report refuses to run inside a Tune trial: run_local builds the Result
            import ray.tune

            ray.tune.report(metrics)
        else:
            ray.train.report(metrics, checkpoint=checkpoint)
