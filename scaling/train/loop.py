"""The per-worker training loop: pre-training, fine-tuning and from-scratch training are one loop.

Runs inside a Ray Train worker (or in-process in Train's local mode). The job is described by a `JobSpec`;
batches are a pure function of (seed, step) (see batches.py), so a job restarted from its last checkpoint
finishes with exactly the steps and data of an uninterrupted one.

A job trains one model per seed in `JobSpec.seeds`, side by side in one process (replicas: same data and
hyper-parameters, their own initialisation, batch order and augmentation), and reports the mean of their
metrics. The seeds of a fine-tuning trial so share one Ray Train job instead of each paying for its start,
and the hyper-parameter search sees a seed-averaged validation metric rather than one seed's luck.

`train_loop` reads top to bottom: set up the worker and its replicas, then `train_step` per micro-batch and
`evaluate` (which reports, with a checkpoint) every `recipe.eval_every` steps, or `report_divergence` once a
loss is no longer finite. What changes as it runs (step, micro-batch, clock) is one `LoopState`.
"""
from __future__ import annotations

import contextlib
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from scaling.data.shards import ShardDataset, ShardSet
from scaling.data.subsets import balanced_sampler_weights
from scaling.evaluate.metrics import METRICS
from scaling.evaluate.job_metrics import final_evaluation, replica_metrics
from scaling.train import faults, memory
from scaling.train.augment import crop_size, prepare_images
from scaling.train.batches import StepBatches
from scaling.train.replicas import Replica, build_replica, resume, save, unwrap
from scaling.train.session import TrainSession
from scaling.train.spec import PREDICTIONS_FILE, JobSpec


@dataclass(frozen=True)
class Worker:
    """This worker's share of a job: its place, the recipe as planned for its memory, the evaluation splits (its
    partition of them) and where it reports."""

    spec: JobSpec
    recipe: object  # scaling.config.Recipe, grad_accum set by the memory plan
    session: object  # scaling.train.session.TrainSession or LocalSession
    rank: int
    world: int
    device: torch.device
    autocast: torch.autocast
    kind: str  # the task's kind: binary, multiclass or multilabel
    val_set: ShardDataset
    test_set: ShardDataset | None
    #: echoed into every report: the micro-batch plan and the step the job (re)started from
    memory_metrics: dict
    start: int

    @property
    def on_gpu(self) -> bool:
        return self.device.type == "cuda"


@dataclass
class LoopState:
    """Where the loop is: optimizer steps done, micro-batches into the current one, and the time spent in steps
    (data loading included) and in evaluation, to tell training from overhead."""

    step: int
    micro: int = 0
    clock: dict = field(default_factory=lambda: {"train_seconds": 0.0, "eval_seconds": 0.0,
                                                 "first_step_at": time.time()})


def train_loop(spec: JobSpec, session=None) -> dict:
    """Train per `spec`, evaluating every `recipe.eval_every` steps; returns the final metrics (rank 0).
    `session` (scaling.train.session) is where reports and checkpoints go: Ray Train's unless given."""
    import ray.train.torch

    session = session or TrainSession()
    rank, world = session.rank_and_world()
    device = ray.train.torch.get_device()
    on_gpu = device.type == "cuda"
    shards = ShardSet.open(spec.shards)
    task, resolution = shards.task, shards.preprocess.resolution
    replicas = [build_replica(spec, seed, task.num_outputs, resolution, session, device) for seed in spec.seeds]
    checkpoint = session.latest()
    start = resume(checkpoint, replicas, device) if checkpoint else 0

    # the memory preflight's pass: one replica, blank images (on CPU an estimate: see memory.cpu_peak)
    model, side = unwrap(replicas[0].model), crop_size(resolution)
    peak = (memory.gpu_peak(model, task.kind, task.num_outputs, side, device, spec.bf16, loss) if on_gpu else
            memory.cpu_peak(model, task.kind, task.num_outputs, side, loss))
    recipe, memory_metrics = memory.plan_micro_batches(spec.recipe, world, rank, peak,
                                                       memory.gpu_budget(device) if on_gpu else memory.cpu_budget())
    train_set = ShardDataset(shards, spec.train)
    val_set = ShardDataset(shards, spec.val).partition(rank, world)
    test_set = ShardDataset(shards, spec.test).partition(rank, world) if spec.test else None
    weights = balanced_sampler_weights(train_set.labels) if recipe.balanced_sampling else None
    loaders = [torch.utils.data.DataLoader(
        train_set, num_workers=spec.loader_workers, pin_memory=on_gpu,
        batch_sampler=StepBatches(np.arange(len(train_set)), recipe.batch_size, r.seed, start=start,
                                  stop=recipe.steps, rank=rank, world_size=world, grad_accum=recipe.grad_accum,
                                  weights=weights)) for r in replicas]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=on_gpu and spec.bf16)
    worker = Worker(spec, recipe, session, rank, world, device, autocast, task.kind, val_set, test_set,
                    memory_metrics, start)

    state = LoopState(step=start)
    divergence = faults.Divergence(device)
    if start == recipe.steps:  # restarted after the last checkpoint: nothing to train, report the end again
        return evaluate(worker, replicas, state, divergence)
    tick = time.perf_counter()
    for r in replicas:
        r.model.train()
    try:
        for batches in zip(*loaders):
            if not train_step(worker, replicas, batches, state, divergence):
                continue  # gradients accumulate until the step's last micro-batch
            if state.step % recipe.eval_every == 0 or state.step == recipe.steps:
                state.clock["train_seconds"] += time.perf_counter() - tick
                metrics = evaluate(worker, replicas, state, divergence)
                if faults.DIVERGED_STEP in metrics:
                    return metrics
                tick = time.perf_counter()
    except RuntimeError as error:
        if not faults.is_out_of_memory(error):
            raise
        raise faults.out_of_memory(error, step=state.step + 1, kind=spec.kind, recipe=recipe, world=world,
                                   device=device) from error
    return metrics


def train_step(worker: Worker, replicas: list[Replica], batches, state: LoopState,
               divergence: faults.Divergence) -> bool:
    """One micro-batch of every replica (`batches`: one (images, labels) per replica), and after the last
    micro-batch of a step the optimizer step; returns whether a step was completed."""
    recipe = worker.recipe
    last_micro = state.micro == recipe.grad_accum - 1
    for r, (images, labels) in zip(replicas, batches):
        # augmentation, like the batches, is a function of (seed, step): a resumed job replays it exactly
        r.augment_rng.manual_seed(hash((r.seed, state.step, state.micro, worker.rank)) & 0x7FFFFFFF)
        images = prepare_images(images, worker.device, train=recipe.augment, rng=r.augment_rng,
                                on_gpu=worker.on_gpu)
        with _no_sync_unless(r.model, last_micro), worker.autocast:
            value = loss(worker.kind, r.model(images), labels.to(worker.device))
        divergence.observe(value, state.step + 1)
        (value / recipe.grad_accum).backward()
        if last_micro:
            r.optimizer.step()
            r.optimizer.zero_grad(set_to_none=True)
            r.scheduler.step()
            r.loss = value.detach()  # a tensor: no device sync per step
    state.micro += 1
    if not last_micro:
        return False
    state.step, state.micro = state.step + 1, 0
    return True


def evaluate(worker: Worker, replicas: list[Replica], state: LoopState, divergence: faults.Divergence) -> dict:
    """Validation metrics of the replicas at `state.step` (at the last step also the test split's, see
    scaling.evaluate.job_metrics), reported with a checkpoint; a divergence found instead is reported as such."""
    started = time.perf_counter()
    val = [logits_and_targets(r.model, worker.val_set, worker) for r in replicas]
    if found := divergence.check(worker.world, state.step, [z for z, _ in val]):
        return report_divergence(worker, state, found)
    metrics = {"step": state.step, "train_loss": float(np.mean([float(r.loss) for r in replicas])),
               "lr": replicas[0].scheduler.get_last_lr()[0], **_prefixed("val", replica_metrics(worker.kind, val))}
    predictions = None
    if state.step == worker.recipe.steps and worker.test_set is not None:
        test = [logits_and_targets(r.model, worker.test_set, worker) for r in replicas]
        final, predictions = final_evaluation(worker.kind, val, test, worker.spec.test, worker.spec.seeds)
        metrics.update(_prefixed("test", final))
    state.clock["eval_seconds"] += time.perf_counter() - started
    if worker.on_gpu:
        metrics["peak_memory_gb"] = torch.cuda.max_memory_allocated(worker.device) / 2**30
    metrics.update(worker.spec.tags, **state.clock, **worker.memory_metrics, start_step=worker.start,
                   reported_at=time.time())
    report_with_checkpoint(worker, metrics, replicas, state.step, predictions)
    for r in replicas:
        r.model.train()
    return metrics


def report_divergence(worker: Worker, state: LoopState, found: dict) -> dict:
    """Report where the job diverged (`faults.Divergence.check`) and return it: the job ends there. No checkpoint
    of weights that are no longer finite: the job's last one stays the one before."""
    metrics = {"step": state.step, **faults.diverged_metrics(found, METRICS), **worker.spec.tags, **state.clock,
               **worker.memory_metrics, "start_step": worker.start, "reported_at": time.time()}
    worker.session.report(_scalars(metrics), None)
    return metrics


def report_with_checkpoint(worker: Worker, metrics: dict, replicas: list[Replica], step: int,
                           predictions: dict | None = None) -> None:
    """Report metrics with a checkpoint of the full training state (written by rank 0 only), and at the final
    evaluation the test predictions beside it."""
    metrics = _scalars(metrics)
    if worker.rank != 0:
        worker.session.report(metrics, None)
        return
    with tempfile.TemporaryDirectory() as d:
        save(d, replicas, step)
        if predictions is not None:
            np.savez(Path(d) / PREDICTIONS_FILE, **predictions)
        worker.session.report(metrics, d)


def loss(kind: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The training loss of a task `kind`: cross-entropy (multiclass) or binary cross-entropy per label."""
    logits = logits.float()
    if kind == "multiclass":
        return F.cross_entropy(logits, labels.long())
    if kind == "binary":
        return F.binary_cross_entropy_with_logits(logits.squeeze(1), labels.float())
    known = ~torch.isnan(labels)  # multilabel: uncertain / missing labels carry no loss
    losses = F.binary_cross_entropy_with_logits(logits, torch.nan_to_num(labels), reduction="none")
    return (losses * known).sum() / known.sum().clamp(min=1)


@torch.no_grad()
def logits_and_targets(model, dataset, worker: Worker, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Float32 logits and targets over a split, in the split's order: each rank scores its contiguous partition,
    then every rank holds the union."""
    model.eval()
    logits, labels = [], []
    for images, targets in torch.utils.data.DataLoader(dataset, batch_size=batch_size):
        images = prepare_images(images, worker.device, train=False, rng=None, on_gpu=worker.on_gpu)
        with worker.autocast:
            logits.append(model(images).float().cpu().numpy())
        labels.append(targets.numpy())
    part = (logits, labels)
    if worker.world > 1 and torch.distributed.is_initialized():
        gathered = [None] * worker.world
        torch.distributed.all_gather_object(gathered, part)
        part = ([z for g in gathered for z in g[0]], [y for g in gathered for y in g[1]])
    return np.concatenate(part[0]), np.concatenate(part[1])


def _prefixed(prefix: str, metrics: dict) -> dict:
    return {f"{prefix}_{k}": v for k, v in metrics.items()}


def _scalars(metrics: dict) -> dict:
    """What a report carries: scalar values only."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool))}


def _no_sync_unless(model, sync: bool):
    """Skip the DDP all-reduce on all but the last micro-batch of a gradient-accumulation step."""
    if sync or not isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return contextlib.nullcontext()
    return model.no_sync()
