"""NIH ChestX-ray14: `Data_Entry_2017_v2020.csv` (or `Data_Entry_2017.csv`), the official split lists
`train_val_list.txt` and `test_list.txt`, and the images in `images/` (the NIH box layout) or in
`images_001/images/` ... `images_012/images/` (the Kaggle layout).

torchxrayvision's NIH_Dataset is not used: it ignores the official split lists, matches labels by substring
(so a misspelt label passes silently) and keeps PA views and one image per patient by default.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from scaling.data.base import DataError, Task
from scaling.data.images import ImageTree, find_file, read_csv, require_rows, row_origins

#: the 14 findings, in the order of the dataset paper; "No Finding" means none of them
NIH_CLASSES = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
               "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia")
NO_FINDING = "No Finding"
ENTRY_FILES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
SPLIT_LISTS = {"train": "train_val_list.txt", "test": "test_list.txt"}


class NIHChestXray14(ImageTree):
    """NIH ChestX-ray14: multilabel over NIH_CLASSES (0/1, no missing labels), patient = 'Patient ID',
    splits train (train_val_list.txt) and test (test_list.txt); keys `images/NAME` or
    `images_NNN/images/NAME`, whichever folder holds the image."""

    name = "nih"
    task = Task("multilabel", NIH_CLASSES)

    def __init__(self, *, root: str, check_files: bool = True) -> None:
        super().__init__(root=root, check_files=check_files)

    def _label_files(self) -> list[Path]:
        return [find_file(self.root, ENTRY_FILES, "NIH Data_Entry CSV")] + [
            find_file(self.root, (name,), f"official {split} list") for split, name in SPLIT_LISTS.items()]

    def _parse(self) -> pd.DataFrame:
        entry_path, *list_paths = self._label_files()
        entries = read_csv(entry_path, ("Image Index", "Finding Labels", "Patient ID"), dtype=str)
        origins = row_origins(entry_path, range(len(entries)))
        split_of = _read_split_lists(dict(zip(SPLIT_LISTS, list_paths)))
        names = entries["Image Index"].tolist()
        splits = [split_of.get(name) for name in names]
        if None in splits:
            row = splits.index(None)
            raise DataError(f"{origins[row]}: image {names[row]!r} is in neither {' nor '.join(SPLIT_LISTS.values())}")
        unlisted = split_of.keys() - set(names)
        if unlisted:
            name = next(n for n in split_of if n in unlisted)  # the first in file order
            raise DataError(f"{split_of[name][1]}: image {name!r} of the {split_of[name][0]} list is not in "
                            f"{entry_path.name} ({len(unlisted)} listed images have no entry)")
        table = pd.DataFrame({"split": [s for s, _ in splits], "key": self._keys(names),
                              "patient": entries["Patient ID"], "y": list(_label_matrix(entries, origins)),
                              "origin": origins})
        for split, path in zip(SPLIT_LISTS, list_paths):
            require_rows(table[table["split"] == split], split, path)
        return table

    def _keys(self, names: np.ndarray) -> list[str]:
        if (self.root / "images").is_dir():
            return [f"images/{name}" for name in names]
        # Kaggle layout: the images are spread over images_001/images ... images_012/images
        folder_of = {}
        for part in sorted(p for p in os.listdir(self.root) if p.startswith("images_")):
            folder = f"{part}/images"
            if (self.root / folder).is_dir():
                folder_of.update((name, folder) for name in os.listdir(self.root / folder))
        return [f"{folder_of.get(name, 'images')}/{name}" for name in names]


def _read_split_lists(paths: dict[str, Path]) -> dict[str, tuple[str, str]]:
    """image name -> (split, 'file:line'); DataError for an image listed twice."""
    split_of: dict[str, tuple[str, str]] = {}
    for split, path in paths.items():
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                name = line.strip()
                if not name:
                    continue
                if name in split_of:
                    raise DataError(f"{path}:{lineno}: image {name!r} is listed again (first at {split_of[name][1]})")
                split_of[name] = (split, f"{path}:{lineno}")
    return split_of


def _label_matrix(entries: pd.DataFrame, origins: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(NIH_CLASSES)}
    labels = np.zeros((len(entries), len(NIH_CLASSES)), dtype=np.float32)
    for row, findings in enumerate(entries["Finding Labels"].fillna("").tolist()):
        if findings == NO_FINDING:
            continue
        for finding in findings.split("|"):
            if finding not in index:
                raise DataError(f"{origins[row]}: finding {finding!r} is not one of {NO_FINDING!r}, "
                                f"{', '.join(NIH_CLASSES)}")
            labels[row, index[finding]] = 1.0
    return labels
