"""The rehearsal, top to bottom: stand-ins and the reduced config (reduce.py), the study driver run as a user runs
it and stopped once mid-sweep, run again to resume, the config's DDP job (ddp.py), then the checklist
(checklist.py) printed and written to `rehearsal.md`.

A rehearsal is resumable like the study it runs: what each step did is kept in `rehearsal-state.json`, so a
rehearsal stopped by its job's end (Slurm's signal, passed on to the driver) and run again by the resubmitted job
goes on from the step it was in, and counts a stop only for a trial that ended in its own driver run.

The driver is the application's own command (`command`: e.g. `python studies/scaling_law.py`, with `--address`
on a cluster), run in a subprocess with `--config <rehearsal.yaml> --out <dir>/study`: the library does not import
the application, and a subprocess is what a stop signal is sent to. The subprocesses get the stand-ins' Hugging
Face cache (HF_HUB_CACHE) in their environment, so the real one is never read or written.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from scaling.config import StudyConfig
from scaling.rehearse import checklist
from scaling.rehearse.reduce import reduce
from scaling.sweep.ledger import ENDED

#: the exit codes of the study driver (scaling.study): done, and stopped on request (resumable)
EXIT_OK, EXIT_RESUMABLE = 0, 75
#: the longest a driver may take to end after a stop request
STOP_TIMEOUT = 300


@dataclass
class Runs:
    """What the driver's runs did, kept across attempts (`save`/`load`): the exit codes and wall times of the
    stopped run and of the resuming one, the trials that had ended when the stop came, the DDP job's report."""

    exits: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    #: trial -> its ledger entry when the stop was sent
    ended_before_stop: dict[str, dict] = field(default_factory=dict)
    ddp: dict = field(default_factory=dict)
    #: the driver while it runs, and the stop signal the rehearsal itself got (Slurm's, before a time limit)
    driver: subprocess.Popen | None = field(default=None, repr=False)
    stopped_by: int | None = None

    KEPT = ("exits", "seconds", "ended_before_stop", "ddp")

    @property
    def stop_done(self) -> bool:
        return bool(self.exits) and self.exits[0] == EXIT_RESUMABLE and bool(self.ended_before_stop)

    @property
    def resume_done(self) -> bool:
        return len(self.exits) > 1 and self.exits[1] == EXIT_OK

    @property
    def ddp_done(self) -> bool:
        return "step" in self.ddp

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")  # replaced whole: a job killed mid-write leaves the previous state
        tmp.write_text(json.dumps({k: getattr(self, k) for k in self.KEPT}, indent=1))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> "Runs":
        return cls(**{k: v for k, v in json.loads(path.read_text()).items() if k in cls.KEPT}) \
            if path.is_file() else cls()


def rehearse(cfg: StudyConfig, out: str | Path, *, command: list[str], address: str | None = None,
             tracking_uri: str | None = None, config_path: str = "<config>", log=print) -> int:
    """Rehearse study `cfg` (read from `config_path`, which the printed commands name) in `out`: stand-ins, the
    reduced study run with `command` (the application's entry point, given `--config FILE --out DIR`, and
    `--address` when `address`, a Ray cluster to join, is given, `--tracking-uri` when `tracking_uri`, an MLflow
    server, is), the DDP job (on that cluster too), the checklist. Returns 0 when every stage passed, else 1;
    EXIT_RESUMABLE when a SIGTERM/SIGUSR1 (passed on to the driver) cut a step short, so a resubmitted job goes on
    from that step; a stop that comes once every step is done changes nothing."""
    started = time.time()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    log(f"rehearsal of {cfg.name!r} in {out}: writing stand-in data and weights")
    plan = reduce(cfg, out)
    config = out / "rehearsal.yaml"
    config.write_text(yaml.safe_dump(plan.raw, sort_keys=False))
    env = {**os.environ, "HF_HUB_CACHE": str(plan.hf_cache or out / "standins" / "huggingface"),
           "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    study = out / "study"
    joins = ["--address", address] if address else []
    tracking = ["--tracking-uri", tracking_uri] if tracking_uri else []
    driver = [*command, "--config", str(config), "--out", str(study), *joins, *tracking]
    state = out / "rehearsal-state.json"
    runs = Runs.load(state)
    if runs.exits:
        log(f"rehearsal: going on from an earlier attempt (driver exits so far {runs.exits})")

    def stop(signum, _frame):
        runs.stopped_by = signum
        if runs.driver is not None and runs.driver.poll() is None:
            runs.driver.send_signal(signal.SIGTERM)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        if not runs.stop_done and runs.stopped_by is None:
            log("rehearsal: the study, to be stopped once a fine-tuning trial has ended in this run")
            runs.exits, runs.seconds, runs.ended_before_stop = [], [], {}
            run_driver(driver, env, out / "logs" / "driver-1.log", runs, stop_when_ended=study / "trials", log=log)
            runs.save(state)
        if runs.stop_done and not runs.resume_done and runs.stopped_by is None:
            log("rehearsal: the study again, resuming")
            del runs.exits[1:], runs.seconds[1:]
            run_driver(driver, env, out / "logs" / "driver-2.log", runs, log=log)
            runs.save(state)
        if runs.resume_done and not runs.ddp_done and runs.stopped_by is None:
            log(f"rehearsal: one job on {cfg.resources.num_workers} DDP workers (gloo)")
            runs.ddp = ddp_job(config, study, cfg.resources.num_workers, out, env, joins, log)
            runs.save(state)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    cut = runs.stopped_by is not None and not (runs.stop_done and runs.resume_done and runs.ddp_done)
    if cut:
        log(f"rehearsal: stopped by signal {runs.stopped_by}; run it again to go on from here")
        return EXIT_RESUMABLE
    report = checklist.build(cfg, plan, study, runs, time.time() - started, config_path)
    text = checklist.render(report)
    (out / "rehearsal.md").write_text(text)
    (out / "rehearsal.json").write_text(json.dumps(report, indent=1, default=str))
    log(text)
    return 0 if report["passed"] else 1


def run_driver(driver: list[str], env: dict, log_path: Path, runs: Runs, *, stop_when_ended: Path | None = None,
               log=print) -> None:
    """Run the study driver, its output to `log_path` and (indented) to `log`; with `stop_when_ended`, send it
    SIGTERM (the stop a Slurm allocation's end sends) once a trial of that ledger has ended in this run."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    before = set(_ended(stop_when_ended)) if stop_when_ended is not None else set()
    with open(log_path, "w") as sink:
        proc = runs.driver = subprocess.Popen(driver, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                              text=True)
        if runs.stopped_by is not None:  # the stop came while the driver was being started
            proc.send_signal(signal.SIGTERM)
        copier = threading.Thread(target=_copy, args=(proc.stdout, sink, log), daemon=True)
        copier.start()
        while stop_when_ended is not None and proc.poll() is None and runs.stopped_by is None:
            # only a trial that ended in this run counts: an earlier attempt's are done (the driver skips them)
            ended = {name: e for name, e in _ended(stop_when_ended).items() if name not in before}
            if ended:
                runs.ended_before_stop = ended
                log(f"rehearsal: {', '.join(ended)} ended: stopping the driver (SIGTERM)")
                proc.send_signal(signal.SIGTERM)
                break
            time.sleep(0.5)
        try:
            proc.wait(timeout=STOP_TIMEOUT if stop_when_ended else None)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        copier.join()
    runs.exits.append(proc.returncode)
    runs.seconds.append(time.perf_counter() - started)


def ddp_job(config: Path, study: Path, workers: int, out: Path, env: dict, joins: list[str], log) -> dict:
    """The config's DDP job (ddp.py) in its own process; its report, or the failure's last lines."""
    report = out / "ddp" / "report.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    log_path = out / "logs" / "ddp.log"
    with open(log_path, "w") as sink:
        done = subprocess.run([sys.executable, "-m", "scaling.rehearse.ddp", str(config), str(study),
                               str(max(1, workers)), str(report), *joins], env=env, stdout=sink, stderr=subprocess.STDOUT)
    if done.returncode == 0 and report.is_file():
        return json.loads(report.read_text())
    tail = log_path.read_text().strip().splitlines()[-5:]
    log("\n".join(["rehearsal: the DDP job failed:", *tail]))
    return {"error": tail[-1] if tail else f"exit {done.returncode}", "log": str(log_path)}


def _ended(ledger: Path) -> dict[str, dict]:
    """The trials of a ledger directory that have ended (finished, stopped by ASHA or diverged)."""
    found = {}
    for path in sorted(ledger.glob("*.json")) if ledger.is_dir() else []:
        try:
            entry = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being replaced
        if entry.get("status") in ENDED:
            found[path.stem] = entry
    return found


def _copy(stream, sink, log) -> None:
    for line in stream:
        sink.write(line)
        sink.flush()
        log("  | " + line.rstrip())
