"""ray_cluster's secrets and the --rehearse plumbing, without Slurm: the secret files (mode 0600 from their
creation on, kept across the jobs of a chain, refused when others can read them), the MLflow auth settings, the
job script that passes --rehearse on, and the status lines that say how to log in without showing a secret.
tests/test_slurm_cluster.py checks the same against the real servers of a Slurm job."""
from __future__ import annotations

import configparser
import os
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from ray_cluster import SITES, JobRequest, render_job
from ray_cluster.__main__ import main as cli
from ray_cluster.credentials import (MLFLOW_AUTH_INI, MLFLOW_PASSWORD, MLFLOW_USER, MLFLOW_USERS_DB, RAY_TOKEN,
                                     make_credentials, private_secret)
from ray_cluster.in_job import StartupError
from ray_cluster.job_script import rendered_setting
from ray_cluster.make_credentials import main as make_credentials_command

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SMOKE = PROJECT_ROOT / "studies" / "configs" / "smoke.yaml"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_secrets_are_private_from_their_creation_and_kept_for_the_next_job(tmp_path):
    slurm = tmp_path / "slurm"
    seen_modes, done = set(), threading.Event()

    def watch():  # what another account could have seen while the files were being made
        while not done.is_set():
            for name in (RAY_TOKEN, MLFLOW_PASSWORD, MLFLOW_USERS_DB):
                try:
                    seen_modes.add(_mode(slurm / name))
                except FileNotFoundError:
                    pass

    old_umask = os.umask(0)  # the most permissive umask: the files must not follow it
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        make_credentials(slurm, ray_token=True)
    finally:
        done.set()
        watcher.join()
        os.umask(old_umask)
    assert seen_modes <= {0o600}
    for name in (RAY_TOKEN, MLFLOW_PASSWORD, MLFLOW_USERS_DB):
        assert _mode(slurm / name) == 0o600, name
    password, token = (slurm / MLFLOW_PASSWORD).read_text(), (slurm / RAY_TOKEN).read_text()
    assert len(password.strip()) == 64 and password != token

    make_credentials(slurm, ray_token=True)  # the next job of the chain
    assert (slurm / MLFLOW_PASSWORD).read_text() == password and (slurm / RAY_TOKEN).read_text() == token

    ini = configparser.ConfigParser()
    ini.read(slurm / MLFLOW_AUTH_INI)
    assert dict(ini["mlflow"]) == {
        "default_permission": "NO_PERMISSIONS", "admin_username": MLFLOW_USER,
        "database_uri": f"sqlite:///{(slurm / MLFLOW_USERS_DB).resolve()}",
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
        "auth_cache_ttl_seconds": "600"}
    assert password.strip() not in (slurm / MLFLOW_AUTH_INI).read_text()


def test_a_secret_others_can_read_stops_the_job_and_an_empty_one_is_made_anew(tmp_path, capsys):
    exposed = tmp_path / MLFLOW_PASSWORD
    exposed.write_text("abc\n")
    exposed.chmod(0o644)
    with pytest.raises(StartupError, match=rf"{MLFLOW_PASSWORD} has mode 0644: other accounts may have read"):
        private_secret(exposed)
    assert make_credentials_command([str(tmp_path)]) == 1  # the job stops at its first step
    assert "delete it and" in capsys.readouterr().err and exposed.read_text() == "abc\n"
    empty = tmp_path / RAY_TOKEN
    empty.touch(mode=0o600)
    private_secret(empty)
    assert len(empty.read_text().strip()) == 64


def _request(tmp_path, **kw) -> JobRequest:
    return JobRequest(config=tmp_path / "c.yaml", study_dir=tmp_path / "study", project_root=PROJECT_ROOT, nodes=1,
                      time="1:00:00", account="x", site=SITES["juwels-booster"], **kw)


def test_rehearse_reaches_the_study_command_of_every_job(tmp_path):
    assert rendered_setting(render_job(_request(tmp_path)), "STUDY_REHEARSE") == ""
    script = render_job(_request(tmp_path, rehearse=True))
    assert rendered_setting(script, "STUDY_REHEARSE") == "1"
    assert rendered_setting(script, "MLFLOW_USER") == MLFLOW_USER
    # the job script runs the study (and the in-job resource check) with --rehearse: run its lines that decide
    flags = subprocess.run(["bash", "-c", 'STUDY_REHEARSE=1\n' + _line(script, "study_flags=()") + "\n"
                            + _line(script, 'if [ -n "$STUDY_REHEARSE" ]') + '\necho "${study_flags[@]}"'],
                           capture_output=True, text=True, check=True).stdout
    assert flags.strip() == "--rehearse"
    assert '--tracking-uri "$tracking_uri" "${study_flags[@]}" "${STUDY_OVERRIDES[@]}"' in script
    assert '"${STUDY_OVERRIDES[@]/#/--override=}" "${study_flags[@]}"' in script  # wait-nodes


def _line(script: str, start: str) -> str:
    return next(line for line in script.splitlines() if line.startswith(start))


def test_a_rehearsal_of_a_gpu_config_is_submitted_to_cpu_nodes_and_status_says_it_is_one(tmp_path, capsys):
    args = ["submit", "--config", str(SMOKE), "--nodes", "1", "--time", "1:00:00", "--account", "x", "--site",
            "generic", "--cpus-per-node", "2", "--out", str(tmp_path), "--dry-run", "resources.use_gpu=true"]
    assert cli(args) == 2  # the real study cannot run there
    assert cli([*args, "--rehearse"]) == 0, capsys.readouterr().err
    assert "a rehearsal of" in capsys.readouterr().err
    (tmp_path / "slurm" / "jobs.tsv").write_text("101\t1\t2026-01-01T00:00:00+01:00\tsubmitted\n")
    assert cli(["status", "--out", str(tmp_path)]) == 0
    assert "(a rehearsal: its jobs run the study with --rehearse)" in capsys.readouterr().out


def test_status_says_how_to_log_in_and_shows_no_secret(tmp_path, monkeypatch):
    from ray_cluster import study_jobs
    from ray_cluster.slurm import JobState

    slurm = tmp_path / "slurm"
    make_credentials(slurm, ray_token=True)
    (slurm / "jobs.tsv").write_text("101\t1\t2026-01-01T00:00:00+01:00\tsubmitted\n")
    (slurm / "cluster.env").write_text("JOB_ID=101\nHEAD_NODE=jwb0001\nHEAD_HOST=jwb0001i\nHEAD_IP=10.13.0.1\n"
                                       "PORT_GCS=6379\nPORT_DASHBOARD=8265\nPORT_MLFLOW=5000\nLOGIN_HOST=jw\n"
                                       "RAY_AUTH=token\n")
    monkeypatch.setattr(study_jobs, "job_states", lambda ids: {j: JobState(j, "RUNNING", "1:00", "n") for j in ids})
    text = study_jobs.study_status(tmp_path)
    assert f"it asks for the token in {slurm.resolve() / RAY_TOKEN}" in text
    assert f"log in as user {MLFLOW_USER} with the password in {slurm.resolve() / MLFLOW_PASSWORD}" in text
    for secret in (MLFLOW_PASSWORD, RAY_TOKEN):
        assert (slurm / secret).read_text().strip() not in text
