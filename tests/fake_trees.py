"""The tests' small dataset trees: edge-case rows in the real layouts (a patient id with spaces, uncertain and
blank labels, lateral views, an unlabelled study), written by the library's format writers
(scaling/rehearse/formats.py, which tests import directly for images and other trees). The wrappers here only
give each writer these rows as defaults."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from scaling.rehearse import formats
from scaling.rehearse.formats import (CHEXPERT_HEADER, MIMIC_LABEL_HEADER, NIH_HEADER, PADCHEST_HEADER,
                                      PLACEHOLDER_PNG)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: the team's real COVIDx split files (absent in a user's clone: tests skip)
SHARED_COVIDX = PROJECT_ROOT.parent / "shared" / "data" / "covidx"


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



def write_covidx(root: Path, lines: dict[str, list[str]] = COVIDX_9B_LINES, **options) -> Path:
    return formats.write_covidx(root, lines, **options)


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
                   **options) -> Path:
    return formats.write_chexpert(root, train, valid, **options)


# ---------------------------------------------------------------------------------------------- NIH

NIH_ROWS = ["00000001_000.png,Cardiomegaly,0,1,57,M,PA,2682,2749,0.143,0.143",
            "00000001_001.png,Cardiomegaly|Emphysema,1,1,58,M,PA,2894,2729,0.143,0.143",
            "00000002_000.png,No Finding,0,2,80,M,PA,2500,2048,0.171,0.171",
            "00000003_000.png,Hernia,0,3,81,F,PA,2582,2991,0.143,0.143",
            "00000003_001.png,Pleural_Thickening|Effusion,1,3,74,F,AP,2500,2048,0.168,0.168"]
NIH_LISTS = {"train_val_list.txt": ["00000001_000.png", "00000001_001.png", "00000002_000.png"],
             "test_list.txt": ["00000003_000.png", "00000003_001.png"]}



def write_nih(root: Path, rows: list[str] = NIH_ROWS, lists: dict[str, list[str]] = NIH_LISTS, **options) -> Path:
    return formats.write_nih(root, rows, lists, **options)


def xrv_data_file(name: str) -> Path | None:
    """A label file that torchxrayvision ships (found without importing it, which would import torch)."""
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "data" / name
    return path if path.is_file() else None



# ---------------------------------------------------------------------------------------------- PadChest

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



def write_padchest(root: Path, rows: list[str] = PADCHEST_ROWS, **options) -> Path:
    return formats.write_padchest(root, rows, **options)


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
MIMIC_LABELS = [MIMIC_LABEL_HEADER,
                "10000001,50000001,,,,,,,,,1.0,,,,,",          # healthy
                "10000002,50000002,-1.0,1.0,,,,,,,,1.0,,0.0,,1.0",  # uncertain atelectasis
                "10000003,50000003,,,,1.0,,,,,,,,,,",
                "10000004,50000004,,,,,,,,,1.0,,,,,"]          # study 50000005 (d6) has no label row



def write_mimic(root: Path, split: list[str] = MIMIC_SPLIT, meta: list[str] = MIMIC_META,
                labels: list[str] = MIMIC_LABELS) -> Path:
    return formats.write_mimic(root, split, meta, labels)


# ---------------------------------------------------------------------------------------------- TB

NLM_FILES = {"ChinaSet_AllFiles/CXR_png": ["CHNCXR_0001_0.png", "CHNCXR_0002_1.png", "CHNCXR_0003_1.png"],
             "MontgomerySet/CXR_png": ["MCUCXR_0001_0.png", "MCUCXR_0002_0.png", "MCUCXR_0003_1.png"]}



def write_nlm_tb(root: Path, files: dict[str, list[str]] = NLM_FILES) -> Path:
    return formats.write_nlm_tb(root, files)


TBX11K_LISTS = {"TBX11K_train.txt": ["health/h0001.png", "sick/s0001.png", "tb/tb0001.png"],
                "TBX11K_val.txt": ["health/h0002.png", "tb/tb0002.png"]}



def write_tbx11k(root: Path, lists: dict[str, list[str]] = TBX11K_LISTS) -> Path:
    return formats.write_tbx11k(root, lists)
