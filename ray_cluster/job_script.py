"""Rendering the job script: the template (juwels_booster.sbatch) with its #SBATCH lines and its settings block
rewritten for one study on one site."""
from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ray_cluster.credentials import MLFLOW_USER
from ray_cluster.sites import DEFAULT_PORTS, Site

TEMPLATE = Path(__file__).with_name("juwels_booster.sbatch")
SETTINGS_START, SETTINGS_END = "# >>> settings", "# <<< settings"
_DIRECTIVE = re.compile(r"^#SBATCH --([\w-]+)(?:=(.*))?$")
#: an option given without a value (`#SBATCH --exclusive`)
FLAG = object()
#: the #SBATCH --signal lead time and the least time a job must have beyond it to do anything
DEFAULT_SIGNAL_BEFORE_S = 600
MIN_WORK_S = 60


@dataclass(frozen=True)
class JobRequest:
    """One study on one site: what `render_job` needs. Paths should be absolute: the job runs elsewhere."""

    config: Path
    study_dir: Path
    project_root: Path
    nodes: int
    time: str
    account: str
    site: Site
    overrides: tuple[str, ...] = ()
    signal_before_s: int = DEFAULT_SIGNAL_BEFORE_S
    python: str = sys.executable
    #: shell code each job runs first (module loads, venv activation)
    env_setup: str = ""
    #: replaces `python studies/scaling_law.py` (it receives the same arguments)
    study_cmd: tuple[str, ...] = ()
    #: the MLflow server's database; "" = SQLite in the study directory
    mlflow_backend_uri: str = ""
    ray_auth: str = "token"
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    #: run the study with --rehearse (a rehearsal of the config on CPUs, see studies/scaling_law.py)
    rehearse: bool = False
    node_wait_s: int = 300
    max_jobs: int = 10
    job_name: str = "scaling-study"


def parse_time(text: str) -> int:
    """Seconds of a Slurm time limit: M, M:S, H:M:S, D-H, D-H:M or D-H:M:S."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not m:
        raise ValueError(f"--time {text!r}: expected a Slurm time limit such as 90 (minutes), 2:00:00 or 1-00:00:00")
    days, a, b, c = m.groups()
    if days is not None:  # D-H, D-H:M, D-H:M:S
        return ((int(days) * 24 + int(a)) * 60 + int(b or 0)) * 60 + int(c or 0)
    if c is not None:  # H:M:S
        return (int(a) * 60 + int(b)) * 60 + int(c)
    if b is not None:  # M:S
        return int(a) * 60 + int(b)
    return int(a) * 60


def check_time(req: JobRequest) -> None:
    """The time limit fits the site and leaves time to work before the stop signal; ValueError if not."""
    seconds = parse_time(req.time)
    if req.site.max_time and seconds > parse_time(req.site.max_time):
        raise ValueError(f"--time {req.time} exceeds the {req.site.max_time} limit of {req.site.name}; a longer study "
                         "stops before the limit and resubmits itself, so ask for at most the limit")
    if seconds < req.signal_before_s + MIN_WORK_S:
        raise ValueError(f"--time {req.time} leaves no time to work: the stop signal comes {req.signal_before_s} s "
                         f"before the end (--signal-before); ask for at least {req.signal_before_s + MIN_WORK_S} s")


def render_job(req: JobRequest, template: str | None = None) -> str:
    """The job script for `req`: the template's #SBATCH lines and settings block rewritten."""
    text = TEMPLATE.read_text() if template is None else template
    for path in (req.study_dir, req.config, req.project_root):
        if re.search(r"\s", str(path)):
            raise ValueError(f"{path}: paths with white space cannot go into #SBATCH lines; use another folder")
    lines = _rewrite_directives(text.splitlines(), _directives(req))
    return "\n".join(_rewrite_settings(lines, _settings(req))) + "\n"


def _directives(req: JobRequest) -> dict[str, object]:
    site = req.site
    return {
        "job-name": req.job_name,
        "account": req.account,
        "partition": site.partition or None,
        "nodes": str(req.nodes),
        "ntasks-per-node": "1",
        "cpus-per-task": str(site.cpus_per_node),
        "gres": f"gpu:{site.gpus_per_node}" if site.gpus_per_node else None,
        # the ports are fixed: nobody else may run on the nodes
        "exclusive": FLAG,
        "time": req.time,
        "signal": f"B:USR1@{req.signal_before_s}",
        "output": f"{req.study_dir}/slurm/%j.out",
    }


def _rewrite_directives(lines: list[str], options: dict[str, object]) -> list[str]:
    out, seen, last = [], set(), None
    for line in lines:
        m = _DIRECTIVE.match(line)
        if not m:
            out.append(line)
            continue
        name = m.group(1)
        seen.add(name)
        if name in options:
            if options[name] is None:
                continue
            line = _directive(name, options[name])
        out.append(line)
        last = len(out)
    if last is None:
        raise ValueError("the template has no #SBATCH lines")
    extra = [_directive(n, v) for n, v in options.items() if n not in seen and v is not None]
    return out[:last] + extra + out[last:]


def _directive(name: str, value: object) -> str:
    return f"#SBATCH --{name}" if value is FLAG else f"#SBATCH --{name}={value}"


def _settings(req: JobRequest) -> dict[str, str | tuple[str, ...]]:
    site, ports = req.site, {**DEFAULT_PORTS, **req.ports}
    settings: dict[str, str | tuple[str, ...]] = {
        "PROJECT_ROOT": str(req.project_root),
        "STUDY_DIR": str(req.study_dir),
        "STUDY_CONFIG": str(req.config),
        "STUDY_OVERRIDES": tuple(req.overrides),
        "STUDY_CMD": tuple(req.study_cmd),
        "PYTHON": req.python,
        "ENV_SETUP": req.env_setup,
        "GPUS_PER_NODE": str(site.gpus_per_node),
        "HOST_SUFFIX": site.host_suffix,
        "SOCKET_IFNAME": site.socket_ifname,
        "NODE_TMP": site.node_tmp,
        "STUDY_REHEARSE": "1" if req.rehearse else "",
        "RAY_AUTH": req.ray_auth,
        "MLFLOW_USER": MLFLOW_USER,
        "MLFLOW_BACKEND_URI": req.mlflow_backend_uri,
        "LOGIN_HOST": site.login_host,
        "NODE_WAIT_S": str(req.node_wait_s),
        "MAX_JOBS": str(req.max_jobs),
    }
    for name, port in ports.items():
        settings["PORT_" + name.upper().replace("-", "_")] = str(port)
    return settings


def _rewrite_settings(lines: list[str], settings: dict[str, str | tuple[str, ...]]) -> list[str]:
    start, end = lines.index(SETTINGS_START), lines.index(SETTINGS_END)
    block = []
    for line in lines[start + 1:end]:
        name, _, rest = line.partition("=")
        if name not in settings:
            raise KeyError(f"template setting {name!r} has no value in ray_cluster.job_script")
        comment = rest[rest.index("  # "):] if "  # " in rest else ""
        block.append(f"{name}={_shell(settings[name])}{comment}")
    missing = set(settings) - {line.partition("=")[0] for line in block}
    if missing:
        raise KeyError(f"settings missing from the template's settings block: {', '.join(sorted(missing))}")
    return lines[:start + 1] + block + lines[end:]


def rendered_setting(script: str, name: str) -> str:
    """The value of a one-word setting in a rendered job script ("" when it is empty or absent)."""
    for line in script.splitlines():
        if line.startswith(f"{name}="):
            return " ".join(shlex.split(line.partition("=")[2], comments=True))
    return ""


def _shell(value: str | tuple[str, ...]) -> str:
    if isinstance(value, tuple):
        return "(" + " ".join(shlex.quote(v) for v in value) + ")"
    return shlex.quote(value)
