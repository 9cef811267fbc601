"""Running the study's jobs on Ray Tune: a sweep of pre-training jobs, then the fine-tuning sweep.

Every job is a Ray Train `TorchTrainer` run (scaling/train/job.py) inside one Tune trial: on Train workers, or in
the trial's own process when `resources.num_workers` is 0. What each job trains comes from jobs.py, the search
from search.py; this module runs them and, in `StudyCallback`, records them.

Pre-training: one Tune trial per unique job; each builds its checkpoint through the content-addressed store,
so a job finished earlier (or by a concurrent study) is reused, not retrained.

Faults of a job: one whose loss stops being finite ends as `diverged` (recorded with its step and value, told to
Optuna as pruned, stopped by ASHA, not retried: seeded, it would diverge again); one that fails (e.g. out of
memory, with the loop's message) ends as `failed`, is retried on the next run, and the sweep goes on either way.
A diverged pre-training job fails its trial, so no checkpoint of it is stored.

Resume: the trial ledger (ledger.py) records each trial's hyper-parameters when it starts and its outcome
when it ends. A restarted sweep skips ended trials, continues the Optuna study, re-runs interrupted trials
with their recorded hyper-parameters, and each job picks up its last checkpoint under its stable name.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import asdict
from pathlib import Path

from ray import tune

from scaling.config import ConfigError, ResourcesConfig
from scaling.sweep.jobs import StudyJobs, model_params
from scaling.sweep.ledger import Ledger
from scaling.sweep.plan import FinetunePoint, PretrainJob
from scaling.sweep.search import METRIC, PerCellASHA, make_searcher, point_of
from scaling.track.progress import Progress
from scaling.track.runs import StudyTracker
from scaling.train.faults import DIVERGED_STEP, describe_divergence
from scaling.train.job import divergence, export_weights, run_job
from scaling.train.store import WEIGHTS_FILE, CheckpointStore


class ClusterTooSmall(ConfigError):
    """The resources the config asks for one job exceed the whole Ray cluster."""


class PretrainDiverged(RuntimeError):
    """A pre-training job's loss stopped being finite: there is no checkpoint to store."""


def concurrency(res: ResourcesConfig, max_concurrent: int, cluster: dict) -> int:
    """How many jobs run at once: the configured limit (`sweep.max_concurrent_trials`), bounded by what the
    cluster (`ray.cluster_resources()`) can place."""
    workers = max(1, res.num_workers)  # num_workers 0: the job trains in its trial, which holds one worker's share
    fits = [cluster.get("CPU", 0) // (workers * res.cpus_per_worker)]
    if res.use_gpu:
        fits.append(cluster.get("GPU", 0) // (workers * res.gpus_per_worker))
    n = int(min(fits))
    if n < 1:
        need = f"{workers} worker(s) x {res.cpus_per_worker} CPU" + (
            f" and {res.gpus_per_worker} GPU" if res.use_gpu else "")
        raise ClusterTooSmall(f"resources: one job needs {need}, but the Ray cluster has "
                              f"{cluster.get('CPU', 0):g} CPU and {cluster.get('GPU', 0):g} GPU")
    return min(n, max_concurrent)


# ------------------------------------------------------------------------------------------- trials


def pretrain_trial(config: dict, jobs: StudyJobs) -> None:
    """A Tune trial: the pre-training checkpoint of one job, built through the store unless it exists."""
    job = PretrainJob(**config["job"])

    def build(tmp: Path) -> None:
        result = run_job(jobs.pretrain_spec(job), name=job.name, storage_path=jobs.jobs_dir,
                         resources=jobs.cfg.resources, tune=True)
        if found := divergence(result):
            raise PretrainDiverged(f"pre-training job {job.name} {describe_divergence(found)}; lower pretrain.lr "
                                   f"(now {jobs.cfg.pretrain.lr:g})")
        export_weights(result, tmp / WEIGHTS_FILE)

    CheckpointStore(jobs.store_dir).get_or_create(jobs.pretrain_parts(job), build)


def finetune_trial(config: dict, jobs: StudyJobs) -> None:
    """A Tune trial: one fine-tuning (or from-scratch) job at one grid point with sampled hyper-parameters."""
    point = point_of(config)
    run_job(jobs.finetune_spec(point, config["lr"], config["weight_decay"]), name=point.name,
            storage_path=jobs.jobs_dir, resources=jobs.cfg.resources, tune=True)


# ------------------------------------------------------------------------------------------- running


class StudyCallback(tune.Callback):
    """Driver-side Tune callback: MLflow child runs, the trial ledger and the live progress view, all from
    the one process that sees every trial."""

    def __init__(self, kind: str, tracker: StudyTracker, progress: Progress, ledger: Ledger | None = None,
                 describe=None):
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
        if DIVERGED_STEP in result:
            self._end(name, "diverged", result, "FAILED")
            return
        complete = result.get("step") == params.get("budget", result.get("step"))
        self._end(name, "finished" if complete else "stopped", result, "FINISHED" if complete else "KILLED")

    def on_trial_error(self, iteration, trials, trial, **info):
        name, _ = self.describe(trial.config)
        result = trial.last_result or {}
        # the driver's own copy of the trace: the one in the run's storage may not be synced yet
        local = Path(trial.error_file) if trial.error_file else None
        error = error_line(local.read_text() if local and local.is_file() else trial.get_error())
        diverged = DIVERGED_STEP in result or error.startswith(PretrainDiverged.__name__)
        self._end(name, "diverged" if diverged else "failed", result, "FAILED", error=error,
                  error_file=str(trial.error_file or "see logs"))

    def _end(self, name: str, status: str, result: dict, mlflow_status: str, **extra) -> None:
        metrics = recorded_metrics(result)
        artifacts = {f"{split}_confusion.json": json.loads(metrics[f"{split}_confusion"])
                     for split in ("val", "test") if isinstance(metrics.get(f"{split}_confusion"), str)}
        self.tracker.finish(self.tracker.child(name, self.kind, {}), mlflow_status, artifacts)
        if self.ledger is not None:
            self.ledger.update(name, status=status, metrics=metrics, ended_at=time.time(), **extra)
        if DIVERGED_STEP in result:
            self.progress.ended(name, describe_divergence(result), None)
        else:
            self.progress.ended(name, f"{status} ({extra['error']})" if "error" in extra else status,
                                result.get(METRIC))


def recorded_metrics(result: dict) -> dict:
    """What the ledger keeps of a trial's last result."""
    return {k: v for k, v in result.items() if k.startswith(("val_", "test_", "train_", "eval_", "step", "diverged_"))}


def end_stored_pretraining(names: list[str], tracker: StudyTracker, ledger: Ledger) -> None:
    """End pre-training jobs whose checkpoint is stored but whose end was never recorded (the driver was killed
    between the two): from what their MLflow run logged, as the callback would have."""
    for name in names:
        run_id = tracker.child(name, "pretrain", {})
        metrics = recorded_metrics(tracker.latest_metrics(run_id))
        tracker.finish(run_id, "FINISHED")
        ledger.update(name, status="finished", metrics=metrics, ended_at=time.time())


def error_line(trace: str | None) -> str:
    """The line of a trial's error trace that says what went wrong: this package's own fault (out of memory, a
    diverged pre-training job) wherever Ray and Train's wrappers put it, else the last exception raised."""
    lines = [line.strip() for line in (trace or "").splitlines() if line.strip()]
    ours = [m[0] for line in lines if (m := re.search(r"\b(OutOfMemory|PretrainDiverged): .*", line))]
    raised = [line for line in lines if re.match(r"[\w.]+(\([\w.]+\))?: ", line)]
    return (ours or raised or lines or ["see the trial's error file"])[-1]


def _tuner(trainable, jobs: StudyJobs, name: str, tune_config, callbacks, param_space=None):
    # Trial actors are reused (reuse_actors in the TuneConfigs): a new trial then skips a process start and
    # its imports.
    return tune.Tuner(
        tune.with_resources(tune.with_parameters(trainable, jobs=jobs), trial_resources(jobs.cfg.resources)),
        param_space=param_space or {},
        tune_config=tune_config,
        run_config=tune.RunConfig(name=name, storage_path=str(Path(jobs.jobs_dir).parent / "tune"),
                                  callbacks=callbacks, verbose=0),
    )


def trial_resources(res: ResourcesConfig) -> dict:
    """What a Tune trial reserves. A job in the trial's process (num_workers 0) needs one worker's share; a
    trial that only waits on its TorchTrainer, whose workers hold the resources, reserves no CPU (and one byte
    of memory, because Tune refuses an empty reservation)."""
    if res.num_workers:
        return {"CPU": 0, "memory": 1}
    return {"CPU": res.cpus_per_worker, **({"GPU": res.gpus_per_worker} if res.use_gpu else {})}


def run_pretraining(jobs: StudyJobs, wave: list[PretrainJob], concurrent: int, tracker: StudyTracker,
                    progress: Progress, ledger: Ledger) -> None:
    """One wave of pre-training jobs, one Tune trial each."""
    cfg = jobs.cfg

    def describe(config):
        job = PretrainJob(**config["job"])
        return job.name, {**config["job"], **model_params(cfg.models.ladder, job.model, cfg.data.resolution),
                          "recipe": asdict(cfg.pretrain)}

    callback = StudyCallback("pretrain", tracker, progress, ledger=ledger, describe=describe)
    _tuner(pretrain_trial, jobs, f"pretrain-{wave[0].source}",
           tune.TuneConfig(max_concurrent_trials=concurrent, reuse_actors=True),
           [callback], param_space={"job": tune.grid_search([asdict(j) for j in wave])}).fit()


def run_finetuning(jobs: StudyJobs, pending: list[FinetunePoint], ledger: Ledger, concurrent: int,
                   tracker: StudyTracker, progress: Progress, attempt: int, optuna_db: Path) -> None:
    """The fine-tuning sweep over `pending` points as Tune experiment `finetune-<attempt>` (a resumed sweep is
    a new experiment); the Optuna study lives in the SQLite file `optuna_db`."""
    cfg = jobs.cfg

    def describe(config):
        point = point_of(config)
        return point.name, {**point.as_dict(), "lr": config["lr"], "weight_decay": config["weight_decay"],
                            "target_size": len(jobs.finetune_train(point)),
                            "reference": jobs.on_reference(point), "seeds": list(cfg.sweep.seeds),
                            **model_params(cfg.models.ladder, point.model, cfg.data.resolution)}

    tune_config = tune.TuneConfig(
        search_alg=make_searcher(cfg, pending, ledger.entries(), f"sqlite:///{Path(optuna_db).resolve()}"),
        scheduler=PerCellASHA(cfg.finetune.recipe.eval_every, cfg.sweep.asha_grace_evals,
                              cfg.sweep.asha_reduction_factor),
        num_samples=len(pending), max_concurrent_trials=concurrent, reuse_actors=True)
    callback = StudyCallback("finetune", tracker, progress, ledger=ledger, describe=describe)
    _tuner(finetune_trial, jobs, f"finetune-{attempt}", tune_config, [callback]).fit()
