"""Pre-training jobs and the fine-tuning sweep on Ray Tune; every job a Ray Train `TorchTrainer` run.

Pre-training: one Tune trial per unique job; each builds its checkpoint through the content-addressed store,
so a job finished earlier (or by a concurrent study) is reused, not retrained.

Fine-tuning: Optuna (TPE, seeded) samples learning rate and weight decay; the scaling grid is covered exactly
by enqueueing every grid point (model, source, pre-training size, budget, shots, sample) as a partial
Optuna trial -- Optuna fixes those axes and samples only the hyper-parameters. One search over all cells
lets TPE learn from every trial; `PerCellASHA` stops a trial only against trials of its own cell, since a
fine-tuning budget or a source changes what a good validation AUC is.

Resume: the trial ledger (ledger.py) records each trial's hyper-parameters when it starts and its outcome
when it ends. A restarted sweep skips ended trials, tells Optuna their results, re-enqueues interrupted ones
with their recorded hyper-parameters, and each Train run picks up its last checkpoint under its stable name.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ray.tune import Callback
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler

from scaling.config import ConfigError
from scaling.data.subsets import n_shot, nested_subset
from scaling.plan import BOTH, FinetunePoint, PretrainJob, all_pretrain_sizes, natural_stage, published_point
from scaling.train.loop import JobSpec

#: the metric Optuna and ASHA maximise (validation ROC-AUC of the target)
METRIC = "val_roc_auc"
AXES = ("model", "source", "pretrain_size", "budget", "shots", "sample")
#: ledger statuses of trials that are not run again
ENDED = ("finished", "stopped")


class ClusterTooSmall(ConfigError):
    """The resources the config asks for one job exceed the whole Ray cluster."""


@dataclass(frozen=True)
class SweepContext:
    """What every trial needs; shipped to the trial actors."""

    cfg: object  # scaling.config.StudyConfig
    data: object  # scaling.data.stage.StudyData
    store_dir: str
    jobs_dir: str

    def shard_name(self, role: str) -> str:
        prepared = self.data.target if role == "target" else self.data.sources[role]
        return Path(prepared.shards.path).name

    def pretrain_parts(self, job: PretrainJob) -> dict:
        """The content address of a pre-training checkpoint: model, data, subset, seed, recipe and start."""
        cfg = self.cfg
        if published_point(cfg, job) is not None:  # not trained: addressed by the weights file it resolved to
            return {"ladder": cfg.models.ladder, "model": job.model, "published": self.pretrained_weights(job)}
        parts = {"ladder": cfg.models.ladder, "model": job.model, "data": self.shard_name(job.stages[-1]),
                 "size": job.size, "seed": job.seed, "recipe": asdict(cfg.pretrain)}
        if job.source == BOTH:
            parts["init"] = self.pretrain_parts(natural_stage(cfg, job))
        return parts

    def pretrained_weights(self, job: PretrainJob) -> str:
        """The weights file of a pre-training job's store entry (which may not be built yet)."""
        from scaling.train.store import STATE_FILE, CheckpointStore, key_for

        if published_point(self.cfg, job) is not None:
            return self.data.weights[(job.source, job.size, job.model)]
        return str(CheckpointStore(self.store_dir).path(key_for(**self.pretrain_parts(job))) / STATE_FILE)


def concurrency(cfg, cluster: dict) -> int:
    """How many jobs run at once: the configured limit, bounded by what the cluster can place. Tune trials
    reserve no resources (they only wait on their TorchTrainer), so Train workers get the whole cluster."""
    res = cfg.resources
    fits = [cluster.get("CPU", 0) // (res.num_workers * res.cpus_per_worker)]
    if res.use_gpu:
        fits.append(cluster.get("GPU", 0) // (res.num_workers * res.gpus_per_worker))
    n = int(min(fits))
    if n < 1:
        need = f"{res.num_workers} worker(s) x {res.cpus_per_worker} CPU" + (
            f" and {res.gpus_per_worker} GPU" if res.use_gpu else "")
        raise ClusterTooSmall(f"resources: one job needs {need}, but the Ray cluster has "
                              f"{cluster.get('CPU', 0):g} CPU and {cluster.get('GPU', 0):g} GPU")
    return min(n, cfg.sweep.max_concurrent_trials)


# ------------------------------------------------------------------------------------------- job specs


def pretrain_spec(ctx: SweepContext, job: PretrainJob, init: str | None) -> JobSpec:
    role = job.stages[-1]
    prepared = ctx.data.sources[role]
    records = prepared.shards.records
    train = nested_subset(records.loc[prepared.train], job.size, job.seed)
    return JobSpec(kind="pretrain", ladder=ctx.cfg.models.ladder, model=job.model, shards=str(prepared.shards.path),
                   train=tuple(map(int, train)), val=tuple(map(int, prepared.val)), test=(), recipe=ctx.cfg.pretrain,
                   seeds=(job.seed,), init=init, bf16=ctx.cfg.resources.bf16,
                   loader_workers=ctx.cfg.resources.loader_workers, tags={"job": job.name})


def finetune_spec(ctx: SweepContext, point: FinetunePoint, lr: float, weight_decay: float, init: str | None
                  ) -> JobSpec:
    cfg, target = ctx.cfg, ctx.data.target
    train = target.train
    if point.shots:  # one draw of the shots per study: the seeds of a trial differ in initialisation and order
        train = n_shot(target.shards.records.loc[target.train], point.shots, cfg.seed)
    recipe = replace(cfg.finetune.recipe, steps=point.budget, lr=lr, weight_decay=weight_decay,
                     eval_every=min(cfg.finetune.recipe.eval_every, point.budget))
    return JobSpec(kind="finetune" if init else "scratch", ladder=cfg.models.ladder, model=point.model,
                   shards=str(target.shards.path), train=tuple(map(int, train)), val=tuple(map(int, target.val)),
                   test=tuple(map(int, target.test)), recipe=recipe,
                   seeds=tuple(cfg.seed * 1000 + s for s in cfg.sweep.seeds), init=init,
                   bf16=cfg.resources.bf16, loader_workers=cfg.resources.loader_workers, tags={"job": point.name})


# ------------------------------------------------------------------------------------------- trials


def pretrain_trial(config: dict, ctx: SweepContext) -> None:
    """A Tune trial: the pre-training checkpoint of one job, built through the store unless it exists."""
    from ray.tune.integration.ray_train import TuneReportCallback

    from scaling.train.job import export_weights, run_job
    from scaling.train.store import STATE_FILE, CheckpointStore

    job = PretrainJob(**config["job"])
    init = ctx.pretrained_weights(natural_stage(ctx.cfg, job)) if job.source == BOTH else None

    def build(tmp: Path) -> None:
        result = run_job(pretrain_spec(ctx, job, init), name=job.name, storage_path=ctx.jobs_dir,
                         resources=ctx.cfg.resources, callbacks=[TuneReportCallback()])
        export_weights(result, tmp / STATE_FILE)

    CheckpointStore(ctx.store_dir).get_or_create(ctx.pretrain_parts(job), build)


def finetune_trial(config: dict, ctx: SweepContext) -> None:
    """A Tune trial: one fine-tuning (or from-scratch) job at one grid point with sampled hyper-parameters."""
    from ray.tune.integration.ray_train import TuneReportCallback

    from scaling.train.job import run_job

    point = FinetunePoint(**{k: config[k] for k in AXES})
    job = point.pretrain(ctx.cfg.seed)
    init = ctx.pretrained_weights(job) if job is not None else None
    spec = finetune_spec(ctx, point, config["lr"], config["weight_decay"], init)
    run_job(spec, name=point.name, storage_path=ctx.jobs_dir, resources=ctx.cfg.resources,
            callbacks=[TuneReportCallback()])


# ------------------------------------------------------------------------------------------- search


class GridSpace:
    """Optuna define-by-run space: the grid axes as categoricals (fixed by the enqueued points) and the
    hyper-parameters as log-uniform ranges. A class, not a closure, so Tune can pickle the searcher."""

    def __init__(self, cfg):
        self.choices = {"model": list(cfg.models.sizes), "source": list(cfg.sweep.sources),
                        "pretrain_size": all_pretrain_sizes(cfg), "budget": list(cfg.finetune.budgets),
                        "shots": list(cfg.data.shots),
                        "sample": list(range(cfg.sweep.trials_per_cell))}
        self.ranges = {"lr": tuple(cfg.finetune.lr_range), "weight_decay": tuple(cfg.finetune.weight_decay_range)}

    def distributions(self) -> dict:
        import optuna

        out = {axis: optuna.distributions.CategoricalDistribution(c) for axis, c in self.choices.items()}
        out.update({k: optuna.distributions.FloatDistribution(*r, log=True) for k, r in self.ranges.items()})
        return out

    def __call__(self, trial) -> None:
        for axis, choices in self.choices.items():
            trial.suggest_categorical(axis, choices)
        for name, (low, high) in self.ranges.items():
            trial.suggest_float(name, low, high, log=True)


def make_searcher(cfg, pending: list[FinetunePoint], ledger: dict):
    """OptunaSearch over `GridSpace` that already knows the results of ended trials, with every pending
    point enqueued (interrupted ones with the hyper-parameters they started with)."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    space = GridSpace(cfg)
    sampler = optuna.samplers.TPESampler(seed=cfg.seed, multivariate=True)
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, study_name="finetune", direction="maximize", sampler=sampler)
    for entry in ledger.values():
        value = entry.get("metrics", {}).get(METRIC)
        if entry["status"] in ENDED and value is not None and math.isfinite(value):
            study.add_trial(optuna.trial.create_trial(params=_params(entry), distributions=space.distributions(),
                                                      value=value))
    for point in pending:
        known = ledger.get(point.name, {})
        extra = {k: known[k] for k in ("lr", "weight_decay") if k in known}
        study.enqueue_trial({**point.as_dict(), **extra})
    return OptunaSearch(space, metric=METRIC, mode="max", sampler=sampler, study_name="finetune", storage=storage)


def _params(entry: dict) -> dict:
    return {**{k: entry[k] for k in AXES}, "lr": entry["lr"], "weight_decay": entry["weight_decay"]}


class PerCellASHA(FIFOScheduler):
    """ASHA on optimizer steps (so a resumed trial keeps its place), comparing a trial only with trials of
    its own cell (same model, source, pre-training size, budget and shots): one ASHA per cell,
    created on the cell's first trial."""

    def __init__(self, eval_every: int, grace_evals: int, reduction_factor: int):
        super().__init__()
        self.eval_every, self.grace_evals, self.reduction_factor = eval_every, grace_evals, reduction_factor
        self._cells: dict[tuple, AsyncHyperBandScheduler] = {}

    def _cell(self, trial) -> AsyncHyperBandScheduler:
        point = FinetunePoint(**{k: trial.config[k] for k in AXES})
        if point.cell not in self._cells:
            every = min(self.eval_every, point.budget)
            self._cells[point.cell] = AsyncHyperBandScheduler(
                time_attr="step", metric=METRIC, mode="max", max_t=point.budget,
                grace_period=min(point.budget, every * self.grace_evals),
                reduction_factor=self.reduction_factor, stop_last_trials=False)
        return self._cells[point.cell]

    def on_trial_add(self, controller, trial):
        self._cell(trial).on_trial_add(controller, trial)

    def on_trial_result(self, controller, trial, result):
        return self._cell(trial).on_trial_result(controller, trial, result)

    def on_trial_complete(self, controller, trial, result):
        self._cell(trial).on_trial_complete(controller, trial, result)

    def on_trial_remove(self, controller, trial):
        self._cell(trial).on_trial_remove(controller, trial)


# ------------------------------------------------------------------------------------------- running


class StudyCallback(Callback):
    """Driver-side Tune callback: MLflow child runs, the trial ledger and the live progress view, all from
    the one process that sees every trial."""

    def __init__(self, kind: str, tracker, progress, ledger=None, describe=None):
        self.kind, self.tracker, self.progress, self.ledger = kind, tracker, progress, ledger
        #: trial config -> (job name, MLflow params)
        self.describe = describe

    def __getstate__(self):  # Tune pickles its run config; the live tracker and ledger stay in this process
        return {"kind": self.kind}

    def on_trial_start(self, iteration, trials, trial, **info):
        name, params = self.describe(trial.config)
        self.tracker.child(name, self.kind, params)
        if self.ledger is not None:
            self.ledger.update(name, status="running", started_at=time.time(), **params)
        self.progress.started(name)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        name, _ = self.describe(trial.config)
        run_id = self.tracker.child(name, self.kind, {})
        self.tracker.log_metrics(run_id, result, step=int(result.get("step", 0)))
        self.progress.result(name, result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        name, params = self.describe(trial.config)
        result = trial.last_result or {}
        complete = result.get("step") == params.get("budget", result.get("step"))
        self._end(name, "finished" if complete else "stopped", result, "FINISHED" if complete else "KILLED")

    def on_trial_error(self, iteration, trials, trial, **info):
        name, _ = self.describe(trial.config)
        self._end(name, "failed", trial.last_result or {}, "FAILED", error=str(trial.error_file or "see logs"))

    def _end(self, name: str, status: str, result: dict, mlflow_status: str, **extra) -> None:
        metrics = {k: v for k, v in result.items() if k.startswith(("val_", "test_", "train_", "eval_", "step"))}
        artifacts = {f"{split}_confusion.json": json.loads(metrics[f"{split}_confusion"])
                     for split in ("val", "test") if isinstance(metrics.get(f"{split}_confusion"), str)}
        self.tracker.finish(self.tracker.child(name, self.kind, {}), mlflow_status, artifacts)
        if self.ledger is not None:
            self.ledger.update(name, status=status, metrics=metrics, ended_at=time.time(), **extra)
        self.progress.ended(name, status, result.get(METRIC))


def _tuner(trainable, ctx: SweepContext, name: str, tune_config, callbacks, param_space=None):
    from ray import tune

    # a trial only waits for its TorchTrainer, whose workers hold the resources: it reserves no CPU, and one
    # byte of memory because Tune refuses an empty reservation. Trial actors are reused (reuse_actors in the
    # TuneConfigs): a new trial then skips a process start and its imports.
    return tune.Tuner(
        tune.with_resources(tune.with_parameters(trainable, ctx=ctx), {"CPU": 0, "memory": 1}),
        param_space=param_space or {},
        tune_config=tune_config,
        run_config=tune.RunConfig(name=name, storage_path=str(Path(ctx.jobs_dir).parent / "tune"),
                                  callbacks=callbacks, verbose=0),
    )


def model_params(cfg, model: str) -> dict:
    """Size and compute of a rung for the MLflow params and the results table."""
    from scaling import models

    rung = models.rung(cfg.models.ladder, model)
    return {"params": models.params(rung), "flops_per_image": models.flops_per_image(rung, cfg.data.resolution)}


def run_pretraining(ctx: SweepContext, wave: list[PretrainJob], concurrent: int, tracker, progress, ledger
                    ) -> None:
    from ray import tune

    def describe(config):
        job = PretrainJob(**config["job"])
        return job.name, {**config["job"], **model_params(ctx.cfg, job.model),
                          "recipe": asdict(ctx.cfg.pretrain)}

    callback = StudyCallback("pretrain", tracker, progress, ledger=ledger, describe=describe)
    _tuner(pretrain_trial, ctx, f"pretrain-{wave[0].source}",
           tune.TuneConfig(max_concurrent_trials=concurrent, reuse_actors=True),
           [callback], param_space={"job": tune.grid_search([asdict(j) for j in wave])}).fit()


def run_finetuning(ctx: SweepContext, pending: list[FinetunePoint], ledger, concurrent: int, tracker, progress,
                   attempt: int) -> None:
    from ray import tune

    cfg = ctx.cfg

    def describe(config):
        point = FinetunePoint(**{k: config[k] for k in AXES})
        return point.name, {**point.as_dict(), "lr": config["lr"], "weight_decay": config["weight_decay"],
                            "seeds": list(cfg.sweep.seeds), **model_params(cfg, point.model)}

    tune_config = tune.TuneConfig(
        search_alg=make_searcher(cfg, pending, ledger.entries()),
        scheduler=PerCellASHA(cfg.finetune.recipe.eval_every, cfg.sweep.asha_grace_evals,
                              cfg.sweep.asha_reduction_factor),
        num_samples=len(pending), max_concurrent_trials=concurrent, reuse_actors=True)
    callback = StudyCallback("finetune", tracker, progress, ledger=ledger, describe=describe)
    _tuner(finetune_trial, ctx, f"finetune-{attempt}", tune_config, [callback]).fit()
