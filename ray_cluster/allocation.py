"""Does a study config fit the nodes it is given? Checked at submission against the site's node shape and again
inside the job against the resources the Ray cluster really has, so that a sweep never waits for ever on GPUs or
CPUs that are not there."""
from __future__ import annotations

import math
from dataclasses import dataclass


class AllocationError(ValueError):
    """The study config asks for resources the allocation cannot give."""


@dataclass(frozen=True)
class Allocation:
    nodes: int
    gpus_per_node: float
    cpus_per_node: float
    #: where the numbers come from, for messages ("2 nodes of juwels-booster", "the Ray cluster")
    source: str = "the allocation"


def check_allocation(resources, sweep, alloc: Allocation) -> list[str]:
    """Raise AllocationError when the config cannot run on `alloc`; return warnings for waste.

    `resources` is a scaling.config.ResourcesConfig and `sweep` a SweepConfig. A Train worker lives on one
    node. With GPUs, the workers of all `sweep.max_concurrent_trials` trials must fit at once (the GPUs are
    what the allocation is for); CPUs must fit one trial's workers, and only a warning says when fewer trials
    than asked can run at once."""
    # num_workers 0: each job trains in its Tune trial, which holds one worker's share
    workers = max(1, resources.num_workers) * sweep.max_concurrent_trials
    at_once = (f"resources.num_workers ({resources.num_workers}) x sweep.max_concurrent_trials "
               f"({sweep.max_concurrent_trials}) = {workers} Train workers at once")
    warnings = []
    if resources.use_gpu:
        if alloc.gpus_per_node <= 0:
            raise AllocationError(
                f"resources.use_gpu is true but {alloc.source} has no GPUs; use a GPU partition "
                f"(e.g. --site juwels-booster, or --gpus-per-node N) or set resources.use_gpu=false")
        if resources.gpus_per_worker > alloc.gpus_per_node:
            raise AllocationError(
                f"resources.gpus_per_worker is {resources.gpus_per_worker:g} but a node of {alloc.source} has "
                f"{alloc.gpus_per_node:g} GPUs; a Train worker cannot span nodes")
        gpu_slots = alloc.nodes * _per_node(alloc.gpus_per_node, resources.gpus_per_worker)
        if workers > gpu_slots:
            raise AllocationError(
                f"{at_once} x resources.gpus_per_worker ({resources.gpus_per_worker:g}) need more GPUs than "
                f"{alloc.source} has: {alloc.nodes} node(s) x {alloc.gpus_per_node:g} GPUs hold {gpu_slots} such "
                f"workers; lower sweep.max_concurrent_trials or resources.num_workers, or ask for "
                f"{math.ceil(workers / _per_node(alloc.gpus_per_node, resources.gpus_per_worker))} nodes")
    elif alloc.gpus_per_node > 0:
        warnings.append(f"{alloc.source} has {alloc.gpus_per_node:g} GPUs per node but resources.use_gpu is "
                        "false: they stay idle")
    if resources.cpus_per_worker > alloc.cpus_per_node:
        raise AllocationError(
            f"resources.cpus_per_worker is {resources.cpus_per_worker:g} but a node of {alloc.source} has "
            f"{alloc.cpus_per_node:g} CPUs")
    cpu_slots = alloc.nodes * _per_node(alloc.cpus_per_node, resources.cpus_per_worker)
    if resources.num_workers > cpu_slots:
        raise AllocationError(
            f"resources.num_workers ({resources.num_workers}) x resources.cpus_per_worker "
            f"({resources.cpus_per_worker:g} CPUs) does not fit {alloc.source}: {alloc.nodes} node(s) x "
            f"{alloc.cpus_per_node:g} CPUs hold {cpu_slots} such workers")
    if workers > cpu_slots:
        warnings.append(f"{at_once} need more CPUs than {alloc.source} has ({cpu_slots} such workers fit): "
                        "fewer trials will run at once")
    return warnings


def _per_node(amount: float, per_worker: float) -> int:
    return math.floor(amount / per_worker + 1e-9)
