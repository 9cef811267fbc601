"""The one interface every dataset family implements, real or synthetic.

A dataset is a table of records plus a way to load one image. Everything downstream (shards, subsets,
the `describe` command, training) sees only this interface, so a real COVIDx tree and the embedded
synthetic target travel the same path.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")

#: columns of `Dataset.records()`, in this order
RECORD_COLUMNS = ("split", "key", "patient", "y")

TaskKind = Literal["binary", "multiclass", "multilabel"]


class DataError(ValueError):
    """Bad input data. The message names the file (and line or column) and says what was expected."""


@dataclass(frozen=True)
class Task:
    """What a label means. `binary` and `multiclass` labels are class indices into `classes`;
    `multilabel` labels are float vectors over `classes` with NaN where the label is uncertain or missing."""

    kind: TaskKind
    classes: tuple[str, ...]

    @property
    def num_outputs(self) -> int:
        return 1 if self.kind == "binary" else len(self.classes)


class Dataset(abc.ABC):
    """A dataset family instance: records with splits, labels and patient ids, and image loading.

    `records()` returns a DataFrame with columns RECORD_COLUMNS:
      - split:   one of SPLITS ("val" only where the source defines one; otherwise subsets.py carves it)
      - key:     str, what `load` takes (a path relative to the root for real data, an index for synthetic)
      - patient: str, the patient id (images of one patient never straddle splits)
      - y:       int class index (binary / multiclass) or np.ndarray float32 of len(classes) (multilabel)
    Parsing happens once per instance; bad input raises DataError naming file and line.
    """

    name: str
    task: Task
    #: 1 for grayscale X-rays, 3 for colour images
    channels: int

    @abc.abstractmethod
    def records(self) -> pd.DataFrame: ...

    @abc.abstractmethod
    def load(self, key: str) -> np.ndarray:
        """The image for `key`: HxW uint8/uint16 (grayscale) or HxWx3 uint8. Raises DataError when the
        file is missing, corrupt or truncated, naming the file."""

    @abc.abstractmethod
    def fingerprint(self) -> str:
        """A stable string identifying the inputs (e.g. hash of the split/label files and the options,
        or the generator's seed and parameters). Shard cache keys are built from it."""


def describe(dataset: Dataset) -> dict:
    """Per split: image counts per class and the number of distinct patients.

    Returns {split: {"classes": {label: count}, "patients": n}}; for multilabel tasks a class counts
    the images where it is positive."""
    recs = dataset.records()
    out: dict = {}
    for split in [s for s in SPLITS if s in set(recs["split"])]:
        part = recs[recs["split"] == split]
        if dataset.task.kind == "multilabel":
            ys = np.stack(part["y"].to_numpy()) if len(part) else np.zeros((0, len(dataset.task.classes)))
            counts = {c: int(np.nansum(ys[:, i] == 1)) for i, c in enumerate(dataset.task.classes)}
        else:
            vc = part["y"].value_counts()
            counts = {c: int(vc.get(i, 0)) for i, c in enumerate(dataset.task.classes)}
        out[split] = {"classes": counts, "patients": int(part["patient"].nunique())}
    return out
