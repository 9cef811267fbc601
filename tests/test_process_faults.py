"""Processes of a study killed for real: its MLflow tracking server mid-sweep, and its driver (SIGKILL) at three
seeded random moments of one smoke study in a row. After the last rerun, the results table, the checkpoint store
and the MLflow runs equal those of the uninterrupted smoke study (the `smoke_study` fixture, same config).

Both faults strike the same study (one run of the smoke study saved from the 5-minute budget of these tests): the
server is killed in the first attempt, which must go on logging through the restarted server before that
attempt's driver is killed. (The node of a two-node Ray cluster killed mid-job is in test_ray_two_nodes.py.)"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import psutil
import pytest

from scaling.track.runs import JOB_TAG, KIND_TAG, StudyTracker
from scaling.track.server import TrackingServer

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "studies" / "scaling_law.py"
#: fixes the moments of the kills
SEED = 14
#: per-run or timing values, which differ between any two runs of one study
VARYING = ("_seconds", "_at", "start_step", "time", "duration")


def _smoke_args(out: Path, cache: Path) -> list[str]:
    """The command line of the `smoke_study` fixture (tests/conftest.py), for another study directory."""
    return [sys.executable, str(SCRIPT), "--config", str(ROOT / "studies" / "configs" / "smoke.yaml"),
            "--out", str(out), f"data.cache_dir={cache}", "resources.num_workers=1"]


def _mlflow_runs(study_dir: Path) -> dict[str, dict]:
    """The study's live (not deleted) MLflow runs by job (the parent as 'study'): name, status, params, tags of
    the study, the last value of each metric that does not vary between runs, and the (metric, step) pairs."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{study_dir / 'mlflow.db'}")
    found = {}
    for experiment in client.search_experiments():
        for run in client.search_runs([experiment.experiment_id], max_results=1000):
            job = run.data.tags.get(JOB_TAG, run.data.tags.get(KIND_TAG))
            assert job not in found, f"two live MLflow runs for {job}"
            metrics = {k: v for k, v in run.data.metrics.items() if not k.endswith(VARYING)}
            history = {(k, m.step) for k in run.data.metrics for m in client.get_metric_history(run.info.run_id, k)}
            found[job] = {"name": run.info.run_name, "status": run.info.status, "params": run.data.params,
                          "kind": run.data.tags.get(KIND_TAG), "metrics": metrics, "history": history}
    return found


def _wait(condition, timeout: float, what: str, driver: subprocess.Popen | None = None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        if driver is not None and driver.poll() is not None:
            raise AssertionError(f"the study ended (code {driver.returncode}) before {what}")
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _server_pid(study_dir: Path) -> int | None:
    try:
        return int((study_dir / "logs" / "mlflow-server.pid").read_text())
    except (OSError, ValueError):
        return None


def _answers(study_dir: Path) -> bool:
    """Whether the study's own MLflow server answers (its port is in the run index only at the end, so it is
    read from the server's command line)."""
    pid = _server_pid(study_dir)
    try:
        command = psutil.Process(pid).cmdline() if pid else []
        port = command[command.index("--port") + 1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return response.status == 200
    except (psutil.Error, ValueError, OSError):
        return False


def _metrics_logged_since(study_dir: Path, since: float) -> int:
    import sqlite3

    with sqlite3.connect(f"file:{study_dir / 'mlflow.db'}?mode=ro", uri=True, timeout=10) as con:
        return con.execute("select count(*) from metrics where timestamp > ?", (int(since * 1000),)).fetchone()[0]


def _kill_group(pid: int) -> None:
    """SIGKILL to a process group (the driver and its local Ray cluster, or the MLflow server and its
    workers), then wait until none of it runs."""
    members = [p for p in psutil.process_iter() if _pgid(p.pid) == pid]
    os.killpg(pid, signal.SIGKILL)
    psutil.wait_procs(members, timeout=60)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


#: where each attempt's driver is killed: a seeded random moment after this attempt reached the stage
KILLED_IN = ("pretrain", "trials", "analysis")
MAX_DELAY_S = 1.5


@pytest.fixture(scope="module")
def faulted(smoke_study):
    """The smoke study of `smoke_study`'s config in a new directory (sharing its shard cache, as studies may),
    run four times: the first attempt loses its MLflow server while a job runs and then its driver, the second
    and third lose their drivers, each at a seeded random moment after the attempt reached its stage of
    `KILLED_IN` (a moment drawn over the whole run could fall after a resumed attempt has nothing left to do);
    the fourth runs to the end."""
    clean, result = smoke_study
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = clean.parent.parent / "faulted" / "smoke"
    out.parent.mkdir(parents=True, exist_ok=True)
    args = _smoke_args(out, clean.parent / "cache")
    rng = random.Random(SEED)
    events: dict = {"driver_kills": []}
    log = open(out.parent / "driver.log", "ab")
    for attempt, stage in enumerate(KILLED_IN):
        started = time.time()
        before = _server_pid(out)
        driver = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        _wait(lambda: _server_pid(out) not in (None, before) and _answers(out), 300, "the MLflow server", driver)
        if attempt == 0:
            # mid-sweep: while a job runs, whose metrics then go through the restarted server
            events["server_killed_while_running"] = _wait(lambda: _running(out, started), 600, "a job running",
                                                          driver)
            old = _server_pid(out)
            _kill_group(old)
            events["server_killed_in"] = _stage(out)
            killed = time.time()
            _wait(lambda: _server_pid(out) not in (None, old) and _answers(out), 180,
                  "the MLflow server was restarted", driver)
            _wait(lambda: _metrics_logged_since(out, killed), 300, "metrics logged after the restart", driver)
            events["server_pids"] = (old, _server_pid(out))
            events["metrics_after_restart"] = _metrics_logged_since(out, killed)
        _wait(lambda: _reached(out, stage, started), 600, f"attempt {attempt + 1} reached {stage}", driver)
        time.sleep(rng.uniform(0.0, MAX_DELAY_S))
        assert driver.poll() is None, f"attempt {attempt + 1} ended before its driver could be killed"
        where = _stage(out)
        _kill_group(driver.pid)
        events["driver_kills"].append({"after_s": round(time.time() - started, 1), "reached": stage,
                                       "ledgers": where})
    (out.parent / "faults.json").write_text(json.dumps(events, indent=1))  # what was struck when, to read back
    final = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=900)
    events["final"] = final
    return clean, out, events


def _ledger_entries(out: Path, ledger: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in (out / ledger).glob("*.json")] if (out / ledger).is_dir() else []


def _running(out: Path, since: float) -> str | None:
    """The ledger a job started after `since` is running in now, if one is (a killed driver leaves its jobs
    `running` in the ledger)."""
    return next((ledger for ledger in ("trials", "pretrain") if any(
        e["status"] == "running" and e["started_at"] > since for e in _ledger_entries(out, ledger))), None)


def _reached(out: Path, stage: str, since: float) -> bool:
    """Whether the attempt started at `since` got to `stage`: a job of that ledger started, or for the analysis,
    the results table written."""
    if stage == "analysis":
        table = out / "results.parquet"
        return table.is_file() and table.stat().st_mtime > since
    return any(e.get("started_at", 0) > since for e in _ledger_entries(out, stage))


def _stage(out: Path) -> str:
    """What the study was doing, read from its ledgers."""
    for ledger in ("trials", "pretrain"):
        entries = _ledger_entries(out, ledger)
        if entries:
            done = sum(e["status"] == "finished" for e in entries)
            return f"{ledger}: {done} of {len(entries)} started ended"
    return "starting (Ray)"


@pytest.mark.slow
def test_the_sweep_carries_on_through_a_killed_tracking_server(faulted):
    _, out, events = faulted
    old, new = events["server_pids"]
    assert new != old and not psutil.pid_exists(old)
    assert events["metrics_after_restart"] > 0  # the same attempt went on logging, through the new server
    assert events["server_killed_while_running"] in ("pretrain", "trials"), events  # mid-sweep, during a job
    assert "restart 1 of" in (out / "logs" / "mlflow-server.log").read_text()


@pytest.mark.slow
def test_three_driver_kills_then_a_rerun_equal_an_uninterrupted_study(faulted):
    clean, out, events = faulted
    final = events["final"]
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]
    assert len(events["driver_kills"]) == 3, events

    # the results table: the same trials, hyper-parameters and metrics (training resumes exactly)
    want, got = (pd.read_parquet(d / "results.parquet").sort_values("trial").reset_index(drop=True)
                 for d in (clean, out))
    stable = [c for c in want.columns if not c.endswith(VARYING)]
    assert list(got.columns) == list(want.columns)
    pd.testing.assert_frame_equal(got[stable], want[stable], rtol=1e-4)

    # the checkpoint store: the same entries, each complete, nothing half-built left
    def store(study_dir: Path) -> dict:
        root = study_dir / "checkpoints"
        return {p.name: json.loads((p / "manifest.json").read_text())["parts"]
                for p in root.iterdir() if not p.name.startswith(".")}

    assert store(out) == store(clean) and store(out)
    assert not list((out / "checkpoints" / ".tmp").iterdir())

    # MLflow: the same runs, once each, with the same names, status, params and metrics
    want, got = _mlflow_runs(clean), _mlflow_runs(out)
    assert sorted(got) == sorted(want)
    for job in want:
        assert {k: got[job][k] for k in ("name", "status", "kind", "params")} == \
            {k: want[job][k] for k in ("name", "status", "kind", "params")}, job
        assert got[job]["history"] == want[job]["history"], job
        assert got[job]["metrics"] == pytest.approx(want[job]["metrics"], rel=1e-4, nan_ok=True), job


def test_a_killed_tracking_server_is_restarted_without_losing_a_run(tmp_path):
    """The server alone: killed with SIGKILL between two writes, the next write waits for its restart."""
    server = TrackingServer(tmp_path, tmp_path / "logs").start()
    try:
        tracker = StudyTracker(server.uri, "faults", "faults")
        run = tracker.child("job-a", "finetune", {"lr": 0.1})
        tracker.log_metrics(run, {"val_roc_auc": 0.5}, step=10)
        old = server.process.pid
        _kill_group(old)
        tracker.log_metrics(run, {"val_roc_auc": 0.75}, step=20)  # blocks in MLflow's retries until the restart
        assert server.restarts == 1 and server.process.pid != old and _server_pid(tmp_path) == server.process.pid
        again = StudyTracker(server.uri, "faults", "faults")  # a resumed driver finds the same runs
        assert again.child("job-a", "finetune", {"lr": 0.1}) == run and again.parent_id == tracker.parent_id
        history = again.client.get_metric_history(run, "val_roc_auc")
        assert sorted((m.step, m.value) for m in history) == [(10, 0.5), (20, 0.75)]
    finally:
        server.stop()
    assert not _pgid(server.process.pid) and not (tmp_path / "logs" / "mlflow-server.pid").exists()
