"""The per-worker training loop: pre-training, fine-tuning and from-scratch training are one loop.

Runs inside a Ray Train worker (or in-process in Train's local mode). The job is described by a `JobSpec`;
batches are a pure function of (seed, step) (see batches.py), so a job restarted from its last checkpoint
finishes with exactly the steps and data of an uninterrupted one.

A job trains one model per seed in `JobSpec.seeds`, side by side in one process (replicas: same data and
hyper-parameters, their own initialisation, batch order and augmentation), and reports the mean of their
metrics. The seeds of a fine-tuning trial so share one Ray Train job instead of each paying for its start,
and the hyper-parameter search sees a seed-averaged validation metric rather than one seed's luck.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

STATE_FILE = "state.pt"
#: per-image test probabilities of every seed, written beside STATE_FILE at the final evaluation (see _trust)
PREDICTIONS_FILE = "predictions.npz"
#: version of the state the loop saves and `export_weights` stores; part of every checkpoint-store key, so
#: bumping it after a change of format makes weights of the old one unreachable instead of misread
CHECKPOINT_FORMAT = 1
#: BiT trains on random 480 crops of 512 images: the same ratio at every resolution
CROP_FRACTION = 480 / 512


@dataclass(frozen=True)
class JobSpec:
    """Everything one training job needs; picklable, shipped to every worker."""

    kind: str  # "pretrain" | "finetune" | "scratch"
    ladder: str
    model: str
    shards: str  # path of a ShardSet
    train: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...]
    recipe: object  # scaling.config.Recipe
    #: one model per seed, trained side by side
    seeds: tuple[int, ...]
    #: pre-trained weights file (see `save_weights`); None trains from random init
    init: str | None = None
    bf16: bool = True
    loader_workers: int = 0
    #: extra values echoed into every report (trial axes), for the callbacks that log them
    tags: dict = field(default_factory=dict)


@dataclass
class _Replica:
    """One seed's model and optimizer state."""

    seed: int
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    augment_rng: torch.Generator = field(default_factory=torch.Generator)
    loss: torch.Tensor | float = float("nan")


def train_loop(spec: JobSpec, session=None) -> dict:
    """Train per `spec`, evaluating every `recipe.eval_every` steps; returns the final metrics (rank 0).
    `session` (scaling.train.session) is where reports and checkpoints go: Ray Train's unless given."""
    import ray.train.torch
    from scaling.data.shards import ShardDataset, ShardSet
    from scaling.data.subsets import balanced_sampler_weights
    from scaling.train import faults, memory
    from scaling.train.batches import StepBatches
    from scaling.evaluate.metrics import METRICS
    from scaling.train.optim import make_optimizer, make_scheduler
    from scaling.train.session import TrainSession

    session = session or TrainSession()
    rank, world = session.rank_and_world()
    device = ray.train.torch.get_device()
    on_gpu = device.type == "cuda"
    recipe = spec.recipe

    shards = ShardSet.open(spec.shards)
    task = shards.task
    replicas = []
    for seed in spec.seeds:
        torch.manual_seed(seed)
        model = _build_model(spec, task.num_outputs, shards.preprocess.resolution)
        if on_gpu:
            model = model.to(memory_format=torch.channels_last)
        model = session.prepare_model(model, device)
        optimizer = make_optimizer(model, recipe)
        replicas.append(_Replica(seed, model, optimizer, make_scheduler(optimizer, recipe)))

    start = 0
    checkpoint = session.latest()
    if checkpoint:
        with checkpoint.as_directory() as d:
            state = torch.load(Path(d) / STATE_FILE, map_location=device, weights_only=True)
        for replica, saved in zip(replicas, state["replicas"], strict=True):
            _unwrap(replica.model).load_state_dict(saved["model"])
            replica.optimizer.load_state_dict(saved["optimizer"])
            replica.scheduler.load_state_dict(saved["scheduler"])
            replica.loss = saved.get("loss", float("nan"))  # what a job restarted after its last step reports
        start = state["step"]

    side = _crop_size(shards.preprocess.resolution)  # the memory preflight's pass: one replica, blank images
    peak = memory.gpu_peak(_unwrap(replicas[0].model), task.kind, task.num_outputs, side, device, spec.bf16,
                           _loss) if on_gpu else None
    recipe, memory_metrics = memory.plan_micro_batches(recipe, world, rank, peak,
                                                       memory.gpu_budget(device) if on_gpu else None)
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

    step, micro = start, 0
    divergence = faults.Divergence(device)
    # time spent in steps (data loading included) and in evaluation, to tell training from overhead
    clock = {"train_seconds": 0.0, "eval_seconds": 0.0, "first_step_at": time.time()}

    def report_divergence(found: dict) -> dict:
        # no checkpoint of weights that are no longer finite: the job's last one stays the one before
        metrics = {"step": step, **faults.diverged_metrics(found, METRICS), **spec.tags, **clock,
                   **memory_metrics, "start_step": start, "reported_at": time.time()}
        session.report({k: v for k, v in metrics.items() if _is_scalar(v)}, None)
        return metrics

    def evaluate_and_report() -> dict:
        started = time.perf_counter()
        val = [_outputs(r.model, val_set, device, autocast, world) for r in replicas]
        if found := divergence.check(world, step, [z for z, _ in val]):
            return report_divergence(found)
        metrics = {"step": step, "train_loss": float(np.mean([float(r.loss) for r in replicas])),
                   "lr": replicas[0].scheduler.get_last_lr()[0],
                   **_prefixed("val", _replica_mean([_evaluate(task.kind, *o) for o in val]))}
        predictions = None
        if step == recipe.steps and test_set is not None:
            test = [_outputs(r.model, test_set, device, autocast, world) for r in replicas]
            metrics.update(_prefixed("test", _replica_mean([_evaluate(task.kind, *o) for o in test])))
            trust, predictions = _trust(task.kind, val, test, spec)
            metrics.update(_prefixed("test", trust))
        clock["eval_seconds"] += time.perf_counter() - started
        if on_gpu:
            metrics["peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
        metrics.update(spec.tags, **clock, **memory_metrics, start_step=start, reported_at=time.time())
        _report(session, metrics, replicas, step, rank, predictions)
        for r in replicas:
            r.model.train()
        return metrics

    if start == recipe.steps:  # restarted after the last checkpoint: nothing to train, report the end again
        return evaluate_and_report()
    tick = time.perf_counter()
    for r in replicas:
        r.model.train()
    try:
        for batches in zip(*loaders):
            last_micro = micro == recipe.grad_accum - 1
            for r, (images, labels) in zip(replicas, batches):
                # augmentation, like the batches, is a function of (seed, step): a resumed job replays it exactly
                r.augment_rng.manual_seed(hash((r.seed, step, micro, rank)) & 0x7FFFFFFF)
                images = _prepare(images, device, train=recipe.augment, rng=r.augment_rng, on_gpu=on_gpu)
                with _no_sync_unless(r.model, last_micro), autocast:
                    loss = _loss(task.kind, r.model(images), labels.to(device))
                divergence.observe(loss, step + 1)
                (loss / recipe.grad_accum).backward()
                if last_micro:
                    r.optimizer.step()
                    r.optimizer.zero_grad(set_to_none=True)
                    r.scheduler.step()
                    r.loss = loss.detach()  # a tensor: no device sync per step
            micro += 1
            if not last_micro:
                continue
            step, micro = step + 1, 0
            if step % recipe.eval_every == 0 or step == recipe.steps:
                clock["train_seconds"] += time.perf_counter() - tick
                metrics = evaluate_and_report()
                if faults.DIVERGED_STEP in metrics:
                    return metrics
                tick = time.perf_counter()
    except RuntimeError as error:
        if not faults.is_out_of_memory(error):
            raise
        raise faults.out_of_memory(error, step=step + 1, kind=spec.kind, recipe=recipe, world=world,
                                   device=device) from error
    return metrics


def _build_model(spec: JobSpec, num_outputs: int, resolution: int) -> torch.nn.Module:
    """The rung with a head for this task; from `spec.init` when given (its head is kept only when it fits,
    and always replaced by a zero-initialised one for fine-tuning, as BiT does)."""
    from scaling import models
    from scaling.train import memory

    model = models.create_model(spec.ladder, spec.model, num_classes=num_outputs, pretrained=spec.init,
                                img_size=_crop_size(resolution) if models.rung(spec.ladder, spec.model).patch else None)
    if spec.init is not None and spec.kind == "finetune":
        models.new_head(model, num_outputs, zero_init=True)
    memory.apply_checkpointing(model, spec.recipe)
    return model


def _crop_size(side: int) -> int:
    return max(1, round(side * CROP_FRACTION))


def _prepare(images: torch.Tensor, device, *, train: bool, rng: torch.Generator, on_gpu: bool) -> torch.Tensor:
    """Crop (random when training, centre otherwise), flip when training, normalise to [-1, 1] as BiT."""
    from scaling.models import to_rgb

    side = images.shape[-1]
    crop = _crop_size(side)
    if train:
        offsets = torch.randint(0, side - crop + 1, (2,), generator=rng).tolist()
        images = images[..., offsets[0]:offsets[0] + crop, offsets[1]:offsets[1] + crop]
        if torch.rand((), generator=rng) < 0.5:
            images = images.flip(-1)
    else:
        o = (side - crop) // 2
        images = images[..., o:o + crop, o:o + crop]
    images = to_rgb(images.to(device, non_blocking=True)).sub(0.5).div(0.5)
    return images.contiguous(memory_format=torch.channels_last) if on_gpu else images


def _loss(kind: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logits = logits.float()
    if kind == "multiclass":
        return F.cross_entropy(logits, labels.long())
    if kind == "binary":
        return F.binary_cross_entropy_with_logits(logits.squeeze(1), labels.float())
    known = ~torch.isnan(labels)  # multilabel: uncertain / missing labels carry no loss
    losses = F.binary_cross_entropy_with_logits(logits, torch.nan_to_num(labels), reduction="none")
    return (losses * known).sum() / known.sum().clamp(min=1)


def _probabilities(kind: str, logits: torch.Tensor) -> torch.Tensor:
    logits = logits.float()
    if kind == "multiclass":
        return logits.softmax(1)
    probs = logits.sigmoid()
    return probs.squeeze(1) if kind == "binary" else probs


@torch.no_grad()
def _outputs(model, dataset, device, autocast, world: int, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Float32 logits and targets over a split, in the split's order: each rank scores its contiguous partition,
    then every rank holds the union."""
    model.eval()
    logits, labels = [], []
    for images, targets in torch.utils.data.DataLoader(dataset, batch_size=batch_size):
        images = _prepare(images, device, train=False, rng=None, on_gpu=device.type == "cuda")
        with autocast:
            logits.append(model(images).float().cpu().numpy())
        labels.append(targets.numpy())
    part = (logits, labels)
    if world > 1 and torch.distributed.is_initialized():
        gathered = [None] * world
        torch.distributed.all_gather_object(gathered, part)
        part = ([z for g in gathered for z in g[0]], [y for g in gathered for y in g[1]])
    return np.concatenate(part[0]), np.concatenate(part[1])


def _evaluate(kind: str, logits: np.ndarray, y: np.ndarray) -> dict:
    from scaling.evaluate.metrics import confusion_matrix, evaluate

    probs = _probabilities(kind, torch.from_numpy(logits)).numpy()
    return {**evaluate(kind, y, probs), "confusion": confusion_matrix(kind, y, probs).tolist()}


def _trust(kind: str, val: list[tuple], test: list[tuple], spec: JobSpec) -> tuple[dict, dict | None]:
    """Calibration (per seed, then their mean; `temperature_at_bound` counts seeds) and the seeds as an ensemble,
    from the final evaluation's logits; with the per-image test probabilities of every seed (PREDICTIONS_FILE).
    Binary and multiclass tasks (the fine-tuning targets); none for multilabel."""
    if kind not in ("binary", "multiclass"):
        return {}, None
    from scaling.evaluate import calibration, uncertainty
    from scaling.evaluate.metrics import METRICS

    started = time.perf_counter()
    per_seed, diagrams = [], []
    for (val_logits, val_y), (test_logits, test_y) in zip(val, test, strict=True):
        scalars, _, diagram = calibration.calibrate(kind, _squeezed(kind, val_logits), val_y,
                                                    _squeezed(kind, test_logits), test_y)
        per_seed.append({k: v for k, v in scalars.items() if k not in METRICS})  # those the plain metrics have
        diagrams.append(diagram)
    out = {k: float(np.mean([m[k] for m in per_seed])) for k in per_seed[0]}
    out["temperature_at_bound"] = int(sum(m["temperature_at_bound"] for m in per_seed))
    labels = test[0][1]
    probs = np.stack([calibration.probabilities(kind, _squeezed(kind, z)) for z, _ in test]).astype(np.float32)
    out.update(uncertainty.ensemble(kind, labels, probs))
    if kind == "binary":
        out["roc_auc_low"], out["roc_auc_high"] = uncertainty.auc_interval(labels, probs)
    out["reliability"] = json.dumps({stage: {k: np.sum([d[stage][k] for d in diagrams], axis=0).tolist()
                                             for k in diagrams[0][stage]} for stage in diagrams[0]})
    out["trust_seconds"] = time.perf_counter() - started
    return out, {"probs": probs, "labels": labels, "index": np.asarray(spec.test), "seeds": np.asarray(spec.seeds)}


def _squeezed(kind: str, logits: np.ndarray) -> np.ndarray:
    return logits[:, 0] if kind == "binary" else logits


def _replica_mean(per_replica: list[dict]) -> dict:
    """The replicas' mean of every metric; their ROC-AUCs and confusion matrices one per seed (JSON lists) and
    the spread of ROC-AUC over them."""
    out = {k: float(np.mean([m[k] for m in per_replica])) for k in per_replica[0] if k != "confusion"}
    if len(per_replica) > 1:
        out["roc_auc_sd"] = float(np.std([m["roc_auc"] for m in per_replica], ddof=1))
    out["roc_auc_seeds"] = json.dumps([m["roc_auc"] for m in per_replica])
    out["confusion"] = json.dumps([m["confusion"] for m in per_replica])
    return out


def _report(session, metrics: dict, replicas: list[_Replica], step: int, rank: int,
            predictions: dict | None = None) -> None:
    """Report metrics with a checkpoint of the full training state (written by rank 0 only), and at the final
    evaluation the test predictions beside it."""
    metrics = {k: v for k, v in metrics.items() if _is_scalar(v)}
    if rank != 0:
        session.report(metrics, None)
        return
    with tempfile.TemporaryDirectory() as d:
        torch.save({"replicas": [{"model": _unwrap(r.model).state_dict(), "optimizer": r.optimizer.state_dict(),
                                  "scheduler": r.scheduler.state_dict(), "loss": float(r.loss)} for r in replicas],
                    "step": step},
                   os.path.join(d, STATE_FILE))
        if predictions is not None:
            np.savez(os.path.join(d, PREDICTIONS_FILE), **predictions)
        session.report(metrics, d)


def _prefixed(prefix: str, metrics: dict) -> dict:
    return {f"{prefix}_{k}": v for k, v in metrics.items()}


def _is_scalar(v) -> bool:
    return isinstance(v, (int, float, str, bool))


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def _no_sync_unless(model, sync: bool):
    """Skip the DDP all-reduce on all but the last micro-batch of a gradient-accumulation step."""
    import contextlib

    if sync or not isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return contextlib.nullcontext()
    return model.no_sync()
