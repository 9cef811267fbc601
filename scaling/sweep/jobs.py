"""What a job is: a planned pre-training job or fine-tuning point (plan.py) made concrete for training.

For each: the training spec the loop runs (`JobSpec`: data indices, recipe, seeds, starting weights), and for
pre-training its content address in the checkpoint store and the weights file later jobs start from. Knows
nothing of Ray: the sweep (tune.py) runs these jobs, the driver (study.py) asks here which ones are stored.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

from scaling import models
from scaling.config import ConfigError, StudyConfig
from scaling.data.stage import StudyData
from scaling.data.subsets import n_shot, nested_subset
from scaling.sweep.plan import BOTH, FinetunePoint, PretrainJob, natural_stage, published_point
from scaling.train.spec import CHECKPOINT_FORMAT, JobSpec
from scaling.train.store import WEIGHTS_FILE, CheckpointStore, key_for


@dataclass(frozen=True)
class StudyJobs:
    """The jobs of one study: its config, its prepared data and where checkpoints and job folders live.
    Picklable: shipped to every Tune trial."""

    cfg: StudyConfig
    data: StudyData
    store_dir: str
    jobs_dir: str

    def shard_name(self, role: str) -> str:
        prepared = self.data.target if role == "target" else self.data.sources[role]
        return Path(prepared.shards.path).name

    # -- pre-training -------------------------------------------------------------------------------------------

    def pretrain_parts(self, job: PretrainJob) -> dict:
        """The content address of a pre-training checkpoint: the model (rung name and what builds it, so a
        changed ladder never loads stale weights under an old key), the checkpoint format, data, subset, seed,
        recipe and start."""
        cfg = self.cfg
        if published_point(cfg, job) is not None:  # not trained: addressed by the weights file it resolved to
            return {"ladder": cfg.models.ladder, "model": job.model, "published": self.pretrained_weights(job)}
        parts = {"ladder": cfg.models.ladder, "model": job.model,
                 "definition": rung_definition(models.rung(cfg.models.ladder, job.model)),
                 "format": CHECKPOINT_FORMAT, "data": self.shard_name(job.stages[-1]),
                 "size": job.size, "seed": job.seed, "recipe": asdict(cfg.pretrain)}
        if job.source == BOTH:
            parts["init"] = self.pretrain_parts(self.first_stage(job))
        return parts

    def pretrain_key(self, job: PretrainJob) -> str:
        return key_for(**self.pretrain_parts(job))

    def pretrained_weights(self, job: PretrainJob) -> str:
        """The weights file of a pre-training job's store entry (which may not be built yet)."""
        if published_point(self.cfg, job) is not None:
            return self.data.weights[(job.source, job.size, job.model)]
        return str(CheckpointStore(self.store_dir).path(self.pretrain_key(job)) / WEIGHTS_FILE)

    def first_stage(self, job: PretrainJob) -> PretrainJob:
        """The natural job a "both" job continues from (its own, or published weights: `sweep.both_from`)."""
        return natural_stage(self.cfg, job)

    def pretrain_spec(self, job: PretrainJob) -> JobSpec:
        cfg = self.cfg
        prepared = self.data.sources[job.stages[-1]]
        train = nested_subset(prepared.shards.records.loc[prepared.train], job.size, job.seed)
        init = self.pretrained_weights(self.first_stage(job)) if job.source == BOTH else None
        return JobSpec(kind="pretrain", ladder=cfg.models.ladder, model=job.model, shards=str(prepared.shards.path),
                       train=tuple(map(int, train)), val=tuple(map(int, prepared.val)), test=(),
                       recipe=cfg.pretrain, seeds=(job.seed,), init=init, bf16=cfg.resources.bf16,
                       loader_workers=cfg.resources.loader_workers, tags={"job": job.name})

    # -- fine-tuning --------------------------------------------------------------------------------------------

    def on_reference(self, point: FinetunePoint) -> bool:
        """Whether a point trains on the scratch reference set: a from-scratch subset larger than the target's
        training split (scaling/sweep/reference.py)."""
        return point.target_subset > len(self.data.target.train)

    def finetune_set(self, point: FinetunePoint):
        """The prepared set a point trains and is evaluated on: the target, or its scratch reference set (the
        same validation and test images)."""
        return self.data.reference if self.on_reference(point) else self.data.target

    def finetune_train(self, point: FinetunePoint):
        """The target's training images (shard rows) of a point: the whole split, its n-shot subset or a nested
        stratified subset (of the reference set's pool beyond the split). One draw per study: the seeds of a
        trial differ in initialisation and order."""
        target = self.finetune_set(point)
        if point.shots:
            return n_shot(target.shards.records.loc[target.train], point.shots, self.cfg.seed)
        if point.target_subset:
            return nested_subset(target.shards.records.loc[target.train], point.target_subset, self.cfg.seed)
        return target.train

    def finetune_spec(self, point: FinetunePoint, lr: float, weight_decay: float) -> JobSpec:
        cfg, target = self.cfg, self.finetune_set(point)
        train = self.finetune_train(point)
        job = point.pretrain(cfg.seed)
        recipe = replace(cfg.finetune.recipe, steps=point.budget, lr=lr, weight_decay=weight_decay,
                         eval_every=min(cfg.finetune.recipe.eval_every, point.budget))
        return JobSpec(kind="finetune" if job else "scratch", ladder=cfg.models.ladder, model=point.model,
                       shards=str(target.shards.path), train=tuple(map(int, train)),
                       val=tuple(map(int, target.val)), test=tuple(map(int, target.test)), recipe=recipe,
                       seeds=tuple(cfg.seed * 1000 + s for s in cfg.sweep.seeds),
                       init=self.pretrained_weights(job) if job else None,
                       bf16=cfg.resources.bf16, loader_workers=cfg.resources.loader_workers,
                       tags={"job": point.name})


def check_target_sizes(cfg: StudyConfig, data: StudyData) -> None:
    """Every grid's scratch target sizes and `data.shots` must fit the target's training split (or, beyond it,
    the scratch reference set's pool), known once the data is staged: checked on the driver, before a trial would
    fail on them inside a worker."""
    available = len(data.target.train)
    pool = len(data.reference.train) if data.reference is not None else 0
    for key, sizes in [("sweep.scratch_target_sizes", cfg.sweep.scratch_target_sizes),
                       *((f"sweep.slices[{j}].scratch_target_sizes", part.scratch_target_sizes or [])
                         for j, part in enumerate(cfg.sweep.slices))]:
        for i, size in enumerate(sizes):
            if size > max(available, pool):
                where = (f"the images of the target's scratch reference set less its validation images "
                         f"(sweep.scratch_reference_images)" if pool else
                         f"the size of the target's training split ({cfg.data.target.dataset}, after its "
                         f"validation split)")
                raise ConfigError(f"{key}[{i}]: got {size}; expected at most {max(available, pool)}, {where}")
    train = data.target.shards.records.loc[data.target.train]
    for i, shots in enumerate(cfg.data.shots):
        if shots:
            try:
                n_shot(train, shots, cfg.seed)  # what finetune_train draws
            except ValueError as e:
                raise ConfigError(f"data.shots[{i}]: got {shots}; expected at most the images of each class "
                                  f"in the target's training split ({cfg.data.target.dataset}, after its "
                                  f"validation split): {e}") from None


def rung_definition(rung) -> dict:
    """What builds a rung (`timm.create_model(arch, **kwargs)`, input patch) as JSON values: classes and
    functions by their import path."""
    def plain(value):
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if callable(value):
            return f"{value.__module__}.{value.__qualname__}"
        return value

    return {"arch": rung.arch, "kwargs": plain(dict(rung.kwargs)), "patch": rung.patch}


def model_params(ladder: str, model: str, resolution: int) -> dict:
    """Size and compute of a rung of `ladder` at the input `resolution`, for the MLflow params and the results
    table."""
    rung = models.rung(ladder, model)
    return {"params": models.params(rung), "flops_per_image": models.flops_per_image(rung, resolution)}
