"""MLflow: the study's tracking server, its parent run, and one child run per training job.

The only module that talks to MLflow. All logging happens in the study driver (never in Train workers), so
one process writes to the tracking server and concurrent trials can neither lose nor duplicate a run. Runs are
found again by tags (`scaling.study`, `scaling.job`), which is what makes a resumed study continue its runs
instead of opening new ones.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from importlib import metadata
from pathlib import Path

STUDY_TAG = "scaling.study"
JOB_TAG = "scaling.job"
KIND_TAG = "scaling.kind"
#: where `TrackingServer.reopen_command` serves a finished study's runs: the links of its dashboard
REOPEN_UI = "http://127.0.0.1:5000"
#: how often the study's own server is looked at, and how many times one run of a study starts it again
WATCH_INTERVAL_S = 1.0
MAX_RESTARTS = 5
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


class TrackingServer:
    """An `mlflow server` process on 127.0.0.1 with a SQLite backend in the study directory."""

    def __init__(self, study_dir: Path, log_dir: Path, port: int | None = None):
        self.db = (study_dir / "mlflow.db").resolve()
        self.artifacts = (study_dir / "mlartifacts").resolve()
        self.port = port or _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / "mlflow-server.log"
        self.process: subprocess.Popen | None = None
        self.restarts = 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # a restart and stop() never overlap

    def start(self, timeout: float = 120) -> TrackingServer:
        self._launch(timeout)
        self._watcher = threading.Thread(target=self._keep_alive, args=(timeout,), name="mlflow-server-watch",
                                         daemon=True)
        self._watcher.start()
        return self

    def _launch(self, timeout: float) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._stop_orphan()
        command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
                   "--backend-store-uri", f"sqlite:///{self.db}", "--artifacts-destination", self.artifacts.as_uri(),
                   "--workers", "1"]
        # the server's job runner (a dozen huey consumers, ~2 GB) serves GenAI features a study does not use
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                            env=env)
        self.pid_path.write_text(str(self.process.pid))
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited with code {self.process.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        self._end(self.process)
        raise RuntimeError(f"mlflow server did not answer on {self.uri} within {timeout:.0f} s; see {self.log_path}")

    def _keep_alive(self, timeout: float) -> None:
        """A server that dies mid-study (killed, out of memory) is started again on the same port and SQLite
        file. Chosen over buffering and backfilling from the ledgers: the ledgers hold only each trial's final
        metrics, while a restart loses nothing. Everything the server committed is in SQLite; a call in flight is
        retried by MLflow's client (connection errors, with backoff, for about two minutes), which bridges the
        restart, and a retried write cannot duplicate anything: metrics are deduplicated by MLflow, params
        are idempotent, and `StudyTracker` removes a run created twice. After MAX_RESTARTS the server is left
        down, and MLflow's own connection error ends the study."""
        while not self._stopping.wait(WATCH_INTERVAL_S):
            with self._lock:
                if self._stopping.is_set() or self.process.poll() is None:
                    continue
                if self.restarts >= MAX_RESTARTS:
                    return
                self.restarts += 1
                with open(self.log_path, "a") as log:
                    log.write(f"\n[scaling] mlflow server exited with code {self.process.returncode}; "
                              f"restart {self.restarts} of {MAX_RESTARTS}\n")
                try:
                    self._launch(timeout)
                except RuntimeError:
                    continue  # the next look tries again, up to MAX_RESTARTS

    @property
    def pid_path(self) -> Path:
        return self.log_path.with_suffix(".pid")

    def _stop_orphan(self) -> None:
        """A driver killed outright leaves its server running: end it before starting this study's again.
        The server leads its own process group; only a group still running mlflow is ended."""
        try:
            group = int(self.pid_path.read_text())
        except (OSError, ValueError):
            return
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                if int(stat.read_text().rsplit(")", 1)[1].split()[2]) == group and \
                        b"mlflow" in (stat.parent / "cmdline").read_bytes():
                    os.killpg(group, 9)
                    return
            except (OSError, ValueError, IndexError):
                continue

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            if self.process is None:
                return
            if self.process.poll() is None:
                self._end(self.process)
            else:  # died on its own: its children may still hold the port
                self._stop_orphan()
            self.pid_path.unlink(missing_ok=True)

    @staticmethod
    def _end(process: subprocess.Popen) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 15)  # the server runs gunicorn/uvicorn children: end the whole group
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()

    def reopen_command(self) -> str:
        return (f"mlflow ui --port {REOPEN_UI.rsplit(':', 1)[1]} --backend-store-uri sqlite:///{self.db} "
                f"--artifacts-destination {self.artifacts.as_uri()}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
