"""The secrets of a study's jobs, in `<study dir>/slurm/`: files that only their owner can read, on the shared file
system where every node of a job finds them and no other account of the cluster can.

- `ray_token`: Ray's cluster token (`RAY_AUTH_MODE=token`, `RAY_AUTH_TOKEN_PATH`); it guards the GCS and the
  Ray dashboard's HTTP API (every path but the page's shell and health checks answers 401 without it).
- `mlflow_password`: the password of the MLflow user `MLFLOW_USER`, the admin of the study's MLflow server
  (`mlflow server --app-name basic-auth`). The job script reads it into `MLFLOW_TRACKING_PASSWORD` of the study
  and the Ray nodes, and into `MLFLOW_AUTH_ADMIN_PASSWORD` of the server, which creates the user from it on its
  first start; it never goes on a command line, into a log or into MLflow.
- `mlflow_auth.ini` (not secret): the server's auth settings, named by `MLFLOW_AUTH_CONFIG_PATH`; its user store
  `mlflow_users.db` (password hashes) is created private too.

Each secret is made once per study (the jobs of a chain share it) with `secrets`, in a file created with mode 0600
(never readable by others, not even for a moment); a secret file that others can read stops the job.

The job script makes them with `python -m ray_cluster.make_credentials` before it starts anything."""
from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from ray_cluster.in_job import StartupError

RAY_TOKEN = "ray_token"
MLFLOW_PASSWORD = "mlflow_password"
MLFLOW_AUTH_INI = "mlflow_auth.ini"
MLFLOW_USERS_DB = "mlflow_users.db"
#: the MLflow user the study, its nodes and its owner's browser log in as
MLFLOW_USER = "study"
#: what any other user of the server may do with the study's experiments and runs: nothing
OTHERS_MAY = "NO_PERMISSIONS"
#: how long the server trusts a login it has checked
AUTH_CACHE_S = 600


def make_credentials(slurm_dir: Path, ray_token: bool) -> None:
    """Create the study's secrets and MLflow auth settings in `slurm_dir` where missing; keep existing ones."""
    slurm_dir.mkdir(parents=True, exist_ok=True)
    if ray_token:
        private_secret(slurm_dir / RAY_TOKEN)
    private_secret(slurm_dir / MLFLOW_PASSWORD)
    users = slurm_dir / MLFLOW_USERS_DB
    os.close(_create_private(users, exclusive=False))  # SQLite keeps an existing file's mode, its journals too
    (slurm_dir / MLFLOW_AUTH_INI).write_text(
        "# written by python -m ray_cluster.make_credentials for the study's MLflow server (MLFLOW_AUTH_CONFIG_PATH)\n"
        "[mlflow]\n"
        f"default_permission = {OTHERS_MAY}\n"
        f"database_uri = sqlite:///{users.resolve()}\n"
        f"admin_username = {MLFLOW_USER}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # checking a password costs about 0.1-0.5 s of CPU (scrypt); without the cache every REST call of the study
        # pays it; the server has one worker, so a password changed through the API is never served stale
        f"auth_cache_ttl_seconds = {AUTH_CACHE_S}\n")


def private_secret(path: Path) -> None:
    """Write a new random secret to `path` (mode 0600 from its creation on) unless it already holds one."""
    try:
        fd = _create_private(path, exclusive=True)
    except FileExistsError:
        check_private(path)
        if path.read_text().strip():
            return
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)  # left empty by a job that died while writing it
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")


def check_private(path: Path) -> None:
    """StartupError when others than the owner may read or write `path`."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        users = f" and {path.with_name(MLFLOW_USERS_DB)}" if path.name == MLFLOW_PASSWORD else ""
        raise StartupError(f"{path} has mode {mode:04o}: other accounts may have read this secret; delete it{users}, "
                           "the next job makes a new one readable only by you")


def _create_private(path: Path, exclusive: bool) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else 0), 0o600)
    os.fchmod(fd, 0o600)  # exactly 0600 whatever the umask
    return fd
