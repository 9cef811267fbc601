"""COVIDx (COVID-Net): a root with `train/` and `test/` image folders and one split file per split.

Split files are named as in COVID-Net's labels folder (`train_COVIDx9B.txt`, `test_COVIDx9B.txt`) or as in
the Kaggle release (`train.txt`, `test.txt`); a `val` file (`val_COVIDx9B.txt` / `val.txt`, with images in
`val/`) is used where the release has one. Each line is `patient_id filename label source`, separated by
spaces; patient ids may contain spaces themselves (`COVID 1 COVID(1).png positive sirm`), so the last three
fields are taken from the right. torchxrayvision has no COVIDx parser (its COVID19_Dataset reads the
ieee8023 repository), hence this one.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import pandas as pd

from scaling.data.base import SPLITS, DataError, Task
from scaling.data.images import ImageTree, require_rows

BINARY = Task("binary", ("negative", "positive"))
MULTICLASS = Task("multiclass", ("normal", "pneumonia", "COVID-19"))
#: version -> label set: "A" releases are three-class, "B" releases are COVID-19 positive vs negative
VERSIONS = {"8A": MULTICLASS, "8B": BINARY, "9A": MULTICLASS, "9B": BINARY}


class Covidx(ImageTree):
    """COVIDx versions 8A/8B/9A/9B: splits train and test (and val where a val file exists); binary
    labels (negative, positive) for the B versions, three classes (normal, pneumonia, COVID-19) for A;
    patient ids from the split files; keys `<split>/<filename>`."""

    name = "covidx"

    def __init__(self, *, root: str, version: Literal["8A", "8B", "9A", "9B"] = "9B",
                 check_files: bool = True) -> None:
        if version not in VERSIONS:
            raise ValueError(f"covidx version must be one of {', '.join(VERSIONS)}, got {version!r}")
        super().__init__(root=root, check_files=check_files)
        self.version = version
        self.task = VERSIONS[version]

    def split_files(self) -> dict[str, Path]:
        """split -> its split file; train and test are required, val is used when present."""
        found = {}
        for split in SPLITS:
            names = (f"{split}_COVIDx{self.version}.txt", f"{split}.txt")
            path = next((self.root / n for n in names if (self.root / n).is_file()), None)
            if path is not None:
                found[split] = path
            elif split != "val":
                raise DataError(f"{self.root}: no {split} split file for COVIDx {self.version}; "
                                f"expected {names[0]} or {names[1]}")
        return found

    def _label_files(self) -> list[Path]:
        return list(self.split_files().values())

    def _options(self) -> dict:
        return {"version": self.version}

    def _parse(self) -> pd.DataFrame:
        parts = []
        for split, path in self.split_files().items():
            part = read_split_file(path, split, self.task.classes)
            require_rows(part, split, path)
            parts.append(part)
        return pd.concat(parts, ignore_index=True)


def read_split_file(path: Path, split: str, classes: tuple[str, ...]) -> pd.DataFrame:
    """One COVIDx split file as records (with origin); DataError naming file:line for a malformed line
    or a label outside `classes`."""
    index = {label: i for i, label in enumerate(classes)}
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 4:
                raise DataError(f"{path}:{lineno}: expected 'patient_id filename label source' (4 or more "
                                f"space-separated fields; the patient id may contain spaces), got {line.strip()!r}")
            filename, label = fields[-3], fields[-2]
            if label not in index:
                raise DataError(f"{path}:{lineno}: label {label!r} is not one of {', '.join(classes)}")
            rows.append((split, f"{split}/{filename}", " ".join(fields[:-3]), index[label], f"{path}:{lineno}"))
    return pd.DataFrame(rows, columns=["split", "key", "patient", "y", "origin"])
