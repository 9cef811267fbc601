"""ImageNet-style class folders, the natural pre-training source (ImageNet-21k on JUWELS, ImageNet-1k, ...).

Either `root/<class>/**/<image>` (one split, train: the ImageNet-21k release) or `root/<split>/<class>/...`
for split folders named train, val and/or test (ImageNet-1k with a class-sorted val). Classes are the sorted
union of the class folder names; files with an image suffix are picked up, recursively, and others ignored.
The records are the listing, so every file exists; there are no patients, so each image is its own.
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from scaling.data.base import SPLITS, DataError, Task
from scaling.data.images import IMAGE_SUFFIXES, ImageTree


class ImageFolder(ImageTree):
    """Class-folder images: multiclass over the folder names, colour (3 channels), keys
    `[<split>/]<class>/<file>`. The listing happens once, on the first records() call."""

    name = "image-folder"
    channels = 3

    def __init__(self, *, root: str) -> None:
        super().__init__(root=root, check_files=False)
        self._task: Task | None = None

    @property
    def task(self) -> Task:
        if self._task is None:
            self.records()  # the classes are known once the folders are listed
        return self._task

    def split_folders(self) -> dict[str, str]:
        """split -> folder relative to root ('' for a root that holds class folders directly)."""
        if not self.root.is_dir():
            raise DataError(f"{self.root}: dataset root of {self.name} is not a directory")
        present = {s: s for s in SPLITS if (self.root / s).is_dir()}
        return present or {"train": ""}

    def _label_files(self) -> list[Path]:
        return []  # the labels are the folder names: fingerprint() hashes the listing

    def _parse(self) -> pd.DataFrame:
        class_dirs = {}
        for split, folder in self.split_folders().items():
            base = self.root / folder
            class_dirs[split] = sorted(e.name for e in os.scandir(base) if e.is_dir() and not e.name.startswith("."))
            if not class_dirs[split]:
                raise DataError(f"{base}: no class folders; expected {base}/<class>/<image files>")
        classes = sorted(set().union(*class_dirs.values()))
        self._task = Task("multiclass", tuple(classes))
        index = {c: i for i, c in enumerate(classes)}
        splits, keys, ys = [], [], []
        for split, labels in class_dirs.items():
            folder = self.split_folders()[split]
            for label in labels:
                found = _image_files(self.root / folder / label)
                if not found:
                    raise DataError(f"{self.root / folder / label}: class folder holds no image files "
                                    f"({', '.join(IMAGE_SUFFIXES)})")
                prefix = f"{folder}/{label}" if folder else label
                keys.extend(f"{prefix}/{name}" for name in found)
                splits.extend([split] * len(found))
                ys.extend([index[label]] * len(found))
        return pd.DataFrame({"split": splits, "key": keys, "patient": keys, "y": ys})


def _image_files(folder: Path) -> list[str]:
    """Image files under `folder`, recursively, as sorted paths relative to it."""
    found = []
    for parent, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel = os.path.relpath(parent, folder)
        found.extend(name if rel == "." else f"{rel}/{name}" for name in files
                     if not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES))
    return sorted(found)
