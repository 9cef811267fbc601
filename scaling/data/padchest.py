"""PadChest (BIMCV): `PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv` (or `.csv.gz`) and the 16-bit
PNGs, either in the release's numbered folders (`0/` ... `54/`, the CSV's ImageDir) or all in the root.

The labels are torchxrayvision's: its PC_Dataset maps PadChest's ~190 free-text findings onto 28 pathologies
(with synonyms) and drops rows without labels, the images known to be broken, and patients younger than 10.
It reads only the CSV (images are loaded per item, never here). PadChest has no official split, so every
record is in train and subsets.py carves validation and test by patient.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from scaling.data.base import DataError, Task
from scaling.data.images import ImageTree, find_file, read_csv, require_rows

CSV_NAMES = ("PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv",
             "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz")
#: torchxrayvision's PadChest pathologies (sorted, as it orders them)
PADCHEST_CLASSES = ("Air Trapping", "Aortic Atheromatosis", "Aortic Elongation", "Atelectasis",
                    "Bronchiectasis", "Cardiomegaly", "Consolidation", "Costophrenic Angle Blunting", "Edema",
                    "Effusion", "Emphysema", "Fibrosis", "Flattened Diaphragm", "Fracture", "Granuloma",
                    "Hemidiaphragm Elevation", "Hernia", "Hilar Enlargement", "Infiltration", "Mass", "Nodule",
                    "Pleural_Thickening", "Pneumonia", "Pneumothorax", "Scoliosis", "Support Devices", "Tube",
                    "Tuberculosis")
#: columns torchxrayvision's parser reads
REQUIRED_COLUMNS = ("ImageID", "ImageDir", "PatientID", "PatientBirth", "PatientSex_DICOM", "Projection",
                    "StudyDate_DICOM", "Labels")
#: Projection values of frontal images (torchxrayvision renames AP_horizontal to "AP Supine")
FRONTAL_VIEWS = ["PA", "AP", "AP Supine"]


class PadChest(ImageTree):
    """PadChest: multilabel over PADCHEST_CLASSES (0/1), patient = PatientID, all records in train;
    frontal_only keeps projections PA, AP and AP supine."""

    name = "padchest"
    task = Task("multilabel", PADCHEST_CLASSES)

    def __init__(self, *, root: str, frontal_only: bool = True, check_files: bool = True) -> None:
        super().__init__(root=root, check_files=check_files)
        self.frontal_only = bool(frontal_only)

    def _label_files(self) -> list[Path]:
        return [find_file(self.root, CSV_NAMES, "PadChest labels CSV")]

    def _options(self) -> dict:
        return {"frontal_only": self.frontal_only}

    def _parse(self) -> pd.DataFrame:
        (csv_path,) = self._label_files()
        read_csv(csv_path, REQUIRED_COLUMNS, nrows=0)  # a clear error for a missing column, before xrv reads it
        import torchxrayvision as xrv  # heavy (imports torch): only PadChest needs it

        try:
            parsed = xrv.datasets.PC_Dataset(imgpath=str(self.root), csvpath=str(csv_path),
                                             views=FRONTAL_VIEWS if self.frontal_only else ["*"],
                                             unique_patients=False)
        except Exception as err:  # xrv raises whatever pandas raises on a malformed value
            raise DataError(f"{csv_path}: torchxrayvision cannot parse it ({type(err).__name__}: {err})") from err
        order = [list(parsed.pathologies).index(c) for c in PADCHEST_CLASSES]
        labels = np.asarray(parsed.labels, dtype=np.float32)[:, order]
        csv = parsed.csv
        folders = {p.name for p in self.root.iterdir() if p.is_dir()}
        image_dir = csv["ImageDir"].astype("Int64").astype(str)
        keys = [f"{d}/{image}" if d in folders else image
                for d, image in zip(image_dir.tolist(), csv["ImageID"].tolist())]
        # the release's CSV starts with an unnamed 0-based row number; its Report texts span several lines,
        # so records are named by row rather than by line
        rows = csv["Unnamed: 0"] if "Unnamed: 0" in csv else None
        origins = [f"{csv_path} row {int(r) + 1}" for r in rows] if rows is not None else [str(csv_path)] * len(csv)
        table = pd.DataFrame({"split": "train", "key": keys, "patient": csv["PatientID"].astype(str).to_numpy(),
                              "y": list(labels), "origin": origins})
        require_rows(table, "train", csv_path, "torchxrayvision's filters" + (" and keeping frontal views"
                                                                               if self.frontal_only else ""))
        return table
