"""`python studies/scaling_law.py` end to end: real Ray, a real MLflow server, a driver killed and resumed."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest

from scaling.config import load_config
from scaling.data.base import DataError
from scaling.data.stage import prepare_study_data

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "studies" / "scaling_law.py"
CONFIGS = ROOT / "studies" / "configs"


def study(*args, cache: Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args, f"data.cache_dir={cache}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=900, **kw)


def runs(db: Path) -> pd.DataFrame:
    with sqlite3.connect(db) as con:
        return pd.read_sql(
            "select r.run_uuid, r.status, "
            "(select value from tags t where t.run_uuid = r.run_uuid and t.key = 'scaling.kind') as kind, "
            "(select value from tags t where t.run_uuid = r.run_uuid and t.key = 'scaling.job') as job, "
            "(select value from tags t where t.run_uuid = r.run_uuid and t.key = 'mlflow.parentRunId') as parent "
            "from runs r", con)


def test_bad_config_is_rejected_before_anything_starts(tmp_path):
    out = tmp_path / "study"
    result = study("--config", str(CONFIGS / "smoke.yaml"), "--out", str(out), "models.sizes=[w8, huge]",
                   cache=tmp_path / "cache")
    assert result.returncode == 2
    assert "models.sizes[1]: got 'huge'; expected a rung of ladder 'cpu'" in result.stderr
    assert not out.exists() and not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_a_job_larger_than_the_cluster_is_a_clear_error(tmp_path):
    result = study("--config", str(CONFIGS / "smoke.yaml"), "--out", str(tmp_path / "big"),
                   "resources.num_workers=8", cache=tmp_path / "cache")
    assert result.returncode == 2
    assert "resources: one job needs 8 worker(s) x 1.0 CPU, but the Ray cluster has" in result.stderr


@pytest.mark.parametrize("name", ["covidx_bit", "tb_bit"])
def test_real_study_configs_validate_and_name_their_missing_roots(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert cfg.models.ladder == "bit" and cfg.resources.use_gpu
    with pytest.raises(DataError) as err:
        prepare_study_data(cfg)
    roots = [cfg.data.target.options["root"]] + [member.options["root"] for ref in cfg.data.sources.values()
                                                 for member in (ref.merge or ([ref] if ref.dataset else []))]
    assert len(roots) >= 3 and all(root in str(err.value) for root in roots)
    assert "published weights missing" in str(err.value) and "download --config" in str(err.value)


@pytest.mark.slow
def test_smoke_study_end_to_end(smoke_study):
    out, result = smoke_study
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    table = pd.read_parquet(out / "results.parquet")
    assert sorted(table["source"]) == ["medical", "scratch"]
    assert (table["status"] == "finished").all()
    assert table["test_roc_auc"].between(0, 1).all() and (table["finetune_flops"] > 0).all()
    assert table["test_roc_auc_sd"].notna().all()  # each trial trained the config's two seeds side by side

    mlflow_runs = runs(out / "mlflow.db")
    parent = mlflow_runs[mlflow_runs["kind"] == "study"]
    assert len(parent) == 1 and parent["status"].item() == "FINISHED"
    children = mlflow_runs[mlflow_runs["kind"] != "study"]
    assert sorted(children["kind"]) == ["finetune", "finetune", "pretrain"]
    assert (children["parent"] == parent["run_uuid"].item()).all()
    assert (children["status"] == "FINISHED").all()
    with sqlite3.connect(out / "mlflow.db") as con:
        kind = con.execute("select value from experiment_tags where key = 'mlflow.experimentKind'").fetchall()
        metrics = {k for (k,) in con.execute("select distinct key from metrics")}
    assert kind == [("custom_model_development",)]  # MLflow opens the model-training view, not GenAI's
    assert "test_roc_auc" in metrics and not metrics & {"pid", "timestamp", "time_this_iter_s", "training_iteration"}
    artifacts = {p.name for p in (out / "mlartifacts").rglob("*") if p.is_file()}
    assert {"findings.json", "fits.json", "dashboard.html"} <= artifacts
    assert f"dashboard: {out / 'dashboard.html'}" in result.stdout and "findings" in result.stdout

    summary = json.loads((out / "summary.json").read_text())
    assert summary["trials"] == 2
    figures = list((out / "figures").glob("*.png"))
    assert figures and all(f.stat().st_size > 1000 for f in figures)
    assert "MLflow" in result.stdout
    # Ray's session logs are reachable from the study: the driver node's raylet and every job's worker logs
    assert (out / "logs" / "ray").is_symlink() and list((out / "logs" / "ray").glob("raylet*.out"))

    # trust outputs: calibration columns, per-trial predictions, saliency of the tuned trials, reliability diagrams
    assert table["test_ece_calibrated"].notna().all() and table["saliency_pointing"].between(0, 1).all()
    for trial in table["trial"]:
        with np.load(out / "predictions" / f"{trial}.npz") as saved:
            assert saved["probs"].shape == (2, len(saved["labels"]))
        assert len(list((out / "saliency" / trial).glob("*_gradcam.png"))) == 8
    assert list((out / "figures").glob("reliability_*.png"))


def _start(args: list[str], cache: Path) -> subprocess.Popen:
    log = open(Path(args[args.index("--out") + 1]).parent / "driver.log", "a")
    return subprocess.Popen([sys.executable, str(SCRIPT), *args, f"data.cache_dir={cache}"], cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_mid_sweep(driver: subprocess.Popen, ledger: Path, finished: int) -> dict:
    """Wait until `finished` trials have ended and another one runs, started by this driver (an entry a stopped
    or killed one left `running` does not count); return the ledger then."""
    deadline = time.time() + 600
    since = time.time()
    while time.time() < deadline and driver.poll() is None:
        entries = {p.stem: json.loads(p.read_text()) for p in ledger.glob("*.json")} if ledger.exists() else {}
        statuses = [e["status"] for e in entries.values()]
        running = [e for e in entries.values() if e["status"] == "running" and e["started_at"] > since]
        if statuses.count("finished") >= finished and running:
            return entries
        time.sleep(0.5)
    raise AssertionError("the study ended (or hung) before it could be stopped mid-sweep")


@pytest.mark.slow
def test_a_stopped_then_killed_driver_resumes_without_rerunning_or_duplicating(tmp_path):
    out, cache = tmp_path / "resumed", tmp_path / "cache"
    args = ["--config", str(CONFIGS / "smoke.yaml"), "--out", str(out), "sweep.seeds=[0, 1]",
            "finetune.budgets=[20, 30, 40]", "sweep.max_concurrent_trials=1"]
    ledger = out / "trials"

    # SIGUSR1 (what Slurm sends before the time limit): a clean stop that says it can be resumed
    driver = _start(args, cache)
    _wait_mid_sweep(driver, ledger, finished=1)
    os.kill(driver.pid, signal.SIGUSR1)  # to the driver alone, as the job script forwards Slurm's signal
    assert driver.wait(timeout=300) == 75

    # SIGKILL of the resumed driver and its local Ray cluster; its MLflow server lives on
    driver = _start(args, cache)
    before = _wait_mid_sweep(driver, ledger, finished=2)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    orphan_server = int((out / "logs" / "mlflow-server.pid").read_text())
    assert _process_group(orphan_server)
    before = {p.stem: json.loads(p.read_text()) for p in ledger.glob("*.json")}
    finished_before = {k: v["ended_at"] for k, v in before.items() if v["status"] == "finished"}
    assert len(finished_before) >= 2

    result = study(*args, cache=cache)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    after = {p.stem: json.loads(p.read_text()) for p in ledger.glob("*.json")}
    # finished trials were not run again; interrupted ones kept their hyper-parameters
    assert {k: after[k]["ended_at"] for k in finished_before} == finished_before
    for name, entry in before.items():
        if entry["status"] == "running":
            assert after[name]["lr"] == entry["lr"]
    table = pd.read_parquet(out / "results.parquet")
    assert len(table) == 6 and (table["status"] == "finished").all()  # 2 sources x 3 budgets, as uninterrupted
    jobs = runs(out / "mlflow.db")["job"].dropna()
    assert not jobs.duplicated().any() and len(jobs) == 7  # 6 fine-tuning runs + 1 pre-training run
    # jobs trained in their trials' processes (the smoke config's num_workers 0) still report every evaluation
    with sqlite3.connect(out / "mlflow.db") as con:
        steps = con.execute("select count(distinct m.step) from metrics m join tags t on t.run_uuid = m.run_uuid "
                            "where m.key = 'val_roc_auc' and t.key = 'scaling.job' and "
                            "t.value = 'ft-w8-scratch-0-b40-k0-t0'").fetchone()[0]
    assert steps == 4  # steps 10, 20, 30, 40
    # the sweep's Optuna study holds each grid trial once, with the ledger's final value
    with sqlite3.connect(out / "optuna.db") as con:
        trials = con.execute("select t.state, v.value from trials t left join trial_values v "
                             "on v.trial_id = t.trial_id").fetchall()
    assert sorted(v for _, v in trials) == pytest.approx(sorted(table["val_roc_auc"]))
    assert {state for state, _ in trials} == {"COMPLETE"}
    assert not _process_group(orphan_server), "the resumed study did not end the orphaned MLflow server"


def _process_group(group: int) -> list[int]:
    return [p.pid for p in psutil.process_iter() if _pgid(p.pid) == group]


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None
