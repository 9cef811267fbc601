"""CheXpert (Stanford): `train.csv` and `valid.csv` in the dataset folder (CheXpert-v1.0 or -small).

Labels come from the CheXpert labeler: 1 positive, 0 negative, -1 uncertain, blank not mentioned. The
uncertainty policy decides -1 (U-Ignore: NaN, i.e. masked in the loss; U-Zeros: 0; U-Ones: 1); a blank stays
NaN, except that "No Finding" = 1 makes the blank findings 0, as torchxrayvision does. torchxrayvision's
CheX_Dataset is not used because it turns -1 into NaN before a policy could be applied, keeps one image per
patient and PA views by default, and reads one CSV at a time. MIMIC-CXR uses the same labels
(`labeler_matrix`).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from scaling.data.base import DataError, Task
from scaling.data.images import ImageTree, read_csv, require_rows, row_origins

#: the 14 observations of the CheXpert labeler, in CheXpert's column order
CHEXPERT_CLASSES = ("No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
                    "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
                    "Pleural Other", "Fracture", "Support Devices")
UNCERTAINTY_POLICIES = ("ignore", "zeros", "ones")
#: findings that "No Finding" = 1 rules out (support devices may be present in a normal study)
_RULED_OUT_BY_NO_FINDING = tuple(c for c in CHEXPERT_CLASSES if c not in ("No Finding", "Support Devices"))
_UNCERTAIN_VALUE = {"ignore": np.nan, "zeros": 0.0, "ones": 1.0}
_PATIENT = re.compile(r"(?:^|/)(patient\d+)/")


def check_uncertainty(policy: str) -> str:
    if policy not in UNCERTAINTY_POLICIES:
        raise ValueError(f"uncertainty must be one of {', '.join(UNCERTAINTY_POLICIES)}, got {policy!r}")
    return policy


def labeler_matrix(table: pd.DataFrame, origins: list[str], uncertainty: str) -> np.ndarray:
    """float32 (n, 14) labels in CHEXPERT_CLASSES order from CheXpert-labeler columns, under the policy.
    DataError naming file:line and column for a value other than 1, 0, -1 or blank."""
    labels = np.empty((len(table), len(CHEXPERT_CLASSES)), dtype=np.float32)
    for j, column in enumerate(CHEXPERT_CLASSES):
        raw = table[column]
        values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
        bad = (raw.notna().to_numpy() & np.isnan(values)) | ~(np.isnan(values) | np.isin(values, (1, 0, -1)))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(f"{origins[row]}: column {column!r} has {raw.iat[row]!r}; expected 1, 0, -1 or blank")
        labels[:, j] = values
    healthy = labels[:, CHEXPERT_CLASSES.index("No Finding")] == 1
    for column in _RULED_OUT_BY_NO_FINDING:
        j = CHEXPERT_CLASSES.index(column)
        labels[healthy & np.isnan(labels[:, j]), j] = 0.0
    labels[labels == -1] = _UNCERTAIN_VALUE[uncertainty]
    return labels


class LabelerTree(ImageTree):
    """An image tree labelled by the CheXpert labeler (CheXpert, MIMIC-CXR): multilabel over CHEXPERT_CLASSES
    under an uncertainty policy, frontal views only unless frontal_only is false."""

    task = Task("multilabel", CHEXPERT_CLASSES)

    def __init__(self, *, root: str, uncertainty: Literal["ignore", "zeros", "ones"] = "ignore",
                 frontal_only: bool = True, check_files: bool = True) -> None:
        super().__init__(root=root, check_files=check_files)
        self.uncertainty = check_uncertainty(uncertainty)
        self.frontal_only = bool(frontal_only)

    def _options(self) -> dict:
        return {"uncertainty": self.uncertainty, "frontal_only": self.frontal_only}


class CheXpert(LabelerTree):
    """CheXpert train (train.csv) and val (valid.csv; the official test labels are not public), multilabel
    over CHEXPERT_CLASSES, patient ids from the `patientNNNNN` path component, keys relative to the
    dataset folder (the CSV's leading `CheXpert-v1.0*/` is dropped)."""

    name = "chexpert"

    def _csvs(self) -> dict[str, Path]:
        csvs = {"train": self.root / "train.csv", "val": self.root / "valid.csv"}
        for path in csvs.values():
            if not path.is_file():
                raise DataError(f"{path} not found; expected root to be the CheXpert folder holding "
                                f"train.csv and valid.csv")
        return csvs

    def _label_files(self) -> list[Path]:
        return list(self._csvs().values())

    def _parse(self) -> pd.DataFrame:
        parts = []
        for split, path in self._csvs().items():
            table = read_csv(path, ("Path", "Frontal/Lateral") + CHEXPERT_CLASSES, dtype=str)
            origins = row_origins(path, range(len(table)))
            view = table["Frontal/Lateral"]
            bad = ~view.isin(("Frontal", "Lateral"))
            if bad.any():
                row = int(np.flatnonzero(bad.to_numpy())[0])
                raise DataError(f"{origins[row]}: Frontal/Lateral is {view.iat[row]!r}; expected Frontal or Lateral")
            keys, patients = [], []
            for path_value, origin in zip(table["Path"].tolist(), origins):
                key = _strip_release_folder(str(path_value))
                match = _PATIENT.search(key)
                if match is None:
                    raise DataError(f"{origin}: Path {path_value!r} has no patientNNNNN folder")
                keys.append(key)
                patients.append(match.group(1))
            part = pd.DataFrame({"split": split, "key": keys, "patient": patients,
                                 "y": list(labeler_matrix(table, origins, self.uncertainty)), "origin": origins})
            if self.frontal_only:
                part = part[(view == "Frontal").to_numpy()]
            require_rows(part, split, path, "keeping frontal views" if self.frontal_only else "")
            parts.append(part)
        return pd.concat(parts, ignore_index=True)


def _strip_release_folder(path: str) -> str:
    head, _, rest = path.partition("/")
    return rest if head.startswith("CheXpert-v1.0") else path
