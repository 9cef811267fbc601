"""The few Slurm commands the helper needs: submit a script, and the state of a study's jobs."""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

#: states in which a job still holds or waits for nodes
ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING"}


class SlurmError(RuntimeError):
    """A Slurm command failed or is missing; the message carries its output."""


@dataclass(frozen=True)
class JobState:
    job_id: str
    state: str
    elapsed: str = ""
    #: the node list of a running job, or why a pending one waits
    where: str = ""


def sbatch(script: Path, *options: str) -> str:
    """Submit `script`; return the job id."""
    out = _run(["sbatch", "--parsable", *options, str(script)])
    return out.strip().split(";")[0]


def job_states(job_ids: list[str]) -> dict[str, JobState]:
    """What Slurm knows about the jobs: squeue for recent ones, sacct (where accounting runs) for older ones.
    Jobs neither knows are missing from the result."""
    if not job_ids:
        return {}
    states = {}
    try:
        out = _run(["squeue", "--noheader", "--states=all", "--jobs=" + ",".join(job_ids), "--format=%i|%T|%M|%R"])
    except SlurmError:  # squeue fails outright when none of the jobs is known any more
        out = ""
    for line in out.splitlines():
        job_id, state, elapsed, where = line.split("|", 3)
        states[job_id] = JobState(job_id, state, elapsed, where)
    missing = [j for j in job_ids if j not in states]
    if missing and shutil.which("sacct"):
        try:
            out = _run(["sacct", "--noheader", "--allocations", "--parsable2", "--jobs=" + ",".join(missing),
                        "--format=JobID,State,Elapsed,NodeList"])
        except SlurmError:  # no accounting storage on this cluster
            out = ""
        for line in out.splitlines():
            job_id, state, elapsed, where = line.split("|", 3)
            states[job_id] = JobState(job_id, state.split()[0], elapsed, where)
    return states


def _run(cmd: list[str]) -> str:
    if not shutil.which(cmd[0]):
        raise SlurmError(f"{cmd[0]} not found: run this on a Slurm login node")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SlurmError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout
