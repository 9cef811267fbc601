"""`python -m ray_cluster submit|status`: run a study on a Slurm cluster and follow it (see ray_cluster/README.md).

`check-ports`, `wait-for` and `wait-nodes` are the checks the job script runs on its nodes."""
from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ray_cluster.allocation import Allocation, AllocationError, check_allocation
from ray_cluster.in_job import StartupError, check_ports, wait_for, wait_for_nodes
from ray_cluster.job_script import JobRequest, check_time
from ray_cluster.sites import DEFAULT_PORTS, SITES
from ray_cluster.slurm import SlurmError
from ray_cluster.study_jobs import StudyBusyError, study_status, submit_study, write_job_script
from scaling.config import ConfigError, load_config

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except Exception as e:  # one line for the errors this tool expects, a traceback for the others
        if isinstance(e, (AllocationError, ConfigError, ValueError)):
            print(f"ray_cluster: error: {e}", file=sys.stderr)
            return 2
        if isinstance(e, (StartupError, SlurmError, StudyBusyError)):
            print(f"ray_cluster: error: {e}", file=sys.stderr)
            return 1
        raise


def _submit(args) -> int:
    account = args.account or os.environ.get("SBATCH_ACCOUNT", "")
    if not account:
        raise ValueError("no account given: pass --account PROJECT (on JUWELS the compute project that pays for the "
                         "job) or set SBATCH_ACCOUNT")
    if args.nodes < 1:
        raise ValueError(f"--nodes {args.nodes}: expected at least 1")
    cfg = load_config(args.config, args.overrides)
    site = SITES[args.site]
    site = dataclasses.replace(site, **{k: v for k, v in {
        "partition": args.partition, "gpus_per_node": args.gpus_per_node, "cpus_per_node": args.cpus_per_node,
        "host_suffix": args.host_suffix, "socket_ifname": args.socket_ifname, "node_tmp": args.node_tmp,
        "login_host": args.login_host}.items() if v is not None})
    if site.cpus_per_node <= 0:
        raise ValueError(f"--site {site.name}: give the CPUs of one node with --cpus-per-node "
                         "(and its GPUs with --gpus-per-node)")
    if args.rehearse:
        print(f"ray_cluster: a rehearsal of {args.config}: its resources are not checked against the nodes (the "
              "rehearsal runs on their CPUs)", file=sys.stderr)
    else:
        for warning in check_allocation(cfg.resources, cfg.sweep,
                                        Allocation(args.nodes, site.gpus_per_node, site.cpus_per_node,
                                                   f"{args.nodes} node(s) of {site.name}")):
            print(f"ray_cluster: warning: {warning}", file=sys.stderr)
    study_dir = Path(args.out or cfg.study_dir).resolve()
    req = JobRequest(
        config=Path(args.config).resolve(), study_dir=study_dir, project_root=PROJECT_ROOT, nodes=args.nodes,
        time=args.time, account=account, site=site, overrides=tuple(args.overrides),
        signal_before_s=args.signal_before, env_setup=args.env_setup, study_cmd=tuple(shlex.split(args.study_cmd)),
        mlflow_backend_uri=args.mlflow_db, ray_auth=args.ray_auth, ports={**DEFAULT_PORTS, **dict(args.port)},
        max_jobs=args.max_jobs, rehearse=args.rehearse, job_name=f"study-{cfg.name}"[:64])
    check_time(req)
    if args.dry_run:
        script = write_job_script(req, Path(args.config))
        print(f"wrote {script}; submit it with: sbatch {script}")
        return 0
    job_id = submit_study(req, Path(args.config))
    print(f"submitted job {job_id}: study {study_dir}\n  log:    {study_dir}/slurm/{job_id}.out\n"
          f"  status: python -m ray_cluster status --out {study_dir}")
    return 0


def _status(args) -> int:
    study_dir = Path(args.out) if args.out else load_config(args.config).study_dir
    print(study_status(study_dir.resolve()))
    return 0


def _check_ports(args) -> int:
    check_ports(args.node, dict(args.ports))
    return 0


def _wait_for(args) -> int:
    wait_for(args.target, args.what, args.timeout, args.watch, args.logs)
    return 0


def _wait_nodes(args) -> int:
    # reading the config imports torch (seconds): overlap it with the nodes' start
    with ThreadPoolExecutor(1) as pool:
        config = pool.submit(load_config, args.config, args.override)
        nodes = wait_for_nodes(args.address, args.nodes, args.timeout, args.watch, args.logs)
        cfg = config.result()
    if args.rehearse:
        print(f"ray_cluster: {len(nodes)} Ray node(s) up for a rehearsal")
        return 0
    gpus = min(n["Resources"].get("GPU", 0) for n in nodes)
    cpus = min(n["Resources"].get("CPU", 0) for n in nodes)
    for warning in check_allocation(cfg.resources, cfg.sweep,
                                    Allocation(len(nodes), gpus, cpus, "the Ray cluster of this job")):
        print(f"ray_cluster: warning: {warning}", file=sys.stderr)
    print(f"ray_cluster: {len(nodes)} Ray node(s) up, {gpus:g} GPUs and {cpus:g} CPUs each (the smallest node)")
    return 0


def _name_value(text: str) -> tuple[str, int]:
    name, sep, value = text.partition("=")
    if not sep or not value.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=PORT")
    return name, int(value)


def _port(text: str) -> tuple[str, int]:
    name, value = _name_value(text)
    if name not in DEFAULT_PORTS:
        raise argparse.ArgumentTypeError(f"{name!r}: unknown port; expected one of {', '.join(DEFAULT_PORTS)}")
    return name, value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ray_cluster", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(required=True, metavar="{submit,status}")

    s = sub.add_parser("submit", help="render the job script of a study and submit it",
                       description="Render ray_cluster/juwels_booster.sbatch for a study and submit it. The jobs "
                                   "resubmit themselves until the study has completed.")
    s.add_argument("--config", required=True, help="the study config (YAML)")
    s.add_argument("--nodes", type=int, required=True, help="nodes per job; the first one is the Ray head")
    s.add_argument("--time", required=True, help="time limit per job, e.g. 24:00:00")
    s.add_argument("--account", help="the Slurm account (project) to charge; default: $SBATCH_ACCOUNT")
    s.add_argument("--out", help="the study directory on the shared file system (default: the config's)")
    s.add_argument("--site", choices=sorted(SITES), default="juwels-booster",
                   help="node shape and conventions (default: juwels-booster)")
    s.add_argument("--partition", help="the partition (juwels-booster: booster; develbooster for short tests)")
    s.add_argument("--gpus-per-node", type=int, help="GPUs of a node (juwels-booster: 4)")
    s.add_argument("--cpus-per-node", type=int, help="CPUs given to Ray on a node (juwels-booster: 48)")
    s.add_argument("--host-suffix", help="appended to a node's name for its fast interface (juwels-booster: i)")
    s.add_argument("--socket-ifname", help="NCCL/Gloo network interface (juwels-booster: ib0)")
    s.add_argument("--node-tmp", help="node-local folder for Ray's temp dir (default: /tmp)")
    s.add_argument("--login-host", help="login node named in the SSH forwarding hint")
    s.add_argument("--signal-before", type=int, default=600, metavar="SECONDS",
                   help="the study is told to stop this long before the time limit (default: 600)")
    s.add_argument("--max-jobs", type=int, default=10, help="most jobs one chain of resubmissions uses (default: 10)")
    s.add_argument("--mlflow-db", default="", metavar="URI",
                   help="database of the MLflow server (default: SQLite in the study directory)")
    s.add_argument("--env-setup", default="", metavar="SHELL",
                   help="shell code each job runs first, e.g. 'module load Stages/2025 Python'")
    s.add_argument("--ray-auth", choices=["token", "disabled"], default="token",
                   help="Ray token authentication (default: token, kept in <study dir>/slurm/ray_token)")
    s.add_argument("--port", type=_port, action="append", default=[], metavar="NAME=N",
                   help=f"move a fixed port; names: {', '.join(DEFAULT_PORTS)}")
    s.add_argument("--study-cmd", default="", metavar="CMD",
                   help="run this instead of 'python studies/scaling_law.py' (same arguments)")
    s.add_argument("--rehearse", action="store_true",
                   help="rehearse the study: every job runs it with --rehearse (studies/scaling_law.py --help)")
    s.add_argument("--dry-run", action="store_true", help="write <study dir>/slurm/job.sbatch, do not submit")
    s.add_argument("overrides", nargs="*", metavar="key.path=value", help="config overrides")
    s.set_defaults(run=_submit)

    st = sub.add_parser("status", help="the state of a study's jobs and how to reach its dashboards")
    where = st.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", help="the study directory")
    where.add_argument("--config", help="the study config (its study directory)")
    st.set_defaults(run=_status)

    c = sub.add_parser("check-ports")
    c.add_argument("--node", required=True)
    c.add_argument("ports", nargs="+", type=_name_value, metavar="NAME=PORT")
    c.set_defaults(run=_check_ports)

    for name, run in (("wait-for", _wait_for), ("wait-nodes", _wait_nodes)):
        w = sub.add_parser(name)
        w.add_argument("--timeout", type=float, required=True)
        w.add_argument("--watch", type=int, nargs="+", action="extend", default=[],
                       help="pids of the steps that bring it up: their end fails the wait at once")
        w.add_argument("--logs", nargs="+", action="extend", default=[], help="log files (globs) shown on failure")
        w.set_defaults(run=run)
        if name == "wait-for":
            w.add_argument("target", help="HOST:PORT or an http URL")
            w.add_argument("--what", required=True)
        else:
            w.add_argument("--address", required=True)
            w.add_argument("--nodes", type=int, required=True)
            w.add_argument("--config", required=True)
            w.add_argument("--override", action="append", default=[])
            w.add_argument("--rehearse", action="store_true", help="skip the check of the config's resources")
    return p


if __name__ == "__main__":
    sys.exit(main())
