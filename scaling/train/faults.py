"""Two faults of a training job that the loop turns into a clear outcome instead of a crash deep in a worker.

- Divergence: a loss (or an evaluation) that is no longer finite, e.g. from a learning rate far too high.
  Training on cannot recover, and the same seeded job run again diverges again, so the job ends as *diverged*: it
  reports the step and the value (`DIVERGED_*`) instead of a checkpoint; the sweep records it and does not retry it.
- Out of memory: torch's CUDA or CPU allocator refusing an allocation becomes `OutOfMemory`, whose message names
  the bytes asked for, the micro-batch and the recipe key (`grad_accum`) that lowers it.
Ray is not used here, and torch only inside the functions, so that the results table can read these keys.
"""
from __future__ import annotations

import math
import re

import numpy as np

from scaling.train.memory import divisors

#: the report keys of a diverged job: the optimizer step (1-based, as `step`) after which a value was not finite,
#: that value, and where it was: "train_loss", or "val_logits" where the step's update left weights or BatchNorm
#: statistics that overflow the evaluation behind a finite loss
DIVERGED_STEP, DIVERGED_VALUE, DIVERGED_IN = "diverged_step", "diverged_value", "diverged_in"
_CPU_ALLOCATOR = re.compile(r"DefaultCPUAllocator: can't allocate memory: you tried to allocate (\d+) bytes")
_CUDA_ALLOCATOR = re.compile(r"Tried to allocate ([\d.]+ [KMGT]?i?B)")


class OutOfMemory(RuntimeError):
    """A training job asked for more memory than its worker could get."""


class Divergence:
    """The first non-finite loss of a job's replicas, watched on the device: `observe` after every pass costs no
    device sync; `check` (at evaluations, where the loop syncs anyway) reads it, agreed across ranks."""

    def __init__(self, device):
        import torch

        self.step = torch.full((), -1, dtype=torch.long, device=device)
        self.value = torch.zeros((), device=device)

    def observe(self, loss, step: int) -> None:
        import torch

        first = ~torch.isfinite(loss) & (self.step < 0)
        self.step = torch.where(first, step, self.step)
        self.value = torch.where(first, loss.detach().float(), self.value)

    def check(self, world: int, step: int, val_logits: list[np.ndarray]) -> dict | None:
        """The report keys of the earliest divergence on any rank, or None: a training loss that was not finite,
        else (at `step`) a validation logit. Every rank must call it together."""
        import torch

        found = (int(self.step), float(self.value), "train_loss")
        bad = [z[~np.isfinite(z)] for z in val_logits]
        if found[0] < 0 and any(b.size for b in bad):
            found = (step, float(next(b for b in bad if b.size)[0]), "val_logits")
        if world > 1 and torch.distributed.is_initialized():
            every = [None] * world
            torch.distributed.all_gather_object(every, found)
            found = min((f for f in every if f[0] >= 0), default=found)
        return dict(zip((DIVERGED_STEP, DIVERGED_VALUE, DIVERGED_IN), found)) if found[0] >= 0 else None


def diverged_metrics(found: dict, metric_names) -> dict:
    """What a diverged job reports: where and how it diverged (`Divergence.check`); its validation metrics (which
    the sweep's search and scheduler expect in every report) are NaN, as no finite model is left to evaluate."""
    return {**found, **{f"val_{k}": math.nan for k in metric_names}}


def describe_divergence(found: dict) -> str:
    """'diverged at step 3 (train_loss nan)' from a report or ledger entry's metrics with the DIVERGED_* keys."""
    return f"diverged at step {found[DIVERGED_STEP]} ({found[DIVERGED_IN]} {found[DIVERGED_VALUE]:g})"


def is_out_of_memory(error: BaseException) -> bool:
    import torch

    return isinstance(error, torch.cuda.OutOfMemoryError) or bool(_CPU_ALLOCATOR.search(str(error)))


def out_of_memory(error: BaseException, *, step: int, kind: str, recipe, world: int, device) -> OutOfMemory:
    """The clear error for an allocator's refusal `error` at `step` of a job of `kind` training `recipe` (its
    `grad_accum` as planned) on `world` workers."""
    text = str(error)
    if m := _CPU_ALLOCATOR.search(text):
        asked = f"{int(m[1]) / 2**30:.2f} GiB ({m[1]} bytes)"
    else:
        m = _CUDA_ALLOCATOR.search(text)
        asked = m[1] if m else "more memory than is free"
    key = "pretrain" if kind == "pretrain" else "finetune.recipe"
    per_worker = recipe.batch_size // world
    micro = per_worker // recipe.grad_accum
    larger = [d for d in divisors(per_worker) if d > recipe.grad_accum]
    fix = (f"set {key}.grad_accum={larger[0]} ({per_worker // larger[0]} images per pass, the effective batch "
           f"stays {recipe.batch_size})" if larger else "one image per pass is already the least")
    return OutOfMemory(f"{kind} job out of memory at step {step} on {device}: it asked for {asked} with a micro-batch "
                       f"of {micro} images ({key}.batch_size {recipe.batch_size} / {world} workers / grad_accum "
                       f"{recipe.grad_accum}); {fix}, or turn on {key}.grad_checkpointing, or use a smaller model "
                       f"or resolution")
