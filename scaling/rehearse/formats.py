"""Writers of dataset trees in the real on-disk layouts: real file names, real CSV / list / split-file formats,
the images in the format the real release uses (PNG, 16-bit PNG, JPEG, DICOM). The rows are given by the caller:
the tests' small edge-case trees (tests/fake_trees.py) and the rehearsal's generated stand-ins (standin_data.py).
An image is given as pixels, or omitted for a 4x4 black placeholder PNG."""
from __future__ import annotations

import gzip
import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

#: pixels of the image at a key (path relative to the dataset root); None: the 4x4 placeholder
Pixels = Callable[[str], "np.ndarray | None"]

CHEXPERT_HEADER = ("Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,"
                   "Lung Opacity,Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,"
                   "Pleural Effusion,Pleural Other,Fracture,Support Devices")
NIH_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
              "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")
NIH_ENTRY_FILE = "Data_Entry_2017_v2020.csv"
PADCHEST_HEADER = (",ImageID,ImageDir,StudyDate_DICOM,StudyID,PatientID,PatientBirth,PatientSex_DICOM,"
                   "ViewPosition_DICOM,Projection,MethodProjection,Pediatric,Modality_DICOM,Labels")
PADCHEST_CSV = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
MIMIC_LABEL_HEADER = ("subject_id,study_id,Atelectasis,Cardiomegaly,Consolidation,Edema,Enlarged Cardiomediastinum,"
                      "Fracture,Lung Lesion,Lung Opacity,No Finding,Pleural Effusion,Pleural Other,Pneumonia,"
                      "Pneumothorax,Support Devices")


def _png_bytes(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


#: one 4x4 black 8-bit PNG, written wherever a placeholder image is needed
PLACEHOLDER_PNG = _png_bytes(np.zeros((4, 4), dtype=np.uint8))


def _none(key: str) -> None:
    return None


def write_png(path: Path, pixels: np.ndarray | None = None) -> Path:
    """A PNG at `path` (parents created): `pixels` (uint8/uint16, HxW or HxWx3) or the 4x4 placeholder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(PLACEHOLDER_PNG if pixels is None else _png_bytes(pixels))
    return path


def write_jpeg(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="JPEG", quality=95)
    return path


def write_image(path: Path, pixels: np.ndarray | None) -> Path:
    """`pixels` in the format the suffix names (JPEG for .jpg/.jpeg, else PNG); None: the placeholder PNG."""
    if pixels is not None and path.suffix.lower() in (".jpg", ".jpeg"):
        return write_jpeg(path, pixels)
    return write_png(path, pixels)


def write_dicom(path: Path, pixels: np.ndarray, *, photometric: str = "MONOCHROME2", bits_stored: int = 12,
                bits_allocated: int = 16, signed: bool = False) -> Path:
    """A single-frame uncompressed DICOM file written with pydicom (raw values, stored as given)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits_allocated, bits_stored, bits_stored - 1
    ds.PixelRepresentation = int(signed)
    dtype = {(8, False): "u1", (16, False): "<u2", (16, True): "<i2"}[(bits_allocated, signed)]
    ds.PixelData = np.ascontiguousarray(pixels).astype(dtype).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_text(path: Path, text: str, *, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode()
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def write_covidx(root: Path, lines: dict[str, list[str]], *, version: str = "9B", kaggle_names: bool = False,
                 images: bool = True, pixels: Pixels = _none) -> Path:
    """COVID-Net split files `<split>_COVIDx<version>.txt` (or Kaggle's `<split>.txt`), lines `patient file label
    source`, and each line's image under `<split>/`."""
    for split, split_lines in lines.items():
        name = f"{split}.txt" if kaggle_names else f"{split}_COVIDx{version}.txt"
        write_text(root / name, "".join(line + "\n" for line in split_lines))
        if images:
            for line in split_lines:
                key = f"{split}/{line.split()[-3]}"
                write_png(root / key, pixels(key))
    return root


def write_chexpert(root: Path, train: list[str], valid: list[str], header: str = CHEXPERT_HEADER,
                   images: bool = True, pixels: Pixels = _none) -> Path:
    """`train.csv`, `valid.csv` (paths `CheXpert-v1.0-small/<split>/patientN/studyM/viewK_<view>.jpg`, the
    dataset folder's own name first) and the images under the root."""
    for name, rows in (("train.csv", train), ("valid.csv", valid)):
        write_text(root / name, "\n".join([header, *rows]) + "\n")
        if images:
            for row in rows:
                key = row.split(",")[0].split("/", 1)[1]
                write_image(root / key, pixels(key))
    return root


def write_nih(root: Path, rows: list[str], lists: dict[str, list[str]], *, kaggle_layout: bool = False,
              header: str = NIH_HEADER, pixels: Pixels = _none) -> Path:
    """`Data_Entry_2017_v2020.csv`, the split lists and the PNGs in `images/` (or Kaggle's
    `images_NNN/images/`)."""
    write_text(root / NIH_ENTRY_FILE, "\n".join([header, *rows]) + "\n")
    for name, names in lists.items():
        write_text(root / name, "".join(n + "\n" for n in names))
    for i, row in enumerate(rows):
        key = f"{f'images_{1 + i // 3:03d}/images' if kaggle_layout else 'images'}/{row.split(',')[0]}"
        write_png(root / key, pixels(key))
    return root


def write_padchest(root: Path, rows: list[str], header: str = PADCHEST_HEADER, pixels: Pixels = _none) -> Path:
    """The labels CSV and 16-bit PNGs in the release's numbered folders (the CSV's ImageDir)."""
    write_text(root / PADCHEST_CSV, "\n".join([header, *rows]) + "\n")
    for row in rows:
        fields = row.split(",")
        key = f"{fields[2]}/{fields[1]}"
        image = pixels(key)
        write_png(root / key, np.full((6, 6), 1000, dtype=np.uint16) if image is None else image)
    return root


def write_mimic(root: Path, split: list[str], meta: list[str], labels: list[str], pixels: Pixels = _none) -> Path:
    """MIMIC-CXR-JPG 2.0.0: the split and metadata `.csv.gz`, the CheXpert-labeler CSV and the JPEGs in
    `files/pXX/pSUBJECT/sSTUDY/DICOM_ID.jpg`."""
    write_text(root / "mimic-cxr-2.0.0-split.csv.gz", "\n".join(split) + "\n", gz=True)
    write_text(root / "mimic-cxr-2.0.0-metadata.csv.gz", "\n".join(meta) + "\n", gz=True)
    write_text(root / "mimic-cxr-2.0.0-chexpert.csv", "\n".join(labels) + "\n")
    for row in split[1:]:
        dicom, study, subject, _ = row.split(",")
        key = f"files/p{subject[:2]}/p{subject}/s{study}/{dicom}.jpg"
        write_image(root / key, pixels(key))
    return root


def write_nlm_tb(root: Path, files: dict[str, list[str]], pixels: Pixels = _none) -> Path:
    """Shenzhen / Montgomery: `<set folder>/CXR_png/<PREFIX>_NNNN_<label>.png`, with the Thumbs.db a real copy
    carries."""
    for folder, names in files.items():
        for name in names:
            write_png(root / folder / name, pixels(f"{folder}/{name}"))
        write_text(root / folder / "Thumbs.db", "not an image")
    return root


def write_tbx11k(root: Path, lists: dict[str, list[str]], pixels: Pixels = _none) -> Path:
    """TBX11K: `lists/TBX11K_{train,val}.txt`, `imgs/<entry>`, an unlabelled test image and the annotations."""
    for name, entries in lists.items():
        write_text(root / "lists" / name, "".join(e + "\n" for e in entries))
        for entry in entries:
            write_png(root / "imgs" / entry, pixels(f"imgs/{entry}"))
    write_png(root / "imgs" / "test" / "t0001.png")  # unlabelled test image: not listed, not a record
    write_text(root / "annotations" / "json" / "TBX11K_train.json", json.dumps({"images": []}))
    return root


def write_image_folder(root: Path, layout: dict[str, list[str]], pixels: Pixels | None = None) -> Path:
    """layout: class folder -> file names, e.g. {'cat': ['a.jpg', 'b.png'], 'dog': ['x.JPEG', 'sub/y.jpg']};
    files with an image suffix get an RGB image (`pixels`, default a random 8x8 one), others a line of text."""
    rng = np.random.default_rng(0)
    for folder, names in layout.items():
        for name in names:
            path = root / folder / name
            if path.suffix.lower() in (".jpg", ".jpeg", ".png"):
                image = pixels(f"{folder}/{name}") if pixels else rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
                write_image(path, image)
            else:
                write_text(path, "not an image\n")
    return root


def write_hub_cache(cache: Path, repo_id: str, state: dict) -> Path:
    """A tensor file in the layout huggingface_hub writes: models--ORG--NAME/{refs/main, snapshots/REV/FILE}."""
    from safetensors.torch import save_file

    repo = cache / f"models--{repo_id.replace('/', '--')}"
    revision = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    (repo / "snapshots" / revision).mkdir(parents=True, exist_ok=True)
    save_file(state, repo / "snapshots" / revision / "model.safetensors")
    return repo / "snapshots" / revision / "model.safetensors"
