"""Tuberculosis X-ray sets: NLM Shenzhen + Montgomery, and TBX11K.

Shenzhen (`ChinaSet_AllFiles/CXR_png/CHNCXR_0001_0.png`) and Montgomery (`MontgomerySet/CXR_png/
MCUCXR_0001_0.png`, also found under `NLM-MontgomeryCXRSet/`) carry the label in the file name's last digit
(0 normal, 1 TB); each image is one patient, and there is no official split (all records in train).
torchxrayvision's NLMTB_Dataset reads the same names but takes any last digit as a label and needs one
instance per set; this parser checks the names and reads both.

TBX11K (`imgs/`, `lists/TBX11K_train.txt`, `lists/TBX11K_val.txt`, one path under imgs/ per line): the label
is the image's folder (tb -> positive; health and sick-but-non-TB -> negative), as the dataset's own
classification task defines it. torchxrayvision's TBX11K_Dataset derives TB from bounding boxes instead, which
marks the one TB image without boxes (tb/tb1199.png) negative, so it is not used. The test images have no
public labels: splits are train and val. TBX11K has no patient ids, so each image is its own patient.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

import pandas as pd

from scaling.data.base import DataError, Task
from scaling.data.images import ImageTree, require_rows

TB_TASK = Task("binary", ("negative", "positive"))
#: set -> (folders that may hold its CXR_png, file-name prefix)
NLM_SETS = {"shenzhen": (("ChinaSet_AllFiles",), "CHNCXR"),
            "montgomery": (("MontgomerySet", "NLM-MontgomeryCXRSet/MontgomerySet"), "MCUCXR")}
_NLM_NAME = re.compile(r"^(CHNCXR|MCUCXR)_(\d+)_(\d)\.png$")
TBX11K_LISTS = {"train": "lists/TBX11K_train.txt", "val": "lists/TBX11K_val.txt"}
TBX11K_FOLDERS = {"health": 0, "sick": 0, "tb": 1}


class ShenzhenMontgomery(ImageTree):
    """Shenzhen and/or Montgomery TB sets (`sets`: both, shenzhen or montgomery): binary (negative,
    positive) from the file names, one patient per image, all records in train."""

    name = "shenzhen-montgomery"
    task = TB_TASK

    def __init__(self, *, root: str, sets: Literal["both", "shenzhen", "montgomery"] = "both") -> None:
        if sets not in ("both", *NLM_SETS):
            raise ValueError(f"sets must be one of both, {', '.join(NLM_SETS)}; got {sets!r}")
        super().__init__(root=root, check_files=False)  # records come from a listing: every file exists
        self.sets = sets

    def _options(self) -> dict:
        return {"sets": self.sets}

    def image_folders(self) -> dict[str, str]:
        """set -> its CXR_png folder relative to root; DataError when a chosen set is absent."""
        chosen = tuple(NLM_SETS) if self.sets == "both" else (self.sets,)
        found = {}
        for name in chosen:
            candidates = [f"{parent}/CXR_png" for parent in NLM_SETS[name][0]]
            folder = next((c for c in candidates if (self.root / c).is_dir()), None)
            if folder is None:
                raise DataError(f"{self.root}: no {name} images; expected a folder {' or '.join(candidates)}")
            found[name] = folder
        return found

    def _label_files(self) -> list[Path]:
        return []  # the labels are the file names: fingerprint() hashes the listing

    def _parse(self) -> pd.DataFrame:
        rows = []
        for name, folder in self.image_folders().items():
            prefix = NLM_SETS[name][1]
            for filename in sorted(os.listdir(self.root / folder)):
                if not filename.lower().endswith(".png"):
                    continue  # Thumbs.db and the like
                match = _NLM_NAME.match(filename)
                if match is None or match.group(1) != prefix:
                    raise DataError(f"{self.root / folder / filename}: expected a name like {prefix}_0001_0.png "
                                    f"(last digit 0 normal, 1 TB)")
                if match.group(3) not in "01":
                    raise DataError(f"{self.root / folder / filename}: label digit {match.group(3)} is not "
                                    f"0 (normal) or 1 (TB)")
                key = f"{folder}/{filename}"
                rows.append(("train", key, f"{prefix}_{match.group(2)}", int(match.group(3)), str(self.root / key)))
        table = pd.DataFrame(rows, columns=["split", "key", "patient", "y", "origin"])
        require_rows(table, "train", self.root)
        return table


class TBX11K(ImageTree):
    """TBX11K: binary (negative, positive) from the image folder, splits train and val from the official
    lists, one patient per image, keys `imgs/<list entry>`."""

    name = "tbx11k"
    task = TB_TASK

    def __init__(self, *, root: str, check_files: bool = True) -> None:
        super().__init__(root=root, check_files=check_files)

    def _label_files(self) -> list[Path]:
        paths = [self.root / rel for rel in TBX11K_LISTS.values()]
        for path in paths:
            if not path.is_file():
                raise DataError(f"{path} not found; expected root to be the TBX11K folder holding imgs/ and lists/")
        return paths

    def _parse(self) -> pd.DataFrame:
        parts = []
        for (split, _), path in zip(TBX11K_LISTS.items(), self._label_files()):
            rows = []
            with open(path, encoding="utf-8") as f:
                for lineno, line in enumerate(f, start=1):
                    entry = line.strip()
                    if not entry:
                        continue
                    folder = entry.split("/")[0] if "/" in entry else ""
                    if folder not in TBX11K_FOLDERS:
                        raise DataError(f"{path}:{lineno}: {entry!r} is not in one of the labelled folders "
                                        f"{', '.join(TBX11K_FOLDERS)}")
                    key = f"imgs/{entry}"
                    rows.append((split, key, key, TBX11K_FOLDERS[folder], f"{path}:{lineno}"))
            part = pd.DataFrame(rows, columns=["split", "key", "patient", "y", "origin"])
            require_rows(part, split, path)
            parts.append(part)
        return pd.concat(parts, ignore_index=True)
