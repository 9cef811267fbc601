"""Memory at high resolution: activation checkpointing and a preflight that picks the micro-batch.

Fine-tuning R152x4 at 480 px does not fit a 40 GB A100 at BiT's batch of 128 per step. Gradient accumulation
keeps the effective batch (`Recipe.batch_size`) whatever the micro-batch; checkpointing (timm's
`set_grad_checkpointing`, recomputing each stage's activations in the backward pass) trades ~30% compute for
most of the activation memory. With `micro_batch: auto` the first worker measures the peak memory of
forward/backward passes of the real model at two small micro-batches, extrapolates linearly in the batch
(weights, gradients and optimizer state are the fixed part, activations grow with the images), confirms the
largest candidate with a real pass, and every worker takes that micro-batch. On CPU (a rehearsal, a CPU study)
the same plan runs on an estimate: the bytes a forward pass saves for backward plus weights, gradients and one
optimizer state, within a share of the machine's free memory. Torch only; Ray is not used here.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

#: share of the GPU's memory a micro-batch may use (allocator fragmentation, evaluation, DataLoader pinning)
MEMORY_SHARE = 0.85


def apply_checkpointing(model, recipe) -> None:
    """Turn on timm's activation checkpointing when the recipe asks for it."""
    if recipe.grad_checkpointing:
        model.set_grad_checkpointing(True)


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def choose_micro_batch(per_worker: int, peak: Callable[[int], float | None], budget: float) -> tuple[int, float]:
    """(micro-batch, its measured peak bytes): the largest divisor of `per_worker` whose pass fits `budget`.
    `peak(m)` runs one forward/backward pass at micro-batch m and returns its peak bytes, or None when it ran out
    of memory. Passes at about an eighth of the batch and the next smaller divisor fix a line in the batch; the
    candidates are the divisors it lets fit, largest first, each checked by a real pass."""
    options = divisors(per_worker)
    probe = next(d for d in options if d >= per_worker / 8)
    measured = peak(probe)
    while measured is None or measured > budget:  # even the probe does not fit: step down
        smaller = [d for d in options if d < probe]
        if not smaller:
            raise MemoryError(f"one image per micro-batch needs more than the {budget / 2**30:.1f} GiB available; "
                              "turn on grad_checkpointing or use a smaller model or resolution")
        probe = smaller[-1]
        measured = peak(probe)
    # a second point fixes the line: weights, gradients and optimizer state are its intercept. The next smaller
    # divisor, or when the probe is 1 image (a small batch per worker) the next larger one: one point alone
    # would count the fixed part as per-image memory and pick a needlessly small micro-batch
    smaller = [d for d in options if d < probe]
    second = smaller[-1] if smaller else next((d for d in options if d > probe), None)
    other = peak(second) if second is not None else None
    if second is None or (second > probe and (other is None or other > budget)):
        return probe, measured  # nothing larger fits
    per_image = max(abs(measured - (other or measured)), 1.0) / abs(probe - second)
    fixed = measured - probe * per_image
    for m in reversed([d for d in options if d > probe and fixed + d * per_image <= budget]):
        found = peak(m)
        if found is not None and found <= budget:
            return m, found
    return probe, measured


def plan_micro_batches(recipe, world: int, rank: int, peak: Callable[[int], float | None] | None,
                       budget: float | None) -> tuple[object, dict]:
    """The recipe with `grad_accum` set from `micro_batch` (None: as configured; an int; "auto": measured by
    `peak` on rank 0 within `budget` bytes, shared with the other ranks), and the choice as metrics. The
    effective batch stays `batch_size`. With `peak` None "auto" keeps the whole batch per pass."""
    import torch

    per_worker, rest = divmod(recipe.batch_size, world)
    if rest:
        raise ValueError(f"batch_size {recipe.batch_size} must be divisible by the {world} workers")
    if recipe.micro_batch is None:
        micro = per_worker // recipe.grad_accum
        found = None
    elif recipe.micro_batch == "auto":
        choice = [choose_micro_batch(per_worker, peak, budget) if peak is not None and rank == 0 else
                  (per_worker, None)]
        if world > 1 and torch.distributed.is_initialized():
            torch.distributed.broadcast_object_list(choice, src=0)
        micro, found = choice[0]
    else:
        micro, found = recipe.micro_batch, None
        if per_worker % micro:
            raise ValueError(f"micro_batch {micro} must divide the {per_worker} images per worker and step "
                             f"(batch_size {recipe.batch_size} / {world} workers)")
    metrics = {"micro_batch": micro, "grad_accum": per_worker // micro}
    if found is not None:
        metrics["preflight_peak_gb"] = found / 2**30
    return replace(recipe, grad_accum=per_worker // micro, micro_batch=None), metrics


def gpu_peak(model, kind: str, num_outputs: int, side: int, device, bf16: bool, loss_fn):
    """`peak(m)` for `choose_micro_batch`: one forward/backward pass of `model` on m blank side x side images on
    the GPU, its peak bytes (None when out of memory). The model's
    buffers (BatchNorm statistics) and gradients are restored afterwards, so the probe leaves no trace."""
    import torch

    def peak(m: int) -> float | None:
        buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        try:
            images = torch.zeros(m, 3, side, side, device=device).contiguous(memory_format=torch.channels_last)
            labels = (torch.zeros(m, num_outputs, device=device) if kind == "multilabel" else
                      torch.zeros(m, device=device))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss_fn(kind, model(images), labels).backward()
            torch.cuda.synchronize(device)
            return float(torch.cuda.max_memory_allocated(device))
        except torch.cuda.OutOfMemoryError:
            return None
        finally:
            model.zero_grad(set_to_none=True)
            with torch.no_grad():
                for name, b in model.named_buffers():
                    b.copy_(buffers[name])
            torch.cuda.empty_cache()

    return peak


def cpu_peak(model, kind: str, num_outputs: int, side: int, loss_fn):
    """`peak(m)` for `choose_micro_batch` on CPU, where torch keeps no peak statistics: the bytes of the
    weights, their gradients and one optimizer state, plus what a forward pass of m blank images saves for the
    backward pass (counted by autograd's saved-tensor hooks; no backward is run). BatchNorm statistics are restored
    afterwards."""
    import torch

    fixed = 3 * sum(p.numel() * p.element_size() for p in model.parameters())

    def peak(m: int) -> float:
        buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
        saved = 0

        def pack(tensor):
            nonlocal saved
            saved += tensor.numel() * tensor.element_size()
            return tensor

        try:
            images = torch.zeros(m, 3, side, side)
            labels = torch.zeros(m, num_outputs) if kind == "multilabel" else torch.zeros(m)
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
                loss_fn(kind, model(images), labels)
            return float(fixed + saved)
        finally:
            with torch.no_grad():
                for name, b in model.named_buffers():
                    b.copy_(buffers[name])

    return peak


def cpu_budget() -> float:
    """Bytes a micro-batch may use on CPU: MEMORY_SHARE of the memory available now (free and reclaimable page
    cache, as the kernel's MemAvailable counts it; the free pages alone are near 0 on a busy machine)."""
    import psutil

    return MEMORY_SHARE * psutil.virtual_memory().available


def gpu_budget(device) -> float:
    """Bytes a micro-batch may use on `device`: MEMORY_SHARE of its total memory."""
    import torch

    return MEMORY_SHARE * torch.cuda.get_device_properties(device).total_memory
