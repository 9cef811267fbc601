"""One whole study: data -> pre-training -> fine-tuning sweep -> results -> fits and figures -> summary.

Stopping and resuming: SIGUSR1 or SIGTERM ends the current stage cleanly (Tune ends its trials, every
Train run keeps its last checkpoint, the ledger and MLflow keep what ended) and the study exits with
EXIT_RESUMABLE; running the same command again continues where it stopped. A driver killed outright
(SIGKILL) resumes the same way, from the last checkpoints and the ledger. The study's own MLflow server, if it
dies, is started again by the study (scaling/track/tracking.py, `TrackingServer`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import time
from pathlib import Path

import yaml

from scaling import config as config_mod
from scaling.sweep.ledger import Ledger
from scaling.sweep.plan import finetune_points, pretrain_jobs
from scaling.track.progress import Progress

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_DATA, EXIT_RESUMABLE = 0, 1, 2, 3, 75
#: for the Ray processes of a study. Train's controller looks at its workers every 2 s by default, so a job that
#: has ended was noticed ~1 s late, for every job of a sweep. Train's preemption watcher (one more actor process
#: per job) follows Ray's node draining, which Slurm allocations and local clusters do not use.
TRAIN_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}


class StudyStopped(Exception):
    """A stop was requested (SIGUSR1 / SIGTERM); the study can be resumed."""


class _StopRequests:
    """SIGUSR1 and SIGTERM request a clean stop. While a Tune stage runs, Tune's own SIGUSR1 (and SIGINT)
    handler ends it gracefully, leaving unfinished jobs in the ledgers; SIGTERM is forwarded as SIGUSR1 (ray.init
    installs a SIGTERM handler that aborts, so ours are installed again after it and after every stage)."""

    def __init__(self):
        self.requested = False
        self.install()

    def install(self) -> None:
        signal.signal(signal.SIGUSR1, self._request)
        signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGUSR1))

    def _request(self, *_):
        self.requested = True

    def check(self, interrupted: bool = False) -> None:
        """Raise StudyStopped when a stop was requested, or when a stage ended with jobs neither done nor failed
        (Tune was stopped by a signal)."""
        self.install()
        if self.requested or interrupted:
            raise StudyStopped()


def config_hash(cfg) -> str:
    return hashlib.sha256(json.dumps(config_mod.to_dict(cfg), sort_keys=True).encode()).hexdigest()[:16]


def check_study_dir(cfg, study_dir: Path) -> None:
    """ConfigError when `study_dir` already holds a study run with another configuration (a resume must match)."""
    stamp = study_dir / "study.json"
    if stamp.exists():
        known, digest = json.loads(stamp.read_text()), config_hash(cfg)
        if known["config_hash"] != digest:
            raise config_mod.ConfigError(
                f"{study_dir} holds study {known['name']!r} run with another configuration "
                f"(hash {known['config_hash']}, now {digest}); resume it with the same config and overrides, "
                f"or choose another --out")


def prepare_study_dir(cfg, study_dir: Path) -> None:
    """Create the study directory, or check that an existing one holds this very study (a resume)."""
    check_study_dir(cfg, study_dir)
    study_dir.mkdir(parents=True, exist_ok=True)
    (study_dir / "logs").mkdir(exist_ok=True)
    stamp = study_dir / "study.json"
    if not stamp.exists():
        stamp.write_text(json.dumps({"name": cfg.name, "config_hash": config_hash(cfg), "created": time.time()}))
        (study_dir / "config.yaml").write_text(yaml.safe_dump(config_mod.to_dict(cfg), sort_keys=False))


def run_study(cfg, *, out: str | None = None, address: str | None = None, tracking_uri: str | None = None) -> int:
    import optuna

    from scaling.data.stage import prepare_study_data
    from scaling.sweep.jobs import check_target_sizes

    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    study_dir = Path(out or cfg.study_dir).resolve()
    check_study_dir(cfg, study_dir)  # bad data or sizes below leave no study directory behind
    stops = _StopRequests()
    progress = Progress()
    progress.say(f"study {cfg.name!r} in {study_dir}")
    data = prepare_study_data(cfg, log=progress.say)
    check_target_sizes(cfg, data)
    prepare_study_dir(cfg, study_dir)
    stops.check()

    from scaling.track import tracking

    server = None
    if not (tracking_uri or cfg.tracking.uri):
        server = tracking.TrackingServer(study_dir, study_dir / "logs").start()
        progress.say(f"MLflow server at {server.uri} (SQLite {server.db})")
    uri = tracking_uri or cfg.tracking.uri or server.uri
    connected = False
    try:
        tracker = tracking.StudyTracker(uri, cfg.tracking.experiment or cfg.name, cfg.name,
                                        ui=tracking.REOPEN_UI if server else None)
        tracker.log_study(config_mod.to_dict(cfg), tracking.code_version(config_mod.PROJECT_ROOT))
        tracker.log_metrics(tracker.parent_id, {f"leakage_{role}_{k}": v for role, counts in data.leakage.items()
                                                for k, v in counts.items()}, step=0)
        _start_ray(address, study_dir / "logs")
        connected = True
        stops.install()
        status = _train_and_analyse(cfg, data, study_dir, tracker, progress, stops)
        tracker.close("FINISHED" if status == EXIT_OK else "FAILED")
        return status
    except StudyStopped:
        progress.say("stopped on request; run the same command again to resume")
        return EXIT_RESUMABLE
    finally:
        if connected:  # stops a local cluster; only disconnects from a joined one
            import ray

            ray.shutdown()
        if server:
            server.stop()
            if server.restarts:
                progress.say(f"the MLflow server died and was started again {server.restarts} time(s); "
                             f"see {server.log_path}")
            progress.say(f"MLflow server stopped; browse the runs again with:\n  {server.reopen_command()}")


def _start_ray(address: str | None, log_dir: Path) -> None:
    """Join the cluster at `address` / RAY_ADDRESS, or start a local one. Ray's own messages go to a file."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # with verbose=0 the old reporter prints nothing; the new one always does
    handler = logging.FileHandler(log_dir / "ray-driver.log")
    for name in ("ray", "ray.tune", "ray.train"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.propagate = False
    address = address or os.environ.get("RAY_ADDRESS")
    context = ray.init(address=address, log_to_driver=False, configure_logging=False,
                       runtime_env={"env_vars": TRAIN_ENV}, **({} if address else {"num_cpus": os.cpu_count()}))
    _link_ray_logs(Path(context.address_info["session_dir"]) / "logs", log_dir)


def _link_ray_logs(session_logs: Path, log_dir: Path) -> None:
    """`<study>/logs/ray` points at this run's Ray session logs (worker, raylet and Train controller logs of the
    driver's node). Ray keeps them under its temp dir, whose socket paths must stay short, so they are linked,
    not moved; a resumed study's earlier session stays reachable as `ray-<session>`."""
    link = log_dir / "ray"
    if link.is_symlink() and link.resolve() != session_logs.resolve():
        older = log_dir / f"ray-{link.resolve().parent.name}"
        if not older.is_symlink():
            older.symlink_to(link.resolve())
        link.unlink()
    if not link.is_symlink():
        link.symlink_to(session_logs)


def _train_and_analyse(cfg, data, study_dir: Path, tracker, progress: Progress, stops: _StopRequests) -> int:
    import ray

    from scaling.sweep import tune as sweep
    from scaling.analysis import analyse
    from scaling.sweep.jobs import StudyJobs
    from scaling.sweep.ledger import ENDED
    from scaling.analysis.results import results_table, write_table
    from scaling.sweep.search import METRIC
    from scaling.train.store import CheckpointStore

    jobs = StudyJobs(cfg=cfg, data=data, store_dir=str(study_dir / "checkpoints"), jobs_dir=str(study_dir / "jobs"))
    concurrent = sweep.concurrency(cfg, ray.cluster_resources())
    store = CheckpointStore(jobs.store_dir)

    pretrain_ledger = Ledger(study_dir / "pretrain")
    for wave in pretrain_jobs(cfg):
        todo = [j for j in wave if not store.intact(jobs.pretrain_key(j))]  # a corrupted entry: built again
        progress.stage("pretrain", len(todo), concurrent)
        if todo:
            sweep.run_pretraining(jobs, todo, concurrent, tracker, progress, pretrain_ledger)
        missing = [j.name for j in wave if not store.exists(jobs.pretrain_key(j))]
        failed = {name: pretrain_ledger.get(name).get("error", "") for name in missing
                  if pretrain_ledger.get(name).get("status") in ("failed", "diverged")}
        stops.check(interrupted=len(failed) < len(missing))
        if failed:
            progress.say(f"pre-training failed for {'; '.join(f'{n} ({e})' for n, e in failed.items())}; see "
                         f"{study_dir / 'logs'}; run the same command again to retry")
            return EXIT_FAILED

    ledger = Ledger(study_dir / "trials")
    points = finetune_points(cfg)
    ended = {name for name, e in ledger.entries().items() if e["status"] in ENDED}
    pending = [p for p in points if p.name not in ended]
    progress.stage("finetune", len(pending), concurrent, rank_by=METRIC)
    if pending:
        attempt = len(list((study_dir / "tune").glob("finetune-*"))) if (study_dir / "tune").exists() else 0
        sweep.run_finetuning(jobs, pending, ledger, concurrent, tracker, progress, attempt, study_dir / "optuna.db")
    stops.check(interrupted=any(ledger.get(p.name).get("status") not in (*ENDED, "failed") for p in pending))

    entries = {name: e for name, e in ledger.entries().items() if name in {p.name for p in points}}
    table = results_table(entries, cfg)
    table = _trust_stage(cfg, data, study_dir, table, tracker, progress)
    paths = write_table(table, study_dir)
    progress.say(f"results: {len(table)} trials -> {paths[0]}")
    report = analyse(table, study_dir, cfg.seed, progress.say)
    report["figures"] += _trust_figures(table, study_dir, cfg.seed, tracker, progress)
    report["dashboard"] = _write_dashboard(study_dir, tracker)
    tracker.log_files([p for p in [*paths, *(study_dir / n for n in ("fits.json", "findings.json", "dashboard.html"))]
                       if p.exists()])
    tracker.log_files([Path(p) for p in report["figures"]], "figures")
    unfinished = len(points) - sum(e["status"] in ENDED for e in entries.values())
    summary = _summary(cfg, study_dir, table, report, concurrent, Ledger(study_dir / "pretrain").entries(), entries)
    summary["leakage"] = data.leakage  # per source: near-duplicates of target val/test images, images removed
    (study_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    _print_summary(summary, report, progress)
    if unfinished:
        progress.say(f"{unfinished} trials did not finish (failed or interrupted); run the same command again "
                     "to retry them")
        return EXIT_FAILED
    return EXIT_OK


def _trust_stage(cfg, data, study_dir: Path, table, tracker, progress: Progress):
    """The finished trials' test predictions copied out of their jobs (predictions/<trial>.npz), and the saliency
    of the tuned trial per cell, joined to the results table as saliency_* columns."""
    from scaling.evaluate import saliency
    from scaling.analysis.results import best_per_cell
    from scaling.train.outputs import collect_predictions

    finished = table.loc[table["status"] == "finished", "trial"].tolist() if len(table) else []
    collect_predictions(study_dir / "jobs", finished, study_dir / "predictions")
    best = best_per_cell(table)
    if best.empty:
        return table
    return table.join(saliency.run_stage(best, cfg, data, study_dir, tracker, progress.say), on="trial")


def _trust_figures(table, study_dir: Path, seed: int, tracker, progress: Progress) -> list[str]:
    """Reliability diagrams and the laws of calibration error and localisation (figures/, trust_fits.json)."""
    from scaling.analysis.trust import FITS_FILE, trust_figures, trust_table

    figures = trust_figures(table, study_dir, seed)
    if figures:
        tracker.log_files([study_dir / FITS_FILE])
        progress.say("trust of the tuned models on test (ECE before / after temperature T; seed-mean AUC against "
                     "the seeds' ensemble; pointing game against the lesion-area baseline):\n"
                     + trust_table(table).to_string(index=False, float_format="%.3f"))
    return [str(p) for p in figures]


def _write_dashboard(study_dir: Path, tracker) -> str:
    """The run ids the dashboard links to, then the dashboard itself."""
    import dashboards

    (study_dir / "mlflow_runs.json").write_text(json.dumps(tracker.run_index(), indent=1))
    return str(dashboards.build(study_dir))


def _summary(cfg, study_dir: Path, table, report: dict, concurrent: int, pretrain: dict, trials: dict) -> dict:
    """What ran, where it went, and how much of the training stages' wall time (first job start to last job
    end, over every attempt of a resumed study) went into training and evaluation steps."""
    jobs = [e for e in [*pretrain.values(), *trials.values()] if "ended_at" in e and "metrics" in e]
    wall = max(e["ended_at"] for e in jobs) - min(e["started_at"] for e in jobs) if jobs else 0.0
    busy = sum(e["metrics"].get("train_seconds", 0) + e["metrics"].get("eval_seconds", 0) for e in jobs)
    job_wall = sum(e["ended_at"] - e["started_at"] for e in jobs)
    return {
        "study": cfg.name, "study_dir": str(study_dir), "trials": len(table),
        "finished": int((table["status"] == "finished").sum()) if len(table) else 0,
        "wall_seconds": round(wall, 1), "concurrent_jobs": concurrent,
        "jobs_timed": len(jobs), "train_eval_seconds": round(busy, 1),
        "train_eval_share_of_wall": round(busy / (wall * concurrent), 3) if wall else None,
        "overhead_seconds_per_job": round((job_wall - busy) / len(jobs), 1) if jobs else None,
        "fits": report["fits"], "figures": report["figures"],
        "results": str(study_dir / "results.parquet"),
        "dashboard": report["dashboard"],
    }


def _print_summary(summary: dict, report: dict, progress: Progress) -> None:
    from scaling.analysis import describe_fits, describe_transfer, findings_table

    if "table" in report:
        table = report["table"].to_string(index=False, float_format="%.3f")
        progress.say(f"tuned test ROC-AUC (mean over seeds, sd between them):\n{table}")
    if summary["fits"]:
        progress.say("fitted laws of test error (1 - AUC) against pre-training images, 95% intervals:\n  "
                     + "\n  ".join(describe_fits(summary["fits"])))
    if report.get("effective_data"):
        progress.say("effective data transferred D_T (target images a scratch model would need beyond the "
                     "fine-tuned one's), 95% intervals:\n  " + "\n  ".join(describe_transfer(report["effective_data"])))
    if report.get("findings"):
        table = findings_table(report["findings"]).to_string(index=False, max_colwidth=80)
        progress.say(f"findings (paired bootstrap of test AUC differences):\n{table}")
    if summary["jobs_timed"]:
        progress.say(f"time: {summary['wall_seconds']:.0f} s for training stages; train+eval steps "
                     f"{summary['train_eval_share_of_wall']:.0%} of {summary['concurrent_jobs']} job slots; "
                     f"about {summary['overhead_seconds_per_job']} s overhead per job")
    progress.say(f"outputs: {summary['study_dir']} (results.parquet, fits.json, findings.json, figures/, "
                 f"summary.json)\ndashboard: {summary['dashboard']}")
