"""A job's replicas: one model per seed with its optimizer, built, saved into a checkpoint and resumed from one.

The state a checkpoint holds (STATE_FILE): {"replicas": [{"model", "optimizer", "scheduler": state dicts,
"loss": float} per seed in JobSpec.seeds order], "step": int}; scaling.train.outputs reads it from the driver.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from scaling import models
from scaling.train.augment import crop_size
from scaling.train.memory import apply_checkpointing
from scaling.train.optim import make_optimizer, make_scheduler
from scaling.train.spec import STATE_FILE, JobSpec


@dataclass
class Replica:
    """One seed's model and optimizer state."""

    seed: int
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    augment_rng: torch.Generator = field(default_factory=torch.Generator)
    #: the last step's training loss: a tensor, read only at evaluations (no device sync per step)
    loss: torch.Tensor | float = float("nan")


def model_for_shards(ladder: str, name: str, num_outputs: int, resolution: int,
                     pretrained: str | None = None) -> torch.nn.Module:
    """The rung `name` with a head of `num_outputs`, sized (when it has patches) to the crop it is fed of
    `resolution` images; from the weights file `pretrained` when given."""
    patch = models.rung(ladder, name).patch
    return models.create_model(ladder, name, num_classes=num_outputs, pretrained=pretrained,
                               img_size=crop_size(resolution) if patch else None)


def build_replica(spec: JobSpec, seed: int, num_outputs: int, resolution: int, session, device) -> Replica:
    """Seed `seed`'s model (from `spec.init` when given: its head kept only when it fits, and always replaced by
    a zero-initialised one for fine-tuning, as BiT does), placed by `session`, with its optimizer."""
    torch.manual_seed(seed)
    model = model_for_shards(spec.ladder, spec.model, num_outputs, resolution, pretrained=spec.init)
    if spec.init is not None and spec.kind == "finetune":
        models.new_head(model, num_outputs, zero_init=True)
    apply_checkpointing(model, spec.recipe)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    model = session.prepare_model(model, device)
    optimizer = make_optimizer(model, spec.recipe)
    return Replica(seed, model, optimizer, make_scheduler(optimizer, spec.recipe))


def resume(checkpoint, replicas: list[Replica], device) -> int:
    """Load the replicas' state from `checkpoint` (a Ray Train Checkpoint); returns the step it was saved at."""
    with checkpoint.as_directory() as d:
        state = torch.load(Path(d) / STATE_FILE, map_location=device, weights_only=True)
    for replica, saved in zip(replicas, state["replicas"], strict=True):
        unwrap(replica.model).load_state_dict(saved["model"])
        replica.optimizer.load_state_dict(saved["optimizer"])
        replica.scheduler.load_state_dict(saved["scheduler"])
        replica.loss = saved.get("loss", float("nan"))  # what a job restarted after its last step reports
    return state["step"]


def save(folder: str | Path, replicas: list[Replica], step: int) -> None:
    """Write the replicas' state at `step` to `folder`/STATE_FILE."""
    torch.save({"replicas": [{"model": unwrap(r.model).state_dict(), "optimizer": r.optimizer.state_dict(),
                              "scheduler": r.scheduler.state_dict(), "loss": float(r.loss)} for r in replicas],
                "step": step},
               Path(folder) / STATE_FILE)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DDP wrapper (or the model itself)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
