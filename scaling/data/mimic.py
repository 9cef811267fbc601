"""MIMIC-CXR-JPG 2.0.0 (PhysioNet): the release folder holding `files/` and the CSVs
`mimic-cxr-2.0.0-{chexpert,metadata,split}.csv` (or `.csv.gz`).

Labels are the study's CheXpert-labeler row under the same uncertainty policy as CheXpert; images of studies
without a label row are left out (as torchxrayvision does). Splits follow the official split file
(train, validate -> val, test). torchxrayvision's MIMIC_Dataset is not used: it collapses -1 to NaN before an
uncertainty policy could apply and ignores the official split file.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from scaling.data.base import DataError
from scaling.data.chexpert import CHEXPERT_CLASSES, LabelerTree, labeler_matrix
from scaling.data.images import find_file, read_csv, require_rows, row_origins

PREFIX = "mimic-cxr-2.0.0-"
SPLIT_NAMES = {"train": "train", "validate": "val", "test": "test"}
FRONTAL_VIEWS = ("PA", "AP")


class MimicCXR(LabelerTree):
    """MIMIC-CXR-JPG: multilabel over CHEXPERT_CLASSES, patient = subject_id, splits from the official
    split file, keys `files/pXX/pSUBJECT/sSTUDY/DICOM_ID.jpg`; frontal_only keeps ViewPosition PA and AP."""

    name = "mimic-cxr"

    def _csv(self, kind: str) -> Path:
        return find_file(self.root, (f"{PREFIX}{kind}.csv.gz", f"{PREFIX}{kind}.csv"), f"MIMIC-CXR {kind} file")

    def _label_files(self) -> list[Path]:
        return [self._csv(kind) for kind in ("split", "metadata", "chexpert")]

    def _parse(self) -> pd.DataFrame:
        split_path, meta_path, label_path = self._label_files()
        ids = ("dicom_id", "study_id", "subject_id")
        split = read_csv(split_path, ids + ("split",), dtype=str)
        split["origin"] = row_origins(split_path, range(len(split)))
        unknown = ~split["split"].isin(list(SPLIT_NAMES))
        if unknown.any():
            row = int(np.flatnonzero(unknown.to_numpy())[0])
            raise DataError(f"{split['origin'].iat[row]}: split {split['split'].iat[row]!r} is not one of "
                            f"{', '.join(SPLIT_NAMES)}")
        meta = read_csv(meta_path, ("dicom_id", "ViewPosition"), dtype=str,
                        usecols=lambda c: c in ("dicom_id", "ViewPosition"))
        labels = read_csv(label_path, ("subject_id", "study_id") + CHEXPERT_CLASSES, dtype=str)
        label_origins = row_origins(label_path, range(len(labels)))
        again = labels.duplicated(["subject_id", "study_id"]).to_numpy()
        if again.any():
            row = int(np.flatnonzero(again)[0])
            raise DataError(f"{label_origins[row]}: study {labels['study_id'].iat[row]} of subject "
                            f"{labels['subject_id'].iat[row]} has a second label row")
        matrix = labeler_matrix(labels, label_origins, self.uncertainty)
        studies = pd.DataFrame({"subject_id": labels["subject_id"], "study_id": labels["study_id"],
                                "y": list(matrix)})
        merged = split.merge(meta, on="dicom_id", how="left").merge(studies, on=["subject_id", "study_id"],
                                                                     how="inner")
        if self.frontal_only:
            merged = merged[merged["ViewPosition"].isin(FRONTAL_VIEWS)]
        subject = merged["subject_id"]
        keys = ("files/p" + subject.str[:2] + "/p" + subject + "/s" + merged["study_id"] + "/"
                + merged["dicom_id"] + ".jpg")
        table = pd.DataFrame({"split": merged["split"].map(SPLIT_NAMES), "key": keys, "patient": subject,
                              "y": merged["y"], "origin": merged["origin"]}).reset_index(drop=True)
        after = "keeping frontal views and studies with labels" if self.frontal_only else "keeping studies with labels"
        for name in SPLIT_NAMES.values():
            require_rows(table[table["split"] == name], name, split_path, after)
        return table
