"""ray_cluster on a real Slurm (the one-node cluster .ci/setup_slurm.sh starts): the smoke study submitted with
`python -m ray_cluster submit`, whose MLflow server and Ray dashboard are asked without the study's login while
it runs, and which writes no secret anywhere; and a chain of jobs stopped by the time-limit signal, resubmitted
and resumed (a rehearsal: --rehearse reaches every job's study, and each logs in to MLflow).
Where Slurm is not running these tests skip with the reason; under CI (CI=true) they fail instead."""
from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from ray_cluster.credentials import MLFLOW_PASSWORD, MLFLOW_USER, MLFLOW_USERS_DB, RAY_TOKEN
from ray_cluster.slurm import ACTIVE, job_states
from ray_cluster.study_jobs import read_jobs
from test_ray_two_nodes import _free_ports

pytestmark = pytest.mark.slow

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SMOKE = PROJECT_ROOT / "studies" / "configs" / "smoke.yaml"
TB_BIT = PROJECT_ROOT / "studies" / "configs" / "tb_bit.yaml"
STANDIN = Path(__file__).with_name("slurm_standin_study.py")
#: Ray's worker ports, away from the default range of any other Ray on the machine
WORKER_PORTS = (25000, 25199)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must run the Slurm tests (.ci/run calls .ci/setup_slurm.sh)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def node_cpus() -> int:
    """The CPUs of the cluster's idle node, once Slurm is known to answer."""
    if not shutil.which("sbatch"):
        _unavailable("Slurm is not installed (no sbatch); .ci/setup_slurm.sh installs a one-node cluster")
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True)
    if "UP" not in ping.stdout:
        _unavailable(f"slurmctld does not answer: {ping.stdout.strip() or ping.stderr.strip()}")
    idle = subprocess.run(["sinfo", "--noheader", "--states=idle", "--format=%c"], capture_output=True, text=True)
    if not idle.stdout.strip():
        _unavailable("no idle Slurm node: " + subprocess.run(["sinfo"], capture_output=True, text=True).stdout)
    return int(idle.stdout.split()[0])


def _cancel_jobs(study_dir: Path) -> None:
    ids = [row[0] for row in read_jobs(study_dir)]
    active = [j for j, s in job_states(ids).items() if s.state in ACTIVE]
    if active:
        subprocess.run(["scancel", *active])


@pytest.fixture
def study_dir(tmp_path):
    """The study directory; every job of it that is still queued or running is cancelled afterwards."""
    yield tmp_path / "study"
    _cancel_jobs(tmp_path / "study")


@pytest.fixture(scope="module")
def smoke_job(node_cpus, tmp_path_factory):
    """The smoke study submitted once, for the test that asks its servers for their login while it runs and the
    test that checks what it wrote once it has ended."""
    study_dir = tmp_path_factory.mktemp("smoke") / "study"
    started = time.time()
    _submit(study_dir, node_cpus, "--time=00:20:00", f"data.cache_dir={study_dir.parent / 'cache'}")
    yield study_dir, started
    _cancel_jobs(study_dir)


def _submit(study_dir: Path, cpus: int, *extra: str, config: Path = SMOKE) -> None:
    names = ["gcs", "dashboard", "client", "mlflow", "node-manager", "object-manager", "agent-grpc", "agent-http",
             "runtime-env-agent", "metrics"]
    ports = [f"--port={n}={p}" for n, p in zip(names, _free_ports(len(names)))]
    ports += [f"--port=min-worker={WORKER_PORTS[0]}", f"--port=max-worker={WORKER_PORTS[1]}"]
    proc = subprocess.run(
        [sys.executable, "-m", "ray_cluster", "submit", "--config", str(config), "--nodes", "1", "--site", "generic",
         "--cpus-per-node", str(cpus), "--account", "ci", "--out", str(study_dir), *ports, *extra],
        capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert proc.returncode == 0, proc.stderr


def _wait_for_chain(study_dir: Path, timeout: float) -> list[str]:
    """Wait until no job of the study is queued or running; return the job ids in order."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        ids = [row[0] for row in read_jobs(study_dir)]
        if ids and not any(s.state in ACTIVE for s in job_states(ids).values()):
            return ids
        time.sleep(3)
    logs = "\n".join(p.read_text()[-3000:] for p in sorted((study_dir / "slurm").glob("*.out")))
    pytest.fail(f"the study's jobs did not end within {timeout} s:\n{logs}")


def _assert_nothing_left(study_dir: Path, job_ids: list[str]) -> None:
    """No process of the jobs survives them (all inherit SLURM_JOB_ID, Ray workers and MLflow included)."""
    left = []
    for proc in psutil.process_iter():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and proc.environ().get("SLURM_JOB_ID") in job_ids:
                left.append(f"{proc.pid} {' '.join(proc.cmdline())[:120]}")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    assert not left, "processes left behind:\n" + "\n".join(left)
    for job_id in job_ids:
        log = (study_dir / "slurm" / f"{job_id}.out").read_text()
        assert "cluster stopped" in log, log[-3000:]
        assert not Path(f"/tmp/r{job_id}").exists(), "the node-local Ray temp dir was not removed"
        assert list((study_dir / "slurm" / job_id / "ray-logs").glob("*/raylet.out")), "Ray's logs were not kept"


def _say(capsys, text: str) -> None:
    """Print past pytest's capture: the wall times belong in the CI log."""
    with capsys.disabled():
        print(f"\n{text}")


def _http(url: str, authorization: str = "", body: dict | None = None) -> int:
    """The HTTP status of a GET (or, with a body, a JSON POST) to `url`."""
    headers = {"Content-Type": "application/json", **({"Authorization": authorization} if authorization else {})}
    data = json.dumps(body).encode() if body is not None else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=60) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _cluster_up(study_dir: Path, timeout: float) -> dict[str, str]:
    """cluster.env of the study's running job, once its cluster is up (it stays up while the study runs)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        env_file = study_dir / "slurm" / "cluster.env"
        if env_file.is_file():
            env = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
            state = job_states([env["JOB_ID"]]).get(env["JOB_ID"])
            if state and state.state == "RUNNING":
                return env
        if not any(s.state in ACTIVE for s in job_states([row[0] for row in read_jobs(study_dir)]).values()):
            break  # the job ended without bringing its cluster up
        time.sleep(1)
    logs = "\n".join(p.read_text()[-3000:] for p in sorted((study_dir / "slurm").glob("*.out")))
    pytest.fail(f"no job of {study_dir} brought its cluster up within {timeout} s:\n{logs}")


def test_mlflow_and_the_ray_dashboard_refuse_requests_without_the_study_login(smoke_job):
    study_dir, _ = smoke_job
    env = _cluster_up(study_dir, timeout=600)
    slurm = study_dir / "slurm"
    for name in (MLFLOW_PASSWORD, RAY_TOKEN, MLFLOW_USERS_DB):
        assert stat.S_IMODE((slurm / name).stat().st_mode) == 0o600, name
    password, token = (slurm / MLFLOW_PASSWORD).read_text().strip(), (slurm / RAY_TOKEN).read_text().strip()

    # MLflow's REST API on the head node's address, as any account of the cluster reaches it
    mlflow = f"http://{env['HEAD_IP']}:{env['PORT_MLFLOW']}"
    experiment = f"{mlflow}/api/2.0/mlflow/experiments/get?experiment_id=0"
    assert _http(f"{mlflow}/health") == 200
    assert _http(experiment) == 401
    assert _http(experiment, _basic(MLFLOW_USER, "not-the-password")) == 401
    assert _http(experiment, _basic(MLFLOW_USER, password)) == 200
    # another user of the same server (only the study's admin can make one) sees nothing of the study
    other = {"username": "colleague", "password": "another-users-password"}
    assert _http(f"{mlflow}/api/2.0/mlflow/users/create", body=other) == 401
    assert _http(f"{mlflow}/api/2.0/mlflow/users/create", _basic(MLFLOW_USER, password), other) == 200
    assert _http(experiment, _basic(other["username"], other["password"])) == 403

    # Ray's token mode covers the dashboard's HTTP API (all but the page's shell and health checks)
    dashboard = f"http://{env['HEAD_IP']}:{env['PORT_DASHBOARD']}/api/version"
    assert _http(dashboard) == 401
    assert _http(dashboard, "Bearer not-the-token") == 403
    assert _http(dashboard, f"Bearer {token}") == 200

    # no process shows a secret on its command line (what `ps` shows every account)
    shown = [" ".join(p.info["cmdline"])[:200] for p in psutil.process_iter(["cmdline"])
             if any(secret in " ".join(p.info["cmdline"] or ()) for secret in (password, token))]
    assert not shown, shown


def test_smoke_study_runs_under_sbatch_and_logs_to_the_head_nodes_mlflow(smoke_job, capsys):
    from mlflow.tracking import MlflowClient

    study_dir, started = smoke_job
    (job_id,) = _wait_for_chain(study_dir, timeout=900)
    _say(capsys, f"sbatch smoke study: {time.time() - started:.0f} s wall from submission to the end of the job")
    log = (study_dir / "slurm" / f"{job_id}.out").read_text()
    assert "study completed" in log, log[-5000:]
    for name in ("summary.json", "results.parquet", "fits.json"):
        assert (study_dir / name).is_file(), name

    # the study ran on this job's Ray cluster (a driver besides the job's own node check) and logged through
    # the MLflow server the job started on the head node
    drivers = list((study_dir / "slurm" / job_id / "ray-logs").glob("*/python-core-driver-*.log"))
    assert len(drivers) >= 2, drivers
    assert "POST /api/2.0/mlflow/runs/create" in (study_dir / "slurm" / job_id / "mlflow.log").read_text()

    import pandas as pd

    trials = len(pd.read_parquet(study_dir / "results.parquet"))
    client = MlflowClient(tracking_uri=f"sqlite:///{study_dir / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert [r.info.status for r in parents] == ["FINISHED"]
    assert len(children) >= trials > 0
    assert {r.info.status for r in children} == {"FINISHED"}
    _assert_nothing_left(study_dir, [job_id])

    # the study logged in with the job's password; neither it nor Ray's token went anywhere but their files
    secrets = {name: (study_dir / "slurm" / name).read_text().strip() for name in (MLFLOW_PASSWORD, RAY_TOKEN)}
    for run in runs:
        logged = [*run.data.params.items(), *run.data.tags.items()]
        assert not [(k, v) for k, v in logged for secret in secrets.values() if secret in v]
    found = [(path, name) for path in study_dir.rglob("*") if path.is_file() and path.name not in secrets
             for name, secret in secrets.items() if secret.encode() in path.read_bytes()]
    assert not found, f"secrets written to: {found}"


def test_time_limit_signal_stops_resubmits_and_resumes_to_completion(node_cpus, study_dir, capsys):
    started = time.time()
    # 4 minutes per job, the stop signal 60 s before the end (Slurm sends it up to 30 s earlier still): the
    # stand-in's first attempt runs until that signal, a resumed one completes 5 steps later (a job's cluster,
    # MLflow's login included, took up to 2.5 min to start on a busy machine); a rehearsal, so --rehearse must
    # reach the study of every job
    _submit(study_dir, node_cpus, "--time=4", "--signal-before=60", "--max-jobs=4", "--rehearse",
            f"--study-cmd={sys.executable} {STANDIN} --steps-after-resume 5")
    job_ids = _wait_for_chain(study_dir, timeout=960)
    _say(capsys, f"resubmission test: {len(job_ids)} jobs, {time.time() - started:.0f} s wall")
    logs = {j: (study_dir / "slurm" / f"{j}.out").read_text() for j in job_ids}
    assert len(job_ids) >= 2, logs
    assert "study completed" in logs[job_ids[-1]], logs[job_ids[-1]][-3000:]

    # every job but the last was stopped by Slurm's signal and resubmitted the next one
    chain = read_jobs(study_dir)
    assert [row[1] for row in chain] == list(range(1, len(job_ids) + 1))
    for (job_id, *_), (next_id, _, _, note) in zip(chain, chain[1:]):
        assert "received SIGUSR1" in logs[job_id] and f"resubmitted as job {next_id}" in logs[job_id]
        assert note == f"resubmitted by {job_id}"
    # (a job that gets the signal while its cluster starts runs no study at all)
    attempts = [json.loads(line) for line in (study_dir / "standin_attempts.jsonl").read_text().splitlines()]
    assert [a["job"] for a in attempts] == [j for j in job_ids if "the study does not start" not in logs[j]]
    assert attempts[0]["from"] == 0 and attempts[0]["to"] > 0 and attempts[0]["stopped_by"] == "USR1"
    assert all(a["stopped_by"] == "USR1" for a in attempts[:-1]) and attempts[-1]["stopped_by"] is None
    # each attempt resumed where the one before stopped: no step lost or done twice
    assert all(b["from"] == a["to"] for a, b in zip(attempts, attempts[1:]))
    assert json.loads((study_dir / "summary.json").read_text()) == {"steps": attempts[-1]["to"]}
    # every job ran the study as a rehearsal, logged in to MLflow, its Ray nodes too
    assert all(a["mlflow"] == 200 and a["nodes_logged_in"] and a["rehearse"] for a in attempts), attempts
    assert f"JOB_ID={job_ids[-1]}\n" in (study_dir / "slurm" / "cluster.env").read_text()
    _assert_nothing_left(study_dir, job_ids)


def test_a_rehearsal_of_tb_bit_runs_under_sbatch_on_the_jobs_ray_cluster_and_mlflow(node_cpus, study_dir, capsys):
    from mlflow.tracking import MlflowClient

    started = time.time()
    # about 8 min on 2 quiet cores (the cluster 1.5, the rehearsal 6); should Slurm's stop signal come first on a
    # slow machine, the rehearsal stops resumably and the resubmitted job goes on from where it stopped
    _submit(study_dir, node_cpus, "--rehearse", "--time=00:20:00", "--signal-before=60", "--max-jobs=2",
            config=TB_BIT)
    job_ids = _wait_for_chain(study_dir, timeout=2100)
    job_id = job_ids[-1]
    log = (study_dir / "slurm" / f"{job_id}.out").read_text()
    _say(capsys, f"sbatch rehearsal of tb_bit: {len(job_ids)} job(s), {time.time() - started:.0f} s wall\n"
                 f"{log[log.find('# Rehearsal'):]}")
    assert "study completed" in log, log[-5000:]
    report = json.loads((study_dir / "rehearsal.json").read_text())
    assert report["passed"] and report["stages"] and all(s["ok"] for s in report["stages"]), report["stages"]
    status = subprocess.run([sys.executable, "-m", "ray_cluster", "status", "--out", str(study_dir)], capture_output=True,
                            text=True, cwd=PROJECT_ROOT)
    assert f"completed: the checklist is {study_dir / 'rehearsal.md'}" in status.stdout, status.stdout + status.stderr

    # the rehearsal's study ran on the job's Ray cluster and logged in to the job's MLflow server
    assert "POST /api/2.0/mlflow/runs/create" in (study_dir / "slurm" / job_id / "mlflow.log").read_text()
    client = MlflowClient(tracking_uri=f"sqlite:///{study_dir / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert runs and not (study_dir / "study" / "mlflow.db").exists()
    assert len(list((study_dir / "slurm" / job_id / "ray-logs").glob("*/python-core-driver-*.log"))) >= 2
    _assert_nothing_left(study_dir, job_ids)
