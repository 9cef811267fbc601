"""What a study directory holds for its dashboard: results, laws, findings, MLflow runs and provenance."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from scaling.analysis.answer import Outputs, read_json
from scaling.track.runs import RUN_INDEX


class StudyDirError(ValueError):
    """A directory that is not a finished study's."""


@dataclass
class Study(Outputs):
    """What the analysis wrote, and what the dashboard adds: the MLflow run index, the config, the study's stamp."""
    runs: dict = field(default_factory=dict)
    config: str = ""
    stamp: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.stamp.get("name", self.path.name)

    def when(self) -> str:
        created = self.stamp.get("created")
        made = (self.path / "results.parquet").stat().st_mtime
        fmt = "%Y-%m-%d %H:%M UTC"
        started = time.strftime(fmt, time.gmtime(created)) if created else "unknown"
        return f"started {started}, results written {time.strftime(fmt, time.gmtime(made))}"


def load_study(path: Path) -> Study:
    path = Path(path)
    results = path / "results.parquet"
    if not results.exists():
        raise StudyDirError(f"{path} holds no results.parquet: not a study directory, or its study has not "
                            f"reached the results stage (run the study, then build again)")
    outputs = Outputs.read(path)
    return Study(**vars(outputs), runs=read_json(path / RUN_INDEX) or {},
                 config=(path / "config.yaml").read_text() if (path / "config.yaml").exists() else "",
                 stamp=read_json(path / "study.json") or {})
