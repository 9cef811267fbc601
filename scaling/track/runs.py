"""MLflow runs of a study: its parent run and one child run per training job, and the code version they ran.

The only module that talks to MLflow's API. All logging happens in the study driver (never in Train workers), so
one process writes to the tracking server and concurrent trials can neither lose nor duplicate a run. Runs are
found again by tags (`scaling.study`, `scaling.job`), which is what makes a resumed study continue its runs
instead of opening new ones.
"""
from __future__ import annotations

import json
import subprocess
import time
from importlib import metadata
from pathlib import Path

STUDY_TAG = "scaling.study"
JOB_TAG = "scaling.job"
KIND_TAG = "scaling.kind"
#: the study directory's index of its runs (`StudyTracker.run_index`), read by the dashboard
RUN_INDEX = "mlflow_runs.json"
PACKAGES = ("torch", "timm", "ray", "optuna", "mlflow", "numpy", "scaling")
#: opens the experiment in MLflow's model-training view (runs table, charts); untagged, MLflow 3.17 shows its
#: GenAI view ("Traces: 0")
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
#: Tune's own entries in every result (ray.tune.result.AUTO_RESULT_KEYS and its trial bookkeeping), spelled out
#: so that this module needs no Ray: a child run carries only the study's metrics
TUNE_KEYS = frozenset({
    "training_iteration", "time_total_s", "time_this_iter_s", "time_since_restore", "timestamp", "date", "pid",
    "hostname", "node_ip", "done", "trial_id", "experiment_tag", "iterations_since_restore",
    "timesteps_since_restore", "timesteps_total", "episodes_total", "episodes_this_iter", "should_checkpoint",
    "checkpoint_dir_name", "config"})


def code_version(root: Path) -> dict[str, str]:
    """The git commit of the project (with a mark when the tree has uncommitted changes) and package versions."""
    info = {}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True)
        info["git_commit"] = commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        info["git_commit"] = "unknown (not a git checkout)"
    for package in PACKAGES:
        try:
            info[f"version.{package}"] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return info


class StudyTracker:
    """The study's parent run and its children, found again by tags when a study resumes."""

    def __init__(self, uri: str, experiment: str, study: str, ui: str | None = None):
        """``ui``: where a reader browses these runs later (default: the tracking URI)."""
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        self.uri, self.study, self.ui = uri, study, ui or uri
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        for key, value in EXPERIMENT_KIND.items():
            self.client.set_experiment_tag(self.experiment_id, key, value)
        self.version: dict[str, str] = {}
        self.parent_id = self._find_or_create({STUDY_TAG: study, KIND_TAG: "study"}, run_name=study)
        self._children: dict[str, str] = {}

    def _find_or_create(self, tags: dict, run_name: str, parent: str | None = None) -> str:
        runs = self._tagged(tags)
        if runs:
            run_id = runs[0].info.run_id
            if runs[0].info.status != "RUNNING":
                self.client.update_run(run_id, status="RUNNING")
            return run_id
        if parent:
            tags = {**tags, "mlflow.parentRunId": parent}
        self.client.create_run(self.experiment_id, tags=tags, run_name=run_name)
        # a server killed after committing a create but before answering makes the client's retry create the
        # run again: the oldest one stays, the later ones are deleted
        first, *extra = self._tagged(tags)
        for run in extra:
            self.client.delete_run(run.info.run_id)
        return first.info.run_id

    def _tagged(self, tags: dict) -> list:
        query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        return self.client.search_runs([self.experiment_id], filter_string=query,
                                       order_by=["attributes.start_time ASC"])

    def log_study(self, config: dict, version: dict) -> None:
        """Config (flattened) and code version on the parent run; the config file itself as an artifact."""
        params = {k: _short(v) for k, v in _flatten(config).items()}
        existing = self.client.get_run(self.parent_id).data.params
        self._log_params(self.parent_id, {k: v for k, v in params.items() if k not in existing})
        self.version = version
        for k, v in version.items():
            self.client.set_tag(self.parent_id, k, v)
        self.client.log_dict(self.parent_id, config, "study_config.json")

    def child(self, job: str, kind: str, params: dict) -> str:
        """The run of training job `job` (a stable key), created on first use with its params."""
        if job not in self._children:
            run_id = self._find_or_create({STUDY_TAG: self.study, JOB_TAG: job, KIND_TAG: kind}, run_name=job,
                                          parent=self.parent_id)
            existing = self.client.get_run(run_id).data.params
            self._log_params(run_id, {k: _short(v) for k, v in params.items() if k not in existing})
            self._children[job] = run_id
        return self._children[job]

    def log_metrics(self, run_id: str, metrics: dict, step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()
                 if k not in TUNE_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool)]
        if batch:
            self.client.log_batch(run_id, metrics=batch)

    def latest_metrics(self, run_id: str) -> dict:
        """The last value of each metric a run logged."""
        return dict(self.client.get_run(run_id).data.metrics)

    def finish(self, run_id: str, status: str, artifacts: dict | None = None) -> None:
        """End a run as FINISHED / FAILED / KILLED, with JSON artifacts (e.g. a confusion matrix)."""
        for name, content in (artifacts or {}).items():
            self.client.log_dict(run_id, content, name)
        self.client.set_terminated(run_id, status=status)

    def add_to_job(self, job: str, metrics: dict, paths: list[Path], artifact_path: str, step: int) -> None:
        """Metrics and files added to job `job`'s run after it ended (the saliency stage), leaving its status."""
        query = f"tags.`{STUDY_TAG}` = '{self.study}' and tags.`{JOB_TAG}` = '{job}'"
        runs = self.client.search_runs([self.experiment_id], filter_string=query, max_results=1)
        if not runs:
            return
        self.log_metrics(runs[0].info.run_id, metrics, step)
        for path in paths:
            self.client.log_artifact(runs[0].info.run_id, str(path), artifact_path)

    def log_files(self, paths: list[Path], artifact_path: str | None = None) -> None:
        for path in paths:
            self.client.log_artifact(self.parent_id, str(path), artifact_path)

    def run_index(self) -> dict:
        """The study's runs for the dashboard: run id per job (found by tags, as a resume finds them), a link to
        each in the MLflow UI, and the code version the study ran."""
        ui = self.ui
        runs = self.client.search_runs([self.experiment_id], filter_string=f"tags.`{STUDY_TAG}` = '{self.study}'",
                                       max_results=50_000)
        jobs = {r.data.tags[JOB_TAG]: r.info.run_id for r in runs if JOB_TAG in r.data.tags}
        link = f"{ui.rstrip('/')}/#/experiments/{self.experiment_id}/runs/"
        return {"tracking_uri": self.uri, "ui": ui, "experiment_id": self.experiment_id,
                "parent_run_id": self.parent_id, "parent_link": link + self.parent_id,
                "runs": {job: {"run_id": rid, "link": link + rid} for job, rid in sorted(jobs.items())},
                "version": self.version}

    def close(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.parent_id, status=status)

    def _log_params(self, run_id: str, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow's batch limit for params
            self.client.log_batch(run_id, params=items[i:i + 100])


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _short(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text[:6000]  # MLflow's param value limit
