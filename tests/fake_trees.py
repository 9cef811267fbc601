"""Small fake dataset trees in the real layouts (real file names, real CSV/list formats, tiny generated
images) for the dataset-source, image and CLI tests."""
from __future__ import annotations

import gzip
import importlib.util
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: the team's real COVIDx split files (absent in a user's clone: tests skip)
SHARED_COVIDX = PROJECT_ROOT.parent / "shared" / "data" / "covidx"


def _png_bytes(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


#: one 4x4 black 8-bit PNG, written wherever a placeholder image is needed
PLACEHOLDER_PNG = _png_bytes(np.zeros((4, 4), dtype=np.uint8))


def write_png(path: Path, pixels: np.ndarray | None = None) -> Path:
    """A PNG at `path` (parents created): `pixels` (uint8/uint16, HxW or HxWx3) or the 4x4 placeholder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(PLACEHOLDER_PNG if pixels is None else _png_bytes(pixels))
    return path


def write_jpeg(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="JPEG", quality=95)
    return path


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


# ---------------------------------------------------------------------------------------------- COVIDx

#: a small 9B tree: (split, line); patient "COVID 1" has a space in its id, as in the real 8B train file
COVIDX_9B_LINES = {
    "train": ["5 ARDSSevere.png negative cohen",
              "COVID 1 COVID(1).png positive sirm",
              "COVID 1 COVID(1)b.png positive sirm",
              "419639-003251 MIDRC-RICORD-1C-419639-003251-46647-0.png positive ricord",
              "8d1 8d1a.png negative rsna"],
    "test": ["a1 test-a1.png positive ricord",
             "b2 test-b2.png negative rsna",
             "b3 test-b3.png negative rnsa"],
}


def write_covidx(root: Path, lines: dict[str, list[str]] = COVIDX_9B_LINES, *, version: str = "9B",
                 kaggle_names: bool = False, images: bool = True) -> Path:
    """Split files (COVID-Net or Kaggle names) and a placeholder image per line under <split>/."""
    for split, split_lines in lines.items():
        name = f"{split}.txt" if kaggle_names else f"{split}_COVIDx{version}.txt"
        write_text(root / name, "".join(line + "\n" for line in split_lines))
        if images:
            for line in split_lines:
                write_png(root / split / line.split()[-3])
    return root


def covidx_from_real_files(root: Path, version: str = "9B") -> Path:
    """A COVIDx tree from the real split files of `version`: the files copied, one placeholder PNG per line."""
    root.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        name = f"{split}_COVIDx{version}.txt"
        text = (SHARED_COVIDX / name).read_text()
        (root / name).write_text(text)
        folder = root / split
        folder.mkdir(parents=True)
        for line in text.splitlines():
            if line.strip():
                (folder / line.split()[-3]).write_bytes(PLACEHOLDER_PNG)
    return root


# ---------------------------------------------------------------------------------------------- CheXpert

CHEXPERT_HEADER = ("Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,"
                   "Lung Opacity,Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,"
                   "Pleural Effusion,Pleural Other,Fracture,Support Devices")
CHEXPERT_TRAIN_ROWS = [
    # healthy: the blank findings become 0, Support Devices stays as labelled
    "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg,Female,68,Frontal,AP,1.0,,,,,,,,,0.0,,,,1.0",
    # uncertain Cardiomegaly, Edema, Consolidation, Atelectasis, Pleural Effusion; positive Lung Opacity, Fracture
    "CheXpert-v1.0-small/train/patient00002/study2/view1_frontal.jpg,Female,87,Frontal,AP,"
    ",,-1.0,1.0,,-1.0,-1.0,,-1.0,,-1.0,,1.0,",
    "CheXpert-v1.0-small/train/patient00002/study2/view2_lateral.jpg,Female,87,Lateral,,,,,1.0,,,,,,,,,,",
    "CheXpert-v1.0-small/train/patient00003/study1/view1_frontal.jpg,Male,41,Frontal,PA,,,,,,1.0,,0.0,,,,,,",
]
_CARDIAC = ",0.0,1.0,1.0,1.0" + ",0.0" * 10  # Enlarged Cardiomediastinum, Cardiomegaly, Lung Opacity
CHEXPERT_VALID_ROWS = [
    "CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg,Male,73,Frontal,AP" + _CARDIAC,
    "CheXpert-v1.0-small/valid/patient64541/study1/view2_lateral.jpg,Male,73,Lateral," + _CARDIAC,
    "CheXpert-v1.0-small/valid/patient64542/study1/view1_frontal.jpg,Male,70,Frontal,PA,1.0" + ",0.0" * 13,
]


def write_chexpert(root: Path, train: list[str] = CHEXPERT_TRAIN_ROWS, valid: list[str] = CHEXPERT_VALID_ROWS,
                   header: str = CHEXPERT_HEADER, images: bool = True) -> Path:
    for name, rows in (("train.csv", train), ("valid.csv", valid)):
        write_text(root / name, "\n".join([header, *rows]) + "\n")
        if images:
            for row in rows:
                write_png(root / row.split(",")[0].split("/", 1)[1])
    return root


# ---------------------------------------------------------------------------------------------- NIH

NIH_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
              "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")
NIH_ROWS = ["00000001_000.png,Cardiomegaly,0,1,57,M,PA,2682,2749,0.143,0.143",
            "00000001_001.png,Cardiomegaly|Emphysema,1,1,58,M,PA,2894,2729,0.143,0.143",
            "00000002_000.png,No Finding,0,2,80,M,PA,2500,2048,0.171,0.171",
            "00000003_000.png,Hernia,0,3,81,F,PA,2582,2991,0.143,0.143",
            "00000003_001.png,Pleural_Thickening|Effusion,1,3,74,F,AP,2500,2048,0.168,0.168"]
NIH_LISTS = {"train_val_list.txt": ["00000001_000.png", "00000001_001.png", "00000002_000.png"],
             "test_list.txt": ["00000003_000.png", "00000003_001.png"]}


def write_nih(root: Path, rows: list[str] = NIH_ROWS, lists: dict[str, list[str]] = NIH_LISTS, *,
              kaggle_layout: bool = False, header: str = NIH_HEADER) -> Path:
    write_text(root / "Data_Entry_2017_v2020.csv", "\n".join([header, *rows]) + "\n")
    for name, names in lists.items():
        write_text(root / name, "".join(n + "\n" for n in names))
    for i, row in enumerate(rows):
        folder = (f"images_{1 + i // 3:03d}/images" if kaggle_layout else "images")
        write_png(root / folder / row.split(",")[0])
    return root


def xrv_data_file(name: str) -> Path | None:
    """A label file that torchxrayvision ships (found without importing it, which would import torch)."""
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "data" / name
    return path if path.is_file() else None


# ---------------------------------------------------------------------------------------------- PadChest

PADCHEST_HEADER = (",ImageID,ImageDir,StudyDate_DICOM,StudyID,PatientID,PatientBirth,PatientSex_DICOM,"
                   "ViewPosition_DICOM,Projection,MethodProjection,Pediatric,Modality_DICOM,Labels")
PADCHEST_ROWS = [
    "0,img_normal.png,0,20140915,s1,p1,1930.0,F,POSTEROANTERIOR,PA,Manual review of DICOM fields,No,CR,['normal']",
    "1,img_lateral.png,0,20140915,s1,p1,1930.0,F,LATERAL,L,Manual review of DICOM fields,No,CR,['normal']",
    "2,img_effusion.png,1,20150101,s2,p2,1950.0,M,AP,AP_horizontal,Manual review of DICOM fields,No,CR,"
    "\"['pleural effusion', 'cardiomegaly']\"",
    "3,img_pacemaker.png,1,20150101,s3,p3,1940.0,M,POSTEROANTERIOR,PA,Manual review of DICOM fields,No,CR,"
    "\"['pacemaker', 'alveolar pattern']\"",
    "4,img_child.png,1,20150101,s4,p4,2012.0,M,POSTEROANTERIOR,PA,Manual review of DICOM fields,Yes,CR,['normal']",
    "5,img_nolabel.png,1,20150101,s5,p5,1950.0,M,POSTEROANTERIOR,PA,Manual review of DICOM fields,No,CR,",
]


def write_padchest(root: Path, rows: list[str] = PADCHEST_ROWS, header: str = PADCHEST_HEADER) -> Path:
    write_text(root / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv", "\n".join([header, *rows]) + "\n")
    for row in rows:
        fields = row.split(",")
        write_png(root / fields[2] / fields[1], np.full((6, 6), 1000, dtype=np.uint16))
    return root


# ---------------------------------------------------------------------------------------------- MIMIC-CXR

MIMIC_SPLIT = ["dicom_id,study_id,subject_id,split",
               "d1,50000001,10000001,train", "d2,50000001,10000001,train", "d3,50000002,10000002,train",
               "d4,50000003,10000003,validate", "d5,50000004,10000004,test", "d6,50000005,10000005,test"]
MIMIC_META = ["dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns",
              "d1,10000001,50000001,CHEST (PA AND LAT),PA,3056,2544",
              "d2,10000001,50000001,CHEST (PA AND LAT),LATERAL,3056,2544",
              "d3,10000002,50000002,CHEST (PORTABLE AP),AP,2544,3056",
              "d4,10000003,50000003,CHEST (PA AND LAT),PA,3056,2544",
              "d5,10000004,50000004,CHEST (PA AND LAT),PA,3056,2544",
              "d6,10000005,50000005,CHEST (PA AND LAT),PA,3056,2544"]
MIMIC_LABEL_HEADER = ("subject_id,study_id,Atelectasis,Cardiomegaly,Consolidation,Edema,Enlarged Cardiomediastinum,"
                      "Fracture,Lung Lesion,Lung Opacity,No Finding,Pleural Effusion,Pleural Other,Pneumonia,"
                      "Pneumothorax,Support Devices")
MIMIC_LABELS = [MIMIC_LABEL_HEADER,
                "10000001,50000001,,,,,,,,,1.0,,,,,",          # healthy
                "10000002,50000002,-1.0,1.0,,,,,,,,1.0,,0.0,,1.0",  # uncertain atelectasis
                "10000003,50000003,,,,1.0,,,,,,,,,,",
                "10000004,50000004,,,,,,,,,1.0,,,,,"]          # study 50000005 (d6) has no label row


def write_mimic(root: Path, split: list[str] = MIMIC_SPLIT, meta: list[str] = MIMIC_META,
                labels: list[str] = MIMIC_LABELS) -> Path:
    write_text(root / "mimic-cxr-2.0.0-split.csv.gz", "\n".join(split) + "\n", gz=True)
    write_text(root / "mimic-cxr-2.0.0-metadata.csv.gz", "\n".join(meta) + "\n", gz=True)
    write_text(root / "mimic-cxr-2.0.0-chexpert.csv", "\n".join(labels) + "\n")
    for row in split[1:]:
        dicom, study, subject, _ = row.split(",")
        write_png(root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg")
    return root


# ---------------------------------------------------------------------------------------------- TB

NLM_FILES = {"ChinaSet_AllFiles/CXR_png": ["CHNCXR_0001_0.png", "CHNCXR_0002_1.png", "CHNCXR_0003_1.png"],
             "MontgomerySet/CXR_png": ["MCUCXR_0001_0.png", "MCUCXR_0002_0.png", "MCUCXR_0003_1.png"]}


def write_nlm_tb(root: Path, files: dict[str, list[str]] = NLM_FILES) -> Path:
    for folder, names in files.items():
        for name in names:
            write_png(root / folder / name)
        write_text(root / folder / "Thumbs.db", "not an image")
    return root


TBX11K_LISTS = {"TBX11K_train.txt": ["health/h0001.png", "sick/s0001.png", "tb/tb0001.png"],
                "TBX11K_val.txt": ["health/h0002.png", "tb/tb0002.png"]}


def write_tbx11k(root: Path, lists: dict[str, list[str]] = TBX11K_LISTS) -> Path:
    for name, entries in lists.items():
        write_text(root / "lists" / name, "".join(e + "\n" for e in entries))
        for entry in entries:
            write_png(root / "imgs" / entry)
    write_png(root / "imgs" / "test" / "t0001.png")  # unlabelled test image: not listed, not a record
    write_text(root / "annotations" / "json" / "TBX11K_train.json", json.dumps({"images": []}))
    return root


# ---------------------------------------------------------------------------------------------- class folders

def write_image_folder(root: Path, layout: dict[str, list[str]]) -> Path:
    """layout: relative file path -> ... e.g. {'cat': ['a.jpg', 'b.png'], 'dog': ['x.JPEG', 'sub/y.jpg']};
    files with an image suffix get a tiny RGB image, others a line of text."""
    rng = np.random.default_rng(0)
    for folder, names in layout.items():
        for name in names:
            path = root / folder / name
            if path.suffix.lower() in (".jpg", ".jpeg"):
                write_jpeg(path, rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
            elif path.suffix.lower() == ".png":
                write_png(path, rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
            else:
                write_text(path, "not an image\n")
    return root


# ---------------------------------------------------------------------------------------------- Hugging Face cache

def write_hub_cache(cache: Path, repo_id: str, state: dict) -> Path:
    """A tensor file in the layout huggingface_hub writes: models--ORG--NAME/{refs/main, snapshots/REV/FILE}."""
    from safetensors.torch import save_file

    repo = cache / f"models--{repo_id.replace('/', '--')}"
    revision = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    (repo / "snapshots" / revision).mkdir(parents=True)
    save_file(state, repo / "snapshots" / revision / "model.safetensors")
    return repo / "snapshots" / revision / "model.safetensors"
