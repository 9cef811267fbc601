"""The study's own MLflow tracking server: an `mlflow server` process on 127.0.0.1 with a SQLite store in the
study directory, kept alive while the study runs, and the command that serves the store again afterwards."""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil

#: the study directory's MLflow store: the SQLite file and the artifacts folder
DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
#: where `reopen_command` serves a finished study's runs: the links of its dashboard
REOPEN_UI = "http://127.0.0.1:5000"
#: how often the study's own server is looked at, and how many times one run of a study starts it again
WATCH_INTERVAL_S = 1.0
MAX_RESTARTS = 5


def store_paths(study_dir: Path) -> tuple[Path, Path]:
    """The SQLite file and the artifacts folder of a study's MLflow store."""
    return (study_dir / DB_FILE).resolve(), (study_dir / ARTIFACTS_DIR).resolve()


def reopen_command(study_dir: Path) -> str:
    """The command that serves a study's MLflow store at `REOPEN_UI` once its own server has stopped."""
    db, artifacts = store_paths(Path(study_dir))
    return (f"mlflow ui --port {REOPEN_UI.rsplit(':', 1)[1]} --backend-store-uri sqlite:///{db} "
            f"--artifacts-destination {artifacts.as_uri()}")


class TrackingServer:
    """An `mlflow server` process on 127.0.0.1 with a SQLite backend in the study directory."""

    def __init__(self, study_dir: Path, log_dir: Path, port: int | None = None):
        self.db, self.artifacts = store_paths(study_dir)
        self.port = port or _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / "mlflow-server.log"
        self.process: subprocess.Popen | None = None
        self.restarts = 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # a restart and stop() never overlap

    @property
    def pid_path(self) -> Path:
        return self.log_path.with_suffix(".pid")

    def start(self, timeout: float = 120) -> TrackingServer:
        self._launch(timeout)
        self._watcher = threading.Thread(target=self._keep_alive, args=(timeout,), name="mlflow-server-watch",
                                         daemon=True)
        self._watcher.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            if self.process is None:
                return
            if self.process.poll() is None:
                _end_group(self.process)
            else:  # died on its own: its children may still hold the port
                self._stop_orphan()
            self.pid_path.unlink(missing_ok=True)

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
        _end_group(self.process)
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

    def _stop_orphan(self) -> None:
        """A driver killed outright leaves its server running: end it before starting this study's again.
        The server leads its own process group; only a group still running mlflow is ended."""
        try:
            group = int(self.pid_path.read_text())
        except (OSError, ValueError):
            return
        for process in psutil.process_iter(["cmdline"]):
            with contextlib.suppress(OSError):  # ended meanwhile (ProcessLookupError is an OSError)
                if os.getpgid(process.pid) == group and "mlflow" in " ".join(process.info["cmdline"] or ()):
                    os.killpg(group, 9)
                    return


def _end_group(process: subprocess.Popen) -> None:
    """End a process and its process group (the server runs gunicorn/uvicorn children): SIGTERM, then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, 15)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        process.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
