"""A compact live view of a study: one line per event worth knowing, instead of Ray's log flood."""
from __future__ import annotations

import sys
import time


class Progress:
    """Counts jobs of the current stage and prints a line when one starts or ends (and at most every
    `every` seconds for results): done / running / pending, the best validation result so far, elapsed
    time and an ETA from the mean duration of ended jobs and the concurrency."""

    def __init__(self, stream=None, every: float = 15.0):
        self.stream = stream or sys.stdout
        self.every = every
        self.study_start = time.time()
        self.stage("", 0, 1)

    def stage(self, name: str, total: int, concurrent: int, rank_by: str | None = None) -> None:
        """Start counting a stage; `rank_by` names the metric whose best value the lines show."""
        self.name, self.total, self.concurrent, self.rank_by = name, total, max(1, concurrent), rank_by
        self.running: dict[str, float] = {}
        self.durations: list[float] = []
        self.best: tuple[float, str] | None = None
        self.last_line = 0.0

    def started(self, job: str) -> None:
        self.running[job] = time.time()
        self._line(f"start {job}")

    def result(self, job: str, result: dict) -> None:
        if time.time() - self.last_line >= self.every:
            self._line(f"{job} step {result.get('step', '?')}")

    def ended(self, job: str, status: str, value: float | None) -> None:
        started = self.running.pop(job, None)
        if started is not None:
            self.durations.append(time.time() - started)
        if self.rank_by and value is not None and (self.best is None or value > self.best[0]):
            self.best = (value, job)
        shown = f" {self.rank_by or 'val_roc_auc'} {value:.3f}" if value is not None else ""
        self._line(f"{status} {job}{shown}")

    def _line(self, event: str) -> None:
        self.last_line = time.time()
        done = len(self.durations)
        pending = max(0, self.total - done - len(self.running))
        eta = ""
        if self.durations:
            left = (pending + len(self.running) / 2) * (sum(self.durations) / done) / self.concurrent
            eta = f" | ETA {_clock(left)}"
        best = f" | best {self.rank_by} {self.best[0]:.3f}" if self.best else ""
        print(f"[{_clock(time.time() - self.study_start)}] {self.name} {done}/{self.total} done, "
              f"{len(self.running)} running, {pending} pending{best}{eta} | {event}", file=self.stream, flush=True)

    def say(self, text: str) -> None:
        print(f"[{_clock(time.time() - self.study_start)}] {text}", file=self.stream, flush=True)


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
