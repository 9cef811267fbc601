"""The rehearsal's config: the study's own, with its datasets and published weights replaced by stand-ins written
under the rehearsal directory, and reduced so that it runs on 2 CPU cores in minutes.

Reduced: the resolution (32 px), steps (2 per pre-training job, 2, 3, ... per budget in the budgets' order),
batches (8 images), sizes (the source sizes scaled to at most 48 images, keeping their order), the rungs trained
(the ladder's two smallest of those configured; the others are built on the meta device by the rehearsal) and the
grid (`sweep.grid: cover`: each value of each axis in at least one trial). Kept: the sources, published points,
`both_from`, shots, seeds, samples per cell, the leakage policy, `micro_batch` and every recipe choice.
Resources: CPU, one job per core, each trained in its Tune trial (`num_workers: 0`); the config's own
`resources.num_workers` runs in the rehearsal's DDP job (run.py)."""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path

from scaling.config import StudyConfig, to_dict
from scaling.models import ladders
from scaling.rehearse import standin_data, standin_weights

#: side of the stand-in study's images, and the largest pre-training subset
RESOLUTION, LARGEST_SOURCE_SIZE = 32, 48
#: images per step, pre-training and fine-tuning; test images per class of a stand-in target
BATCH, TEST_PER_CLASS = 8, 10
#: rungs trained for real (the ladder's smallest of those configured)
TRAINED_RUNGS = 2


@dataclass
class Rehearsal:
    """The reduced config (raw, as YAML would hold it) and what its stand-ins hold."""

    raw: dict
    trained: list[str]
    meta_only: list[str]
    #: dataset (role or member) -> its stand-in
    data: dict[str, standin_data.Standin] = field(default_factory=dict)
    #: weights file or Hugging Face cache entry -> rung
    weights: dict[str, str] = field(default_factory=dict)
    #: rung -> the meta check of its published layouts
    meta_weights: dict[str, dict] = field(default_factory=dict)
    hf_cache: Path | None = None


def reduce(cfg: StudyConfig, out: Path) -> Rehearsal:
    """Write the stand-ins under `out/standins` and return the rehearsal's config for a study in `out/study`."""
    raw = copy.deepcopy(to_dict(cfg))
    rungs = [r.name for r in ladders.LADDERS[cfg.models.ladder].rungs if r.name in cfg.models.sizes]
    plan = Rehearsal(raw, trained=rungs[:TRAINED_RUNGS], meta_only=rungs[TRAINED_RUNGS:])
    data = raw["data"]
    data.update(resolution=RESOLUTION, cache_dir=str(out / "cache"),
                source_sizes=scaled_sizes(cfg.data.source_sizes, LARGEST_SOURCE_SIZE))
    standins = out / "standins"
    target_tests = stand_in_target(data["target"], cfg, standins / "data" / "target", plan)
    for role, ref in data["sources"].items():
        if ref["merge"]:
            for member in ref["merge"]:
                stand_in_source(member, len(ref["merge"]), data, standins / "data" / member["dataset"], plan,
                                target_tests, cfg.seed)
        elif ref["dataset"]:
            stand_in_source(ref, 1, data, standins / "data" / role, plan, target_tests, cfg.seed)
        for point in ref["published"]:
            stand_in_published(point, cfg.models.ladder, plan, standins)
    raw["models"]["sizes"] = plan.trained
    budgets = sorted(set(cfg.finetune.budgets))
    raw["finetune"]["budgets"] = [2 + budgets.index(b) for b in cfg.finetune.budgets]
    for recipe in (raw["pretrain"], raw["finetune"]["recipe"]):
        recipe.update(batch_size=BATCH, warmup_steps=min(recipe["warmup_steps"], 1), eval_every=2)
    raw["pretrain"]["steps"] = 2
    raw["sweep"].update(grid="cover", max_concurrent_trials=2,
                        scratch_target_sizes=scaled_sizes(cfg.sweep.scratch_target_sizes, 16))
    raw["resources"] = {**raw["resources"], "num_workers": 0, "use_gpu": False, "cpus_per_worker": 1.0,
                        "loader_workers": 0}
    raw["tracking"], raw["out_dir"] = {"uri": "", "experiment": ""}, ""
    return plan


def scaled_sizes(sizes: list[int], largest: int) -> list[int]:
    """`sizes` scaled so the largest is `largest`, kept distinct and in order (at least 4 images each)."""
    if not sizes:
        return []
    top, out = max(sizes), []
    for n in sorted(sizes):
        out.append(max(4, math.ceil(n * largest / top), out[-1] + 1 if out else 0))
    return [out[sorted(sizes).index(n)] for n in sizes]


def stand_in_target(ref: dict, cfg: StudyConfig, root: Path, plan: Rehearsal) -> dict:
    """The target's stand-in: enough images per class for the largest n-shot subset after the validation split
    (and the test split carved first from a target without one, Shenzhen/Montgomery); returns its test images by
    key (for planting)."""
    name = ref["dataset"]
    if name not in standin_data.TARGETS:
        return {}  # synthetic targets generate themselves
    # both splits are random by patient, not by class: a fifth more than their expected share
    per_class = math.ceil(1.2 * max(cfg.data.shots) / (1 - cfg.data.val_fraction) ** 2) + 8
    standin, tests = standin_data.TARGETS[name](root, per_class, TEST_PER_CLASS, cfg.seed, ref["options"])
    ref["options"] = {**ref["options"], "root": str(root)}
    plan.data["target"] = standin
    return tests if name == "covidx" else {}


def stand_in_source(ref: dict, members: int, data: dict, root: Path, plan: Rehearsal, target_tests: dict,
                    seed: int) -> None:
    """A source dataset's stand-in: its share of the images the largest subset needs, with room for the
    validation split, lateral views, unlabelled studies and the leakage guard's removals."""
    name = ref["dataset"]
    if name not in standin_data.SOURCES:
        return  # synthetic sources generate themselves
    n = math.ceil(1.8 * (max(data["source_sizes"]) + 16) / members)
    planted = {k: target_tests[k] for k in sorted(target_tests)[:standin_data.PLANTED_LEAKS]}
    writer = standin_data.SOURCES[name]
    standin = writer(root, n, seed + len(plan.data), plant=planted) if name == "nih" else \
        writer(root, n, seed + len(plan.data))
    ref["options"] = {**ref["options"], "root": str(root)}
    plan.data[name] = standin


def stand_in_published(point: dict, ladder: str, plan: Rehearsal, standins: Path) -> None:
    """A published point's stand-in files for the trained rungs, and meta checks for the others."""
    if point["weights"] != "hf":
        point["weights"] = str(standins / "weights" / Path(point["weights"]).name)
    plan.hf_cache = standins / "huggingface"
    for model in plan.trained:
        if point["weights"] == "hf":
            path = standin_weights.write_hub(plan.hf_cache, ladder, model, point["tag"] or None)
        else:
            path = standin_weights.write_npz(Path(point["weights"].format(model=model)), ladder, model)
        plan.weights[str(path)] = model
    for model in plan.meta_only:
        if model not in plan.meta_weights:
            plan.meta_weights[model] = standin_weights.meta_check(ladder, model)

