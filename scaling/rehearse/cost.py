"""What the real study will cost: GPU-hours from the FLOP counts of its jobs, the data stage's CPU time, and the
disk its finished jobs' checkpoints hold.

Training FLOPs per image are 3x the forward FLOPs (`scaling.models.flops_per_image` at the crop the model is fed);
a pre-training job trains `steps x batch_size` images, a fine-tuning trial `budget x batch_size` per seed.
Evaluation (about 8% more) and ASHA's early stops are not counted. GPU time is at a stated share of an A100's
bf16 peak; the data stage's time at a stated cost per image and core (DESIGN.md's measurements on real
radiographs: reading 0.01-0.6 s, preprocessing to 512 px 0.04-0.2 s), over the release sizes below.
A checkpoint holds, per seed, the fp32 weights and the optimiser's state (SGD: one momentum buffer per weight,
AdamW: two); a job on Train workers keeps the last two (`CheckpointConfig(num_to_keep=2)`), a job trained in
its trial's process only its final one; a pre-training job also exports its weights to the checkpoint store."""
from __future__ import annotations

from dataclasses import dataclass

from scaling.config import StudyConfig
from scaling.models import flops_per_image, params, rung
from scaling.sweep.plan import finetune_points, pretrain_jobs
from scaling.train.augment import crop_size

A100_BF16_PEAK = 312e12
UTILISATION = 0.40
#: seconds to read and preprocess one image on one core (see the module's doc)
SECONDS_PER_IMAGE_CORE = 0.25
#: cores of a JUWELS Booster node
NODE_CORES = 48
#: images of the public releases (approximate for COVIDx), by dataset and, for COVIDx, version
RELEASE_IMAGES = {"covidx": {"8A": 16_352, "8B": 16_352, "9A": 30_386, "9B": 30_386}, "chexpert": 223_648,
                  "mimic-cxr": 377_110, "nih": 112_120, "padchest": 160_868, "shenzhen-montgomery": 800,
                  "tbx11k": 11_200}


@dataclass
class Cost:
    pretrain_jobs: int
    pretrain_gpu_hours: float
    finetune_trials: int
    finetune_gpu_hours: float
    #: GPU-hours by rung, both stages
    by_rung: dict[str, float]
    data_images: int
    data_core_hours: float
    #: bytes the finished jobs leave in the study's jobs/ and checkpoints/ folders, and the largest single job's
    checkpoint_bytes: float
    largest_job_bytes: float

    @property
    def gpu_hours(self) -> float:
        return self.pretrain_gpu_hours + self.finetune_gpu_hours


def job_bytes(model_params: int, recipe, seeds: int, kept: int) -> float:
    """What one finished job's checkpoints hold (see the module's doc)."""
    slots = {"sgd": 1 if recipe.momentum else 0, "adamw": 2}[recipe.optimizer]
    return model_params * 4 * (1 + slots) * seeds * kept


def gpu_seconds(flops: float) -> float:
    return flops / (UTILISATION * A100_BF16_PEAK)


def project(cfg: StudyConfig) -> Cost:
    """The cost of the full grid of `cfg` (whatever its `sweep.grid`)."""
    side = crop_size(cfg.data.resolution)
    per_image = {m: 3 * flops_per_image(rung(cfg.models.ladder, m), side) for m in cfg.models.sizes}
    by_rung = dict.fromkeys(cfg.models.sizes, 0.0)
    jobs = [j for wave in pretrain_jobs(cfg) for j in wave]
    for j in jobs:
        by_rung[j.model] += gpu_seconds(cfg.pretrain.steps * cfg.pretrain.batch_size * per_image[j.model]) / 3600
    pretrain = sum(by_rung.values())
    points = finetune_points(cfg)
    for p in points:
        images = p.budget * cfg.finetune.recipe.batch_size * len(cfg.sweep.seeds)
        by_rung[p.model] += gpu_seconds(images * per_image[p.model]) / 3600
    images = sum(release_images(ref.dataset, ref.options) for ref in dataset_refs(cfg))
    kept = 2 if cfg.resources.num_workers else 1
    size = {m: params(rung(cfg.models.ladder, m)) for m in cfg.models.sizes}
    pretrain_bytes = [job_bytes(size[j.model], cfg.pretrain, 1, kept) + size[j.model] * 4 for j in jobs]
    finetune_bytes = [job_bytes(size[p.model], cfg.finetune.recipe, len(cfg.sweep.seeds), kept) for p in points]
    disk = pretrain_bytes + finetune_bytes
    return Cost(len(jobs), pretrain, len(points), sum(by_rung.values()) - pretrain, by_rung, images,
                images * SECONDS_PER_IMAGE_CORE / 3600, sum(disk), max(disk, default=0.0))


def dataset_refs(cfg: StudyConfig) -> list:
    """Every single dataset the study reads: the target, each source or each member of a merged one."""
    refs = [cfg.data.target]
    for ref in cfg.data.sources.values():
        refs += ref.merge or ([ref] if ref.dataset else [])
    return refs


def release_images(dataset: str, options: dict) -> int:
    known = RELEASE_IMAGES.get(dataset, 0)
    return known.get(options.get("version", "9B"), 0) if isinstance(known, dict) else known


def describe(cost: Cost, nodes: int, gpus_per_node: int = 4) -> list[str]:
    gpus = nodes * gpus_per_node
    return [f"GPU time at {UTILISATION:.0%} of an A100's {A100_BF16_PEAK / 1e12:.0f} bf16 TFLOP/s (training FLOPs = "
            f"3 x forward; evaluation, about 8% more, and ASHA's early stops not counted):",
            f"  pre-training: {cost.pretrain_jobs} jobs, {cost.pretrain_gpu_hours:,.0f} GPU-h",
            f"  fine-tuning:  {cost.finetune_trials} trials, {cost.finetune_gpu_hours:,.0f} GPU-h",
            f"  total:        {cost.gpu_hours:,.0f} GPU-h = {cost.gpu_hours / gpus:.1f} h on {nodes} nodes "
            f"({gpus} GPUs)",
            "  by rung: " + ", ".join(f"{m} {h:,.0f}" for m, h in cost.by_rung.items()),
            f"data stage: {cost.data_images:,} images (release sizes) at {SECONDS_PER_IMAGE_CORE} s per image and "
            f"core = {cost.data_core_hours:,.0f} core-hours: {cost.data_core_hours / NODE_CORES:.1f} h on one "
            f"{NODE_CORES}-core node, {cost.data_core_hours / NODE_CORES / nodes:.1f} h on {nodes}",
            f"disk: the finished jobs' checkpoints hold {cost.checkpoint_bytes / 1e12:,.1f} TB (the largest job "
            f"{cost.largest_job_bytes / 1e9:,.0f} GB): put the study directory where the quota allows it"]
