"""A study's Slurm jobs: submitting the first one, and reporting where the chain of jobs stands.

Everything lives in `<study dir>/slurm/`: job.sbatch (the rendered script every job of the chain runs),
config.yaml (the config they read), jobs.tsv (one line per job: id, position in its chain, submission time,
note), cluster.env (head node and ports of the latest job that brought its cluster up), <job id>.out (the job's
log), <job id>/ (its Ray and MLflow logs) and the study's secrets and MLflow auth settings (`credentials`)."""
from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from ray_cluster.credentials import MLFLOW_PASSWORD, MLFLOW_USER, RAY_TOKEN
from ray_cluster.job_script import JobRequest, render_job, rendered_setting
from ray_cluster.slurm import ACTIVE, SlurmError, job_states, sbatch

SUMMARY_FILE = "summary.json"


class StudyBusyError(RuntimeError):
    """The study already has a job queued or running."""


def slurm_dir(study_dir: Path) -> Path:
    return Path(study_dir) / "slurm"


def read_jobs(study_dir: Path) -> list[tuple[str, int, str, str]]:
    """(job id, position in its chain, submitted at, note) for every job of the study, oldest first."""
    path = slurm_dir(study_dir) / "jobs.tsv"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        job_id, position, when, note = (line.split("\t") + ["", "", ""])[:4]
        rows.append((job_id, int(position or 1), when, note))
    return rows


def write_job_script(req: JobRequest, config_source: Path) -> Path:
    """Copy the config into the study directory and write the job script that reads it; return the script."""
    folder = slurm_dir(req.study_dir)
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "config.yaml"
    if Path(config_source).resolve() != config.resolve():
        shutil.copyfile(config_source, config)
    script = folder / "job.sbatch"
    script.write_text(render_job(replace(req, config=config)))
    script.chmod(0o755)
    return script


def submit_study(req: JobRequest, config_source: Path) -> str:
    """Write the job script and submit it as the first job of a chain; return the job id."""
    busy = {j: s for j, s in job_states([row[0] for row in read_jobs(req.study_dir)]).items() if s.state in ACTIVE}
    if busy:
        listed = ", ".join(f"{j} ({s.state})" for j, s in busy.items())
        raise StudyBusyError(f"{req.study_dir} already has job(s) {listed}; wait for them or cancel them with "
                             f"scancel {' '.join(busy)}")
    script = write_job_script(req, config_source)
    job_id = sbatch(script)
    with (slurm_dir(req.study_dir) / "jobs.tsv").open("a") as f:
        f.write(f"{job_id}\t1\t{datetime.now().astimezone().isoformat(timespec='seconds')}\tsubmitted\n")
    return job_id


def study_status(study_dir: Path) -> str:
    """A few lines: the study's state, its jobs and their Slurm states, and how to reach its dashboards."""
    study_dir = Path(study_dir)
    jobs = read_jobs(study_dir)
    if not jobs:
        return f"{study_dir}: no Slurm jobs submitted for this study (no {slurm_dir(study_dir) / 'jobs.tsv'})"
    try:
        states = job_states([row[0] for row in jobs])
    except SlurmError as e:
        states, note = {}, f" ({e})"
    else:
        note = ""
    active = [j for j, s in states.items() if s.state in ACTIVE]
    script = slurm_dir(study_dir) / "job.sbatch"
    rehearsal = script.is_file() and rendered_setting(script.read_text(), "STUDY_REHEARSE")
    # a rehearsal's own study is in study/; its checklist, written last, is the rehearsal's end
    if (study_dir / ("rehearsal.md" if rehearsal else SUMMARY_FILE)).is_file():
        state = "completed" + (f": the checklist is {study_dir / 'rehearsal.md'}" if rehearsal else "")
    elif active:
        state = f"in progress: job {active[-1]} is {states[active[-1]].state}"
    else:
        state = "not running and not completed: submit it again to resume it (see the last job's log)"
    if rehearsal:
        state += " (a rehearsal: its jobs run the study with --rehearse)"
    lines = [f"study  {study_dir}", f"state  {state}{note}", "jobs"]
    for job_id, position, when, why in jobs:
        s = states.get(job_id)
        slurm = f"{s.state:<11} {s.elapsed:>11}  {s.where}" if s else "(no longer known to Slurm)"
        lines.append(f"  {job_id:<10} #{position:<3} {when:<25} {slurm}   log: slurm/{job_id}.out  [{why}]")
    lines += _tunnel(study_dir, active)
    return "\n".join(lines)


def _tunnel(study_dir: Path, active: list[str]) -> list[str]:
    env_file = slurm_dir(study_dir) / "cluster.env"
    if not env_file.is_file():
        return []
    env = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    if env.get("JOB_ID") not in active:
        return []
    host, dash, mlflow = env["HEAD_HOST"], env["PORT_DASHBOARD"], env["PORT_MLFLOW"]
    login = env.get("LOGIN_HOST") or "<login node>"
    secrets = slurm_dir(study_dir).resolve()
    ray_login = (f"it asks for the token in {secrets / RAY_TOKEN}" if env.get("RAY_AUTH", "token") == "token"
                 else "no token: --ray-auth disabled")
    return [f"head   {host} ({env['HEAD_IP']}), Ray at {env['HEAD_IP']}:{env['PORT_GCS']}",
            "from a laptop, forward the Ray dashboard and the MLflow UI through the login node:",
            f"  ssh -N -L {dash}:{host}:{dash} -L {mlflow}:{host}:{mlflow} <user>@{login}",
            f"  then open http://localhost:{dash} (Ray; {ray_login})",
            f"  and http://localhost:{mlflow} (MLflow; log in as user {MLFLOW_USER} with the password in "
            f"{secrets / MLFLOW_PASSWORD}, which only you can read: cat it on the login node)"]
