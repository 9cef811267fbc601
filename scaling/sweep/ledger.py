"""The trial ledger: one small JSON file per fine-tuning trial in the study directory, written by the study
driver when the trial starts (its hyper-parameters) and when it ends (status and final metrics).

It is what makes a study resumable and its results complete: a restarted sweep reads it to skip ended
trials and to restart interrupted ones with the hyper-parameters they began with, and the results table is
built from it. Each write replaces the file atomically and syncs it (`scaling.files.publish_file`), so a killed
driver, or a crashed node, leaves either the old or the new record, never half of one.
"""
from __future__ import annotations

import json
from pathlib import Path

from scaling.files import publish_file

#: statuses of trials that are not run again (a diverged trial, seeded, would diverge again)
ENDED = ("finished", "stopped", "diverged")


class Ledger:
    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        return self.dir / f"{name}.json"

    def get(self, name: str) -> dict:
        path = self._path(name)
        return json.loads(path.read_text()) if path.exists() else {}

    def update(self, name: str, **fields) -> dict:
        entry = {**self.get(name), **fields}
        publish_file(self._path(name), json.dumps(entry, indent=1, sort_keys=True, default=float).encode())
        return entry

    def entries(self) -> dict[str, dict]:
        return {p.stem: json.loads(p.read_text()) for p in sorted(self.dir.glob("*.json"))}
