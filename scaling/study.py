"""One whole study, one function per stage, in the order they run: data -> study directory -> tracking -> Ray ->
pre-training -> fine-tuning sweep -> results -> trust (predictions, saliency) -> analysis -> dashboard -> summary.

Stopping and resuming: SIGUSR1 or SIGTERM ends the current stage cleanly (Tune ends its trials, every
Train run keeps its last checkpoint, the ledger and MLflow keep what ended) and the study exits with
EXIT_RESUMABLE; running the same command again continues where it stopped. A driver killed outright
(SIGKILL) resumes the same way, from the last checkpoints and the ledger. The study's own MLflow server, if it
dies, is started again by the study (scaling/track/server.py, `TrackingServer`).

The dashboard belongs to the application: `run_study` calls the `dashboard` hook it is given (studies/
scaling_law.py passes `dashboards.build`) with the study directory, once the results, fits and the index of the
MLflow runs are written.
"""
from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import signal
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Callable

import optuna
import pandas as pd
import ray
import yaml

from scaling.analysis import analyse, saliency
from scaling.analysis.answer import SUMMARY_MD, answer_lines, summary_markdown
from scaling.analysis.results import best_per_cell, results_table, write_table
from scaling.analysis.trust import FITS_FILE, trust_figures
from scaling.cluster import RayChunks
from scaling.config import PROJECT_ROOT, ConfigError, StudyConfig, to_dict
from scaling.data.stage import StudyData, prepare_study_data
from scaling.files import publish_file
from scaling.sweep.jobs import StudyJobs, check_target_sizes
from scaling.sweep.ledger import ENDED, Ledger
from scaling.sweep.plan import FinetunePoint, finetune_points, pretrain_jobs
from scaling.sweep.reference import reference_set
from scaling.sweep.search import METRIC
from scaling.sweep.tune import concurrency, end_stored_pretraining, run_finetuning, run_pretraining
from scaling.track.progress import Progress
from scaling.track.runs import RUN_INDEX, StudyTracker, code_version
from scaling.track.server import REOPEN_UI, TrackingServer, reopen_command
from scaling.train.outputs import collect_predictions
from scaling.train.store import CheckpointStore

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_DATA, EXIT_RESUMABLE = 0, 1, 2, 3, 75
#: for the Ray processes of a study. Train's controller looks at its workers every 2 s by default, so a job that
#: has ended was noticed ~1 s late, for every job of a sweep. Train's preemption watcher (one more actor process
#: per job) follows Ray's node draining, which Slurm allocations and local clusters do not use.
TRAIN_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}
#: how many times each Tune stage of the study was started, by stage: a resumed sweep is a new Tune experiment
ATTEMPTS_FILE = "attempts.json"

#: writes a study's dashboard from its directory and returns the page (the application's `dashboards.build`)
DashboardHook = Callable[[Path], Path]


class StudyStopped(Exception):
    """A stop was requested (SIGUSR1 / SIGTERM); the study can be resumed."""


class StopRequests:
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


def run_study(cfg: StudyConfig, *, out: str | None = None, address: str | None = None,
              tracking_uri: str | None = None, dashboard: DashboardHook | None = None) -> int:
    """Run, or resume, the study `cfg` in `out` (default: `cfg.study_dir`) on the Ray cluster at `address`
    (default: $RAY_ADDRESS, else a local one), logging to the MLflow server at `tracking_uri` (default:
    `tracking.uri`, else a server the study starts on its directory). `dashboard` writes the dashboard; without
    it none is written. Returns an EXIT_* code."""
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    study_dir = Path(out or cfg.study_dir).resolve()
    check_study_dir(cfg, study_dir)  # bad data or sizes below leave no study directory behind
    stops = StopRequests()
    progress = Progress()
    progress.say(f"study {cfg.name!r} in {study_dir}")
    data = data_stage(cfg, progress, address)
    prepare_study_dir(cfg, study_dir)
    stops.check()

    server = None if tracking_uri or cfg.tracking.uri else TrackingServer(study_dir, study_dir / "logs")
    connected = False
    try:
        # the study's MLflow server starts while Ray does (about 5 s each)
        with ThreadPoolExecutor(1) as starting:
            started = starting.submit(server.start) if server else None
            start_ray(address, study_dir / "logs")
            connected = True
            if started:
                started.result()
                progress.say(f"MLflow server at {server.uri} (SQLite {server.db})")
        tracker = tracking_stage(cfg, data, tracking_uri or cfg.tracking.uri or server.uri, own_server=bool(server))
        stops.install()
        status = run_stages(cfg, data, study_dir, tracker, progress, stops, dashboard)
        tracker.close("FINISHED" if status == EXIT_OK else "FAILED")
        return status
    except StudyStopped:
        progress.say("stopped on request; run the same command again to resume")
        return EXIT_RESUMABLE
    finally:
        if connected:  # stops a local cluster; only disconnects from a joined one
            ray.shutdown()
        if server:
            server.stop()
            if server.restarts:
                progress.say(f"the MLflow server died and was started again {server.restarts} time(s); "
                             f"see {server.log_path}")
            progress.say(f"MLflow server stopped; browse the runs again with:\n  {reopen_command(study_dir)}")


def run_stages(cfg: StudyConfig, data: StudyData, study_dir: Path, tracker: StudyTracker, progress: Progress,
               stops: StopRequests, dashboard: DashboardHook | None) -> int:
    """The stages on Ray, from pre-training to the summary; EXIT_FAILED when a job did not finish."""
    jobs = StudyJobs(cfg=cfg, data=data, store_dir=str(study_dir / "checkpoints"), jobs_dir=str(study_dir / "jobs"))
    concurrent = concurrency(cfg.resources, cfg.sweep.max_concurrent_trials, ray.cluster_resources())
    pretrain = pretrain_stage(jobs, study_dir, concurrent, tracker, progress, stops)
    if pretrain is None:
        return EXIT_FAILED
    points = finetune_points(cfg)
    trials = finetune_stage(jobs, points, study_dir, concurrent, tracker, progress, stops)
    table = results_table(trials, cfg.pretrain, cfg.finetune.recipe)
    table = trust_stage(table, data, cfg, study_dir, tracker, progress)
    paths = write_table(table, study_dir)
    progress.say(f"results: {len(table)} trials -> {paths[0]}")
    # the post-sweep steps each say when they end: on a large study they take minutes
    report = analysis_stage(table, study_dir, cfg.seed, tracker, progress)
    progress.say(f"analysis: laws, effective data, findings and {len(report['figures'])} figures -> "
                 f"{study_dir / 'figures'}")
    report["dashboard"] = dashboard_stage(study_dir, tracker, dashboard)
    logged = log_outputs(tracker, study_dir, paths, report)
    progress.say(f"MLflow: the dashboard, tables and figures ({logged} files) logged to the study's parent run")
    summary_stage(cfg, data, study_dir, table, report, concurrent, pretrain, trials, tracker, progress)
    unfinished = len(points) - sum(e["status"] in ENDED for e in trials.values())
    if unfinished:
        progress.say(f"{unfinished} trials did not finish (failed or interrupted); run the same command again "
                     "to retry them")
        return EXIT_FAILED
    return EXIT_OK


# ------------------------------------------------------------------------------------------------ the stages


def data_stage(cfg: StudyConfig, progress: Progress, address: str | None = None) -> StudyData:
    """Every dataset staged into shards, checked against the sizes the grid asks of the target. Shard sets of
    more than one chunk are built on the study's Ray cluster (`address`, $RAY_ADDRESS, else a local one started
    for the stage and stopped after it: the study directory, where Ray's logs go, is made after this stage)."""
    with RayChunks(address) as map_chunks:
        data = prepare_study_data(cfg, log=progress.say, map_chunks=map_chunks)
        data = replace(data, reference=reference_set(cfg, data, progress.say, map_chunks))
    check_target_sizes(cfg, data)
    return data


def config_hash(cfg: StudyConfig) -> str:
    return hashlib.sha256(json.dumps(to_dict(cfg), sort_keys=True).encode()).hexdigest()[:16]


def check_study_dir(cfg: StudyConfig, study_dir: Path) -> None:
    """ConfigError when `study_dir` already holds a study run with another configuration (a resume must match)."""
    stamp = study_dir / "study.json"
    if stamp.exists():
        known, digest = json.loads(stamp.read_text()), config_hash(cfg)
        if known["config_hash"] != digest:
            raise ConfigError(
                f"{study_dir} holds study {known['name']!r} run with another configuration "
                f"(hash {known['config_hash']}, now {digest}); resume it with the same config and overrides, "
                f"or choose another --out")


def prepare_study_dir(cfg: StudyConfig, study_dir: Path) -> None:
    """Create the study directory, or check that an existing one holds this very study (a resume)."""
    check_study_dir(cfg, study_dir)
    study_dir.mkdir(parents=True, exist_ok=True)
    (study_dir / "logs").mkdir(exist_ok=True)
    stamp = study_dir / "study.json"
    if not stamp.exists():
        stamp.write_text(json.dumps({"name": cfg.name, "config_hash": config_hash(cfg), "created": time.time()}))
        (study_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def tracking_stage(cfg: StudyConfig, data: StudyData, uri: str, own_server: bool) -> StudyTracker:
    """The study's parent run, with its config, code version and the leakage guard's counts. `own_server`: the
    runs live in the study directory's store, browsed later at REOPEN_UI (see `reopen_command`)."""
    tracker = StudyTracker(uri, cfg.tracking.experiment or cfg.name, cfg.name, ui=REOPEN_UI if own_server else None)
    tracker.log_study(to_dict(cfg), code_version(PROJECT_ROOT))
    tracker.log_metrics(tracker.parent_id, {f"leakage_{role}_{k}": v for role, counts in data.leakage.items()
                                            for k, v in counts.items()}, step=0)
    return tracker


def start_ray(address: str | None, log_dir: Path) -> None:
    """Join the cluster at `address` / RAY_ADDRESS, or start a local one. Ray's own messages go to a file."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # with verbose=0 the old reporter prints nothing; the new one always does
    handler = logging.FileHandler(log_dir / "ray-driver.log")
    for name in ("ray", "ray.tune", "ray.train"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.propagate = False
    address = address or os.environ.get("RAY_ADDRESS")
    # a joined cluster's workers have their node's environment, not this one: pass on the Hugging Face cache
    # (a rehearsal's stand-ins) so they load the weights the driver does
    hub = {k: os.environ[k] for k in ("HF_HUB_CACHE", "HF_HUB_OFFLINE") if k in os.environ}
    context = ray.init(address=address, log_to_driver=False, configure_logging=False,
                       runtime_env={"env_vars": {**TRAIN_ENV, **hub}},
                       **({} if address else {"num_cpus": os.cpu_count()}))
    link_ray_logs(Path(context.address_info["session_dir"]) / "logs", log_dir)


def link_ray_logs(session_logs: Path, log_dir: Path) -> None:
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


def pretrain_stage(jobs: StudyJobs, study_dir: Path, concurrent: int, tracker: StudyTracker, progress: Progress,
                   stops: StopRequests) -> dict[str, dict] | None:
    """Every pre-training checkpoint the grid needs, wave by wave, built unless stored intact; returns the
    pre-training ledger's entries, or None (having said why) when a job failed or diverged."""
    ledger = Ledger(study_dir / "pretrain")
    store = CheckpointStore(jobs.store_dir)
    for wave in pretrain_jobs(jobs.cfg):
        todo = [j for j in wave if not store.intact(jobs.pretrain_key(j))]  # a corrupted entry: built again
        # stored, but the driver was killed before it recorded the job's end
        unrecorded = [j.name for j in wave if j not in todo and ledger.get(j.name).get("status") == "running"]
        end_stored_pretraining(unrecorded, tracker, ledger)
        progress.stage("pretrain", len(todo), concurrent)
        if todo:
            run_pretraining(jobs, todo, concurrent, tracker, progress, ledger)
        missing = [j.name for j in wave if not store.exists(jobs.pretrain_key(j))]
        failed = {name: ledger.get(name).get("error", "") for name in missing
                  if ledger.get(name).get("status") in ("failed", "diverged")}
        stops.check(interrupted=len(failed) < len(missing))
        if failed:
            progress.say(f"pre-training failed for {'; '.join(f'{n} ({e})' for n, e in failed.items())}; see "
                         f"{study_dir / 'logs'}; run the same command again to retry")
            return None
    return ledger.entries()


def finetune_stage(jobs: StudyJobs, points: list[FinetunePoint], study_dir: Path, concurrent: int,
                   tracker: StudyTracker, progress: Progress, stops: StopRequests) -> dict[str, dict]:
    """The fine-tuning sweep over the grid `points` that have not ended; returns the trial ledger's entries of
    `points`."""
    ledger = Ledger(study_dir / "trials")
    ended = {name for name, e in ledger.entries().items() if e["status"] in ENDED}
    pending = [p for p in points if p.name not in ended]
    progress.stage("finetune", len(pending), concurrent, rank_by=METRIC)
    if pending:
        run_finetuning(jobs, pending, ledger, concurrent, tracker, progress, count_attempt(study_dir, "finetune"),
                       study_dir / "optuna.db")
    stops.check(interrupted=any(ledger.get(p.name).get("status") not in (*ENDED, "failed") for p in pending))
    names = {p.name for p in points}
    return {name: e for name, e in ledger.entries().items() if name in names}


def count_attempt(study_dir: Path, stage: str) -> int:
    """How many times `stage` was started before in this study (0 the first time), counting this start in
    attempts.json: it numbers the stage's Tune experiments (`<stage>-<n>`)."""
    path = study_dir / ATTEMPTS_FILE
    counts = json.loads(path.read_text()) if path.exists() else {}
    publish_file(path, json.dumps({**counts, stage: counts.get(stage, 0) + 1}).encode())
    return counts.get(stage, 0)


def trust_stage(table: pd.DataFrame, data: StudyData, cfg: StudyConfig, study_dir: Path, tracker: StudyTracker,
                progress: Progress) -> pd.DataFrame:
    """The finished trials' test predictions copied out of their jobs (predictions/<trial>.npz), and the saliency
    of the tuned trial per cell, joined to the results table as saliency_* columns."""
    finished = table.loc[table["status"] == "finished", "trial"].tolist() if len(table) else []
    collect_predictions(study_dir / "jobs", finished, study_dir / "predictions")
    best = best_per_cell(table)
    if best.empty:
        return table
    return table.join(saliency.run_stage(best, data.target, cfg.data.target, cfg.models.ladder, cfg.seed,
                                         study_dir, tracker, progress.say), on="trial")


def analysis_stage(table: pd.DataFrame, study_dir: Path, seed: int, tracker: StudyTracker,
                   progress: Progress) -> dict:
    """Laws, effective data, findings and figures (`scaling.analysis.analyse`), then the trust figures and
    fits: reliability diagrams and the laws of calibration error and localisation (trust_fits.json). What the
    analysis notes (axes without laws) goes to summary.md, not the screen: `report["notes"]`."""
    notes: list[str] = []
    # the trust figures (own files, own bootstraps) are drawn in a process of their own meanwhile: most of the
    # analysis runs in one process, so a second core would idle (spawned: this process holds Ray's threads)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        trust = pool.submit(trust_figures, table, study_dir, seed)
        report = analyse(table, study_dir, seed, notes.append)
        figures = trust.result()
    if figures:
        tracker.log_files([study_dir / FITS_FILE])
    report["figures"] += [str(p) for p in figures]
    report["notes"] = notes
    return report


def dashboard_stage(study_dir: Path, tracker: StudyTracker, dashboard: DashboardHook | None) -> str | None:
    """The index of the study's MLflow runs (the dashboard's links), then the dashboard when a hook is given."""
    (study_dir / RUN_INDEX).write_text(json.dumps(tracker.run_index(), indent=1))
    return str(dashboard(study_dir)) if dashboard else None


def log_outputs(tracker: StudyTracker, study_dir: Path, tables: list[Path], report: dict) -> int:
    """The study's outputs as artifacts of its parent run: results tables, fits, findings, dashboard, figures;
    returns how many files."""
    files = [p for p in [*tables, study_dir / "fits.json", study_dir / "findings.json",
                         *([Path(report["dashboard"])] if report["dashboard"] else [])] if p.exists()]
    tracker.log_files(files)
    tracker.log_files([Path(p) for p in report["figures"]], "figures")
    return len(files) + len(report["figures"])


def summary_stage(cfg: StudyConfig, data: StudyData, study_dir: Path, table: pd.DataFrame, report: dict,
                  concurrent: int, pretrain: dict, trials: dict, tracker: StudyTracker, progress: Progress) -> None:
    """summary.json and summary.md (the full tables, also on the parent MLflow run), and the answer printed
    last: at most 15 lines, the same the dashboard opens with (`scaling.analysis.answer`)."""
    summary = study_summary(cfg, study_dir, table, report, concurrent, pretrain, trials)
    summary["leakage"] = data.leakage  # per source: near-duplicates of target val/test images, images removed
    summary["answer"] = answer_lines(study_dir, summary["dashboard"])
    summary["summary_md"] = str(study_dir / SUMMARY_MD)
    (study_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    publish_file(study_dir / SUMMARY_MD, summary_markdown(study_dir, summary["answer"], report.get("notes", []),
                                                          time_line(summary)).encode())
    tracker.log_files([study_dir / SUMMARY_MD, study_dir / "summary.json"])
    print_summary(summary, progress)


def study_summary(cfg: StudyConfig, study_dir: Path, table: pd.DataFrame, report: dict, concurrent: int,
                  pretrain: dict, trials: dict) -> dict:
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


def time_line(summary: dict) -> str:
    if not summary["jobs_timed"]:
        return "no job was timed"
    return (f"{summary['wall_seconds']:.0f} s for training stages; train+eval steps "
            f"{summary['train_eval_share_of_wall']:.0%} of {summary['concurrent_jobs']} job slots; "
            f"about {summary['overhead_seconds_per_job']} s overhead per job")


def print_summary(summary: dict, progress: Progress) -> None:
    """The answer, the last screen of a study; its first line carries the clock like every progress line."""
    progress.say("\n".join(summary["answer"]))
