"""A merged source: the union of several multilabel chest X-ray datasets on their shared labels.

The reference study's best medical source is CheXpert + MIMIC-CXR + NIH ChestX-ray14 + PadChest on their common
findings. Labels are matched by name under torchxrayvision's vocabulary, which renames the CheXpert labeler's
"Pleural Effusion" to NIH's "Effusion" (its CheX_Dataset and MIMIC_Dataset do so) and otherwise uses the names
these parsers already give. "shared" keeps the labels every member has; "union" keeps all, a label a member does
not have being unknown (NaN, masked in the loss). Keys and patient ids are prefixed with the member's name, so
patients stay distinct across datasets and `load` knows where an image lives; members keep their own splits.
Nested subsets and validation splits are then drawn over the merged records like any dataset's (subsets.py
stratifies on the rarest positive label, whichever member an image comes from).
"""
from __future__ import annotations

import json
from hashlib import sha256
from typing import Literal

import numpy as np
import pandas as pd

from scaling.data.base import SPLITS, DataError, Dataset, Task

#: torchxrayvision's renaming of labeler names (datasets.CheX_Dataset / MIMIC_Dataset)
XRV_NAMES = {"Pleural Effusion": "Effusion"}
SEPARATOR = "/"


def xrv_name(label: str) -> str:
    return XRV_NAMES.get(label, label)


class MergedDataset(Dataset):
    """The union of `members` (opened multilabel datasets of one channel count) on `labels`."""

    task: Task

    def __init__(self, members: list[Dataset], labels: Literal["shared", "union"] = "shared") -> None:
        names = [m.name for m in members]
        if len(members) < 2 or len(set(names)) != len(names):
            raise DataError(f"a merged source needs at least two distinct datasets, got {', '.join(names)}")
        for m in members:
            if m.task.kind != "multilabel":
                raise DataError(f"cannot merge {m.name}: its labels are {m.task.kind}; merged sources join "
                                "multilabel chest X-ray sets on their findings")
        if len({m.channels for m in members}) != 1:
            raise DataError(f"cannot merge {', '.join(names)}: they differ in channels")
        self.members = {m.name: m for m in members}
        self.labels = labels
        self.name = "merged-" + "+".join(names)
        self.channels = members[0].channels
        per_member = [[xrv_name(c) for c in m.task.classes] for m in members]
        if labels == "shared":
            common = set.intersection(*map(set, per_member))
            classes = [c for c in per_member[0] if c in common]
        else:
            classes = sorted(set().union(*per_member))
        if not classes:
            raise DataError(f"{', '.join(names)} share no label (under torchxrayvision's names)")
        self.task = Task("multilabel", tuple(classes))
        self._records: pd.DataFrame | None = None

    def records(self) -> pd.DataFrame:
        if self._records is None:
            read, problems = {}, []  # every unreadable member at once, not one per run of the study
            for name, member in self.members.items():
                try:
                    read[name] = member.records()
                except DataError as e:
                    problems.append(str(e))
            if problems:
                raise DataError("\n  ".join(problems))
            parts = []
            for name, member in self.members.items():
                recs = read[name]
                # where each merged class sits in the member's label vector (-1: the member lacks it)
                columns = [next((i for i, c in enumerate(member.task.classes) if xrv_name(c) == label), -1)
                           for label in self.task.classes]
                ys = np.stack(recs["y"].to_numpy()) if len(recs) else np.zeros((0, len(member.task.classes)))
                padded = np.concatenate([ys, np.full((len(ys), 1), np.nan, np.float32)], axis=1)
                merged = padded[:, columns].astype(np.float32)
                parts.append(pd.DataFrame({"split": recs["split"].to_numpy(),
                                           "key": name + SEPARATOR + recs["key"].astype(str),
                                           "patient": name + SEPARATOR + recs["patient"].astype(str),
                                           "y": list(merged)}))
            self._records = pd.concat(parts, ignore_index=True)
        return self._records.copy(deep=False)

    def member_of(self, key: str) -> tuple[Dataset, str]:
        name, sep, rest = key.partition(SEPARATOR)
        if not sep or name not in self.members:
            raise DataError(f"{self.name}: key {key!r} names no member ({', '.join(self.members)})")
        return self.members[name], rest

    def load(self, key: str) -> np.ndarray:
        member, rest = self.member_of(key)
        return member.load(rest)

    def file_name(self, key: str) -> str:
        member, rest = self.member_of(key)
        root = getattr(member, "root", None)
        return str(root / rest) if root is not None else f"{member.name}:{rest}"

    def fingerprint(self) -> str:
        spec = {"labels": self.labels, "members": [[n, m.fingerprint()] for n, m in self.members.items()]}
        return sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()

    def contributions(self) -> dict:
        """Per member (and "merged"): images per split, patients, and images positive for each merged label."""
        recs = self.records()
        member = recs["key"].str.partition(SEPARATOR)[0]
        out = {}
        for name in [*self.members, "merged"]:
            part = recs if name == "merged" else recs[member == name]
            ys = np.stack(part["y"].to_numpy()) if len(part) else np.zeros((0, len(self.task.classes)))
            counts = part["split"].value_counts()
            out[name] = {"images": {s: int(counts.get(s, 0)) for s in SPLITS},
                         "patients": int(part["patient"].nunique()),
                         "classes": {c: int(np.sum(ys[:, i] == 1)) for i, c in enumerate(self.task.classes)}}
        return out


def file_name(dataset: Dataset, key: str) -> str:
    """The file an image of `dataset` comes from, for messages: root/key, a merged member's, or name:key."""
    if isinstance(dataset, MergedDataset):
        return dataset.file_name(key)
    root = getattr(dataset, "root", None)
    return str(root / key) if root is not None else f"{dataset.name}:{key}"
