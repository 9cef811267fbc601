"""Stand-in datasets for a rehearsal: each configured dataset written in its real on-disk layout (formats.py), with
generated images, small enough to stage in seconds and large enough for every subset the reduced grid asks for.

Images are smooth random fields (a coarse random grid, upsampled, with faint noise): unlike white noise, their
content survives the resize to the study's resolution, so a near-duplicate planted in the NIH stand-in (a target
test image re-encoded with faint noise, as COVIDx's RSNA negatives are NIH images) lies within the leakage
guard's distance (0-6 of 256 bits at 32 px), and unrelated images far outside it (65 bits and more). Everything is seeded: a rehearsal writes the same files every time."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from scaling.rehearse import formats

#: near-duplicates of target test images planted in the NIH stand-in when the target is COVIDx
PLANTED_LEAKS = 3
#: a stand-in image's size (height, width): not square, so the center crop matters
SHAPE = (56, 48)


@dataclass
class Standin:
    """What a stand-in dataset holds: its root and, for the NIH stand-in, the planted near-duplicates."""

    root: Path
    images: int
    planted: list[str] = field(default_factory=list)


def smooth_image(rng: np.random.Generator, shape: tuple[int, int] = SHAPE, bits: int = 8) -> np.ndarray:
    """A smooth random field: a 6x6 grid upsampled bilinearly, plus faint noise, as uint8 or 16-bit values."""
    grid = Image.fromarray((rng.random((6, 6)) * 255).astype(np.float32), mode="F")
    field_ = np.asarray(grid.resize(shape[::-1], Image.Resampling.BILINEAR), dtype=np.float64) / 255
    return _quantise(field_ + rng.normal(0, 0.002, shape), bits)


def reencoded_copy(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`pixels` with faint noise, as a re-release re-encodes the same radiograph (COVIDx's RSNA negatives are NIH's
    images, converted to DICOM at the same size)."""
    return _quantise(pixels / 255 + rng.normal(0, 0.001, pixels.shape), 8)


def _quantise(values: np.ndarray, bits: int) -> np.ndarray:
    top = (1 << bits) - 1
    return (np.clip(values, 0, 1) * top).round().astype(np.uint16 if bits > 8 else np.uint8)


class Pixels:
    """Images by key, drawn from one seeded generator in the order asked, and remembered (for planting)."""

    def __init__(self, seed: int, bits: int = 8):
        self.rng, self.bits, self.drawn = np.random.default_rng(seed), bits, {}

    def __call__(self, key: str) -> np.ndarray:
        self.drawn[key] = smooth_image(self.rng, bits=self.bits)
        return self.drawn[key]


def _labels(rng: np.random.Generator, n: int, values=("1.0", "0.0", "-1.0", "", "")) -> list[str]:
    return [values[i] for i in rng.integers(0, len(values), n)]


# ------------------------------------------------------------------------------------------------ targets


def covidx(root: Path, per_class: int, test_per_class: int, seed: int, version: str = "9B") -> tuple[Standin, dict]:
    """COVID-Net split files and PNGs: `per_class` training and `test_per_class` test images per class; negatives
    come from "rsna" like the real release's. Returns the stand-in and its test images by key (for planting)."""
    classes = ("negative", "positive") if version.endswith("B") else ("normal", "pneumonia", "COVID-19")
    sources = {"negative": "rsna", "normal": "rsna", "pneumonia": "rsna"}
    lines: dict[str, list[str]] = {"train": [], "test": []}
    for split, count in (("train", per_class), ("test", test_per_class)):
        for c, label in enumerate(classes):
            for i in range(count):
                patient = f"COVID {split}{c}{i}" if i % 7 == 0 else f"{split}-{c}-{i:04d}"  # ids with spaces, as in 8B
                lines[split].append(f"{patient} {split}-{c}-{i:04d}.png {label} {sources.get(label, 'ricord')}")
    pixels = Pixels(seed)
    formats.write_covidx(root, lines, version=version, pixels=pixels)
    test = {k: v for k, v in pixels.drawn.items() if k.startswith("test/")}
    return Standin(root, sum(map(len, lines.values()))), test


def shenzhen_montgomery(root: Path, per_class: int, seed: int) -> Standin:
    """NLM Shenzhen and Montgomery folders, the label in the file name's last digit."""
    files = {"ChinaSet_AllFiles/CXR_png": [], "MontgomerySet/CXR_png": []}
    for label in (0, 1):
        for i in range(per_class):
            folder, prefix = (("ChinaSet_AllFiles/CXR_png", "CHNCXR") if i % 4 else
                              ("MontgomerySet/CXR_png", "MCUCXR"))
            files[folder].append(f"{prefix}_{label * 1000 + i + 1:04d}_{label}.png")
    formats.write_nlm_tb(root, files, pixels=Pixels(seed))
    return Standin(root, 2 * per_class)


def tbx11k(root: Path, per_class: int, seed: int) -> Standin:
    lists = {"TBX11K_train.txt": [], "TBX11K_val.txt": []}
    for folder in ("health", "tb"):
        for i in range(per_class):
            lists["TBX11K_val.txt" if i % 5 == 0 else "TBX11K_train.txt"].append(f"{folder}/{folder[0]}{i:04d}.png")
    formats.write_tbx11k(root, lists, pixels=Pixels(seed))
    return Standin(root, 2 * per_class)


def image_folder(root: Path, per_class: int, seed: int, classes: int = 4) -> Standin:
    pixels = Pixels(seed)
    formats.write_image_folder(root, {f"n{c:08d}": [f"img_{i:04d}.JPEG" for i in range(per_class)]
                                      for c in range(classes)},
                               pixels=lambda key: np.repeat(pixels(key)[..., None], 3, axis=2))
    return Standin(root, classes * per_class)


# ------------------------------------------------------------------------------------------------ chest X-ray sources


def chexpert(root: Path, n: int, seed: int) -> Standin:
    """`train.csv` (every tenth image a lateral view, which frontal_only drops) and `valid.csv`."""
    rng = np.random.default_rng(seed)
    rows = {"train": [], "valid": []}
    for i in range(n):
        split = "valid" if i % 8 == 0 else "train"
        view = "lateral" if i % 10 == 9 else "frontal"
        path = f"CheXpert-v1.0-small/{split}/patient{i + 1:05d}/study1/view1_{view}.jpg"
        rows[split].append(",".join([path, "Female", "68", view.capitalize(), "AP" if view == "frontal" else "",
                                     *_labels(rng, 14)]))
    formats.write_chexpert(root, rows["train"], rows["valid"], pixels=Pixels(seed))
    return Standin(root, n)


def mimic(root: Path, n: int, seed: int) -> Standin:
    """MIMIC-CXR-JPG's split, metadata and labeler files; one study per subject, every tenth without a label row."""
    rng = np.random.default_rng(seed)
    split = ["dicom_id,study_id,subject_id,split"]
    meta = ["dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns"]
    labels = [formats.MIMIC_LABEL_HEADER]
    for i in range(n):
        subject, study, dicom = f"{10000001 + i}", f"{50000001 + i}", f"{i:08x}-d{i}"
        split.append(f"{dicom},{study},{subject},{('validate', 'test', *['train'] * 6)[i % 8]}")
        meta.append(f"{dicom},{subject},{study},CHEST (PA AND LAT),{'LATERAL' if i % 12 == 11 else 'PA'},3056,2544")
        if i % 10 != 9:
            labels.append(",".join([subject, study, *_labels(rng, 14)]))
    formats.write_mimic(root, split, meta, labels, pixels=Pixels(seed))
    return Standin(root, n)


def nih(root: Path, n: int, seed: int, plant: dict[str, np.ndarray] | None = None) -> Standin:
    """Data_Entry_2017_v2020.csv and the split lists; `plant`: images (target test images) whose re-encoded copies
    join the training list, under NIH names, as near-duplicates for the leakage guard."""
    rng = np.random.default_rng(seed)
    findings = ("No Finding", "Cardiomegaly", "Effusion", "Atelectasis|Effusion", "Infiltration", "Nodule")
    rows, lists = [], {"train_val_list.txt": [], "test_list.txt": []}
    plant = plant or {}
    pixels = Pixels(seed)
    copies = dict(zip([f"{90000001 + i:08d}_000.png" for i in range(len(plant))],
                      [reencoded_copy(p, rng) for p in plant.values()]))
    for i, name in enumerate([f"{i + 1:08d}_000.png" for i in range(n)] + list(copies)):
        rows.append(f"{name},{findings[i % len(findings)]},0,{int(name[:8])},57,M,PA,2500,2048,0.143,0.143")
        lists["test_list.txt" if i % 6 == 5 and name not in copies else "train_val_list.txt"].append(name)
    formats.write_nih(root, rows, lists, pixels=lambda key: copies.get(key.rsplit("/", 1)[1]) if
                      key.rsplit("/", 1)[1] in copies else pixels(key))
    return Standin(root, len(rows), planted=[f"images/{name}" for name in copies])


def padchest(root: Path, n: int, seed: int) -> Standin:
    """The labels CSV (torchxrayvision's parser) and 16-bit PNGs in numbered folders."""
    labels = ("['normal']", "\"['pleural effusion', 'cardiomegaly']\"", "\"['alveolar pattern', 'pacemaker']\"",
              "['nodule']")
    rows = [f"{i},img_{i:05d}.png,{i % 3},20140915,s{i},p{i},1950.0,F,POSTEROANTERIOR,PA,"
            f"Manual review of DICOM fields,No,CR,{labels[i % len(labels)]}" for i in range(n)]
    formats.write_padchest(root, rows, pixels=Pixels(seed, bits=12))
    return Standin(root, n)


#: the sources' writers by registry name: (root, images, seed) -> Standin
SOURCES: dict[str, Callable[..., Standin]] = {
    "chexpert": chexpert, "mimic-cxr": mimic, "nih": nih, "padchest": padchest,
    "image-folder": lambda root, n, seed: image_folder(root, max(2, n // 4), seed),
    "shenzhen-montgomery": lambda root, n, seed: shenzhen_montgomery(root, max(2, n // 2), seed),
    "tbx11k": lambda root, n, seed: tbx11k(root, max(2, n // 2), seed),
}
#: the targets' writers by registry name: (root, per class, test per class, seed, options) -> (Standin, test images)
TARGETS: dict[str, Callable[..., tuple[Standin, dict]]] = {
    "covidx": lambda root, k, t, seed, options: covidx(root, k, t, seed, options.get("version", "9B")),
    "shenzhen-montgomery": lambda root, k, t, seed, options: (shenzhen_montgomery(root, k + t, seed), {}),
    "tbx11k": lambda root, k, t, seed, options: (tbx11k(root, k + t, seed), {}),
    "image-folder": lambda root, k, t, seed, options: (image_folder(root, k + t, seed), {}),
}
