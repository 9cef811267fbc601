"""CheXpert, MIMIC-CXR, NIH ChestX-ray14 and PadChest: fake trees in the real layouts, label policies, real
label files where torchxrayvision ships them, and bad input."""
from __future__ import annotations

import gzip

import numpy as np
import pytest
from fake_trees import (CHEXPERT_TRAIN_ROWS, CHEXPERT_VALID_ROWS, MIMIC_LABELS, MIMIC_SPLIT, NIH_LISTS, NIH_ROWS,
                        PADCHEST_ROWS, write_chexpert, write_mimic, write_nih, write_padchest, xrv_data_file)

from scaling.data.base import DataError, describe
from scaling.data.chexpert import CHEXPERT_CLASSES, CheXpert
from scaling.data.mimic import MimicCXR
from scaling.data.nih import NIH_CLASSES, NIHChestXray14
from scaling.data.padchest import PADCHEST_CLASSES, PadChest
from scaling.rehearse.formats import CHEXPERT_HEADER, NIH_HEADER, PADCHEST_HEADER, write_text

nan = np.nan


def label_vector(classes, **values) -> list[float]:
    """A label vector over `classes`: NaN except the named ones (underscores stand for spaces)."""
    out = [nan] * len(classes)
    for name, value in values.items():
        out[classes.index(name.replace("_", " "))] = value
    return out


def same(a, b) -> bool:
    return np.array_equal(np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32), equal_nan=True)


# ---------------------------------------------------------------------------------------------- CheXpert

def chexpert_y(uncertainty: str) -> list[float]:
    """The second training row (patient00002 frontal) under a policy."""
    u = {"ignore": nan, "zeros": 0.0, "ones": 1.0}[uncertainty]
    return label_vector(CHEXPERT_CLASSES, Cardiomegaly=u, Lung_Opacity=1.0, Edema=u, Consolidation=u, Atelectasis=u,
                        Pleural_Effusion=u, Fracture=1.0)


@pytest.mark.parametrize("uncertainty", ["ignore", "zeros", "ones"])
def test_chexpert_uncertainty_policies(tmp_path, uncertainty):
    ds = CheXpert(root=str(write_chexpert(tmp_path)), uncertainty=uncertainty)
    recs = ds.records().set_index("key")
    assert same(recs.loc["train/patient00002/study2/view1_frontal.jpg", "y"], chexpert_y(uncertainty))
    # "No Finding" = 1 turns the blank findings into 0; Support Devices keeps its own label
    healthy = [0.0] * len(CHEXPERT_CLASSES)
    healthy[0] = healthy[-1] = 1.0
    assert same(recs.loc["train/patient00001/study1/view1_frontal.jpg", "y"], healthy)


def test_chexpert_counts_frontal_only_and_all_views(tmp_path):
    root = write_chexpert(tmp_path)
    frontal = CheXpert(root=str(root), uncertainty="ones")
    summary = describe(frontal)
    assert frontal.records()["split"].value_counts().to_dict() == {"train": 3, "val": 2}
    assert summary["train"]["patients"] == 3 and summary["val"]["patients"] == 2
    assert summary["train"]["classes"]["Edema"] == 2  # one positive, one uncertain counted as positive
    assert summary["train"]["classes"]["Lung Opacity"] == 1
    every = CheXpert(root=str(root), frontal_only=False, uncertainty="ones")
    assert every.records()["split"].value_counts().to_dict() == {"train": 4, "val": 3}
    assert describe(every)["train"]["classes"]["Lung Opacity"] == 2
    assert set(every.records()["patient"]) == {"patient00001", "patient00002", "patient00003",
                                               "patient64541", "patient64542"}
    assert frontal.fingerprint() != every.fingerprint()


def test_chexpert_real_train_csv_counts(tmp_path):
    shipped = xrv_data_file("chexpert_train.csv.gz")
    if shipped is None:
        pytest.skip("torchxrayvision's chexpert_train.csv.gz is absent")
    (tmp_path / "train.csv").write_bytes(gzip.decompress(shipped.read_bytes()))
    write_text(tmp_path / "valid.csv", "\n".join([CHEXPERT_HEADER, *CHEXPERT_VALID_ROWS]) + "\n")
    every = CheXpert(root=str(tmp_path), frontal_only=False, uncertainty="ones", check_files=False)
    summary = describe(every)["train"]
    # the CheXpert paper: 223,414 training images of 64,540 patients; Cardiomegaly 27,000 positive + 8,087
    # uncertain, Pleural Effusion 86,187 + 11,628
    assert int((every.records()["split"] == "train").sum()) == 223414 and summary["patients"] == 64540
    assert summary["classes"]["Cardiomegaly"] == 27000 + 8087
    assert summary["classes"]["Pleural Effusion"] == 86187 + 11628
    frontal = CheXpert(root=str(tmp_path), check_files=False)
    assert int((frontal.records()["split"] == "train").sum()) == 191027
    assert describe(frontal)["train"]["classes"]["No Finding"] > 0


def test_chexpert_bad_inputs(tmp_path):
    header_without_view = CHEXPERT_HEADER.replace(",Frontal/Lateral", "")
    rows = [",".join(r.split(",")[:3] + r.split(",")[4:]) for r in CHEXPERT_TRAIN_ROWS]
    write_chexpert(tmp_path / "a", train=rows, header=header_without_view, images=False)
    with pytest.raises(DataError, match=r"train\.csv: missing column\(s\) \['Frontal/Lateral'\]"):
        CheXpert(root=str(tmp_path / "a"), check_files=False).records()

    bad_value = CHEXPERT_TRAIN_ROWS[:2] + [CHEXPERT_TRAIN_ROWS[3].replace(",1.0,,0.0,", ",2.0,,0.0,")]
    write_chexpert(tmp_path / "b", train=bad_value, images=False)
    with pytest.raises(DataError, match=r"train\.csv:4: column 'Edema' has '2\.0'; expected 1, 0, -1 or blank"):
        CheXpert(root=str(tmp_path / "b"), check_files=False).records()

    escaping = CHEXPERT_TRAIN_ROWS + ["../../patient00009/study1/view1_frontal.jpg,Male,1,Frontal,PA" + ",1.0" * 14]
    write_chexpert(tmp_path / "c", train=escaping, images=False)
    with pytest.raises(DataError, match=r"train\.csv:6: image path .* escapes the dataset root"):
        CheXpert(root=str(tmp_path / "c"), check_files=False).records()

    lateral_valid = [CHEXPERT_VALID_ROWS[1]]
    write_chexpert(tmp_path / "d", valid=lateral_valid)
    with pytest.raises(DataError, match=r"valid\.csv: split 'val' is empty after keeping frontal views"):
        CheXpert(root=str(tmp_path / "d")).records()
    assert len(CheXpert(root=str(tmp_path / "d"), frontal_only=False).records()) == 5

    write_chexpert(tmp_path / "e")
    (tmp_path / "e" / "train" / "patient00003" / "study1" / "view1_frontal.jpg").unlink()
    with pytest.raises(DataError, match=r"train\.csv:5: image 'train/patient00003/.*\.jpg' is missing"):
        CheXpert(root=str(tmp_path / "e")).records()

    with pytest.raises(ValueError, match="uncertainty must be one of ignore, zeros, ones"):
        CheXpert(root=str(tmp_path), uncertainty="maybe")


# ---------------------------------------------------------------------------------------------- MIMIC-CXR

def test_mimic_official_splits_frontal_views_and_labels(tmp_path):
    ds = MimicCXR(root=str(write_mimic(tmp_path)), uncertainty="zeros")
    recs = ds.records().set_index("key")
    # d2 is lateral, d6's study has no label row
    assert sorted(recs.index) == ["files/p10/p10000001/s50000001/d1.jpg", "files/p10/p10000002/s50000002/d3.jpg",
                                  "files/p10/p10000003/s50000003/d4.jpg", "files/p10/p10000004/s50000004/d5.jpg"]
    assert recs["split"].to_dict() == {"files/p10/p10000001/s50000001/d1.jpg": "train",
                                       "files/p10/p10000002/s50000002/d3.jpg": "train",
                                       "files/p10/p10000003/s50000003/d4.jpg": "val",
                                       "files/p10/p10000004/s50000004/d5.jpg": "test"}
    assert recs.loc["files/p10/p10000002/s50000002/d3.jpg", "patient"] == "10000002"
    assert same(recs.loc["files/p10/p10000002/s50000002/d3.jpg", "y"],
                label_vector(CHEXPERT_CLASSES, Atelectasis=0.0, Cardiomegaly=1.0, Pleural_Effusion=1.0,
                             Pneumonia=0.0, Support_Devices=1.0))
    assert len(MimicCXR(root=str(tmp_path), frontal_only=False).records()) == 5
    assert ds.load("files/p10/p10000001/s50000001/d1.jpg").shape == (4, 4)


def test_mimic_bad_inputs(tmp_path):
    write_mimic(tmp_path / "a", split=MIMIC_SPLIT[:5] + ["d5,50000004,10000004,holdout"])
    with pytest.raises(DataError, match=r"split\.csv\.gz:6: split 'holdout' is not one of train, validate, test"):
        MimicCXR(root=str(tmp_path / "a")).records()
    write_mimic(tmp_path / "b", labels=[MIMIC_LABELS[0].replace(",Edema", "")] + MIMIC_LABELS[1:])
    with pytest.raises(DataError, match=r"chexpert\.csv: missing column\(s\) \['Edema'\]"):
        MimicCXR(root=str(tmp_path / "b")).records()
    write_mimic(tmp_path / "c", split=MIMIC_SPLIT[:4] + ["d5,50000004,10000004,test"])
    with pytest.raises(DataError, match=r"split\.csv\.gz: split 'val' is empty"):
        MimicCXR(root=str(tmp_path / "c")).records()
    write_mimic(tmp_path / "d", split=MIMIC_SPLIT + ["d7,50000001,10000001,test"])
    with pytest.raises(DataError, match="patient '10000001' of mimic-cxr has images in more than one split"):
        MimicCXR(root=str(tmp_path / "d"), check_files=False, frontal_only=False).records()


# ---------------------------------------------------------------------------------------------- NIH

@pytest.mark.parametrize("kaggle_layout", [False, True])
def test_nih_official_split_lists_and_labels(tmp_path, kaggle_layout):
    ds = NIHChestXray14(root=str(write_nih(tmp_path, kaggle_layout=kaggle_layout)))
    summary = describe(ds)
    assert summary["train"]["patients"] == 2 and summary["test"]["patients"] == 1
    assert {c: n for c, n in summary["train"]["classes"].items() if n} == {"Cardiomegaly": 2, "Emphysema": 1}
    assert {c: n for c, n in summary["test"]["classes"].items() if n} == {"Effusion": 1, "Pleural_Thickening": 1,
                                                                        "Hernia": 1}
    recs = ds.records().set_index("key")
    key = "images_002/images/00000003_001.png" if kaggle_layout else "images/00000003_001.png"
    assert recs.loc[key, "patient"] == "3"
    healthy = "images_001/images/00000002_000.png" if kaggle_layout else "images/00000002_000.png"
    assert same(recs.loc[healthy, "y"], [0.0] * 14)
    assert ds.load(key).shape == (4, 4)


def test_nih_real_data_entry_csv_counts(tmp_path):
    shipped = xrv_data_file("Data_Entry_2017_v2020.csv.gz")
    if shipped is None:
        pytest.skip("torchxrayvision's Data_Entry_2017_v2020.csv.gz is absent")
    (tmp_path / "Data_Entry_2017_v2020.csv").write_bytes(gzip.decompress(shipped.read_bytes()))
    names = [line.split(",", 2)[:2] for line in (tmp_path / "Data_Entry_2017_v2020.csv").read_text().splitlines()[1:]]
    # lists by patient (the official lists are not shipped): patients whose id ends in 0 go to test
    test = {n for n, _ in names if n.split("_")[0].endswith("0")}
    (tmp_path / "test_list.txt").write_text("\n".join(n for n, _ in names if n in test) + "\n")
    (tmp_path / "train_val_list.txt").write_text("\n".join(n for n, _ in names if n not in test) + "\n")
    ds = NIHChestXray14(root=str(tmp_path), check_files=False)
    summary = describe(ds)
    totals = {c: summary["train"]["classes"][c] + summary["test"]["classes"][c] for c in NIH_CLASSES}
    # the published ChestX-ray14 counts: 112,120 images of 30,805 patients and these positives per finding
    assert len(ds.records()) == 112120 and ds.records()["patient"].nunique() == 30805
    assert totals == {"Atelectasis": 11559, "Cardiomegaly": 2776, "Effusion": 13317, "Infiltration": 19894,
                      "Mass": 5782, "Nodule": 6331, "Pneumonia": 1431, "Pneumothorax": 5302, "Consolidation": 4667,
                      "Edema": 2303, "Emphysema": 2516, "Fibrosis": 1686, "Pleural_Thickening": 3385, "Hernia": 227}


def test_nih_bad_inputs(tmp_path):
    write_nih(tmp_path / "a", rows=NIH_ROWS[:4] + [NIH_ROWS[4].replace("Effusion", "Covid")])
    with pytest.raises(DataError, match=r"Data_Entry_2017_v2020\.csv:6: finding 'Covid' is not one of"):
        NIHChestXray14(root=str(tmp_path / "a")).records()
    write_nih(tmp_path / "b", header=NIH_HEADER.replace("Patient ID", "Patient"))
    with pytest.raises(DataError, match=r"missing column\(s\) \['Patient ID'\]"):
        NIHChestXray14(root=str(tmp_path / "b")).records()
    write_nih(tmp_path / "c", lists={**NIH_LISTS, "test_list.txt": ["00000003_000.png"]})
    with pytest.raises(DataError, match=r"\.csv:6: image '00000003_001\.png' is in neither train_val_list\.txt nor"):
        NIHChestXray14(root=str(tmp_path / "c")).records()
    write_nih(tmp_path / "d", lists={**NIH_LISTS, "test_list.txt": NIH_LISTS["test_list.txt"] + ["00000009_000.png"]})
    with pytest.raises(DataError, match=r"test_list\.txt:3: image '00000009_000\.png' of the test list is not in"):
        NIHChestXray14(root=str(tmp_path / "d")).records()
    write_nih(tmp_path / "e", lists={"train_val_list.txt": [r.split(",")[0] for r in NIH_ROWS], "test_list.txt": []})
    with pytest.raises(DataError, match=r"test_list\.txt: split 'test' is empty"):
        NIHChestXray14(root=str(tmp_path / "e")).records()


# ---------------------------------------------------------------------------------------------- PadChest

def test_padchest_labels_through_torchxrayvision(tmp_path):
    ds = PadChest(root=str(write_padchest(tmp_path)))
    recs = ds.records().set_index("key")
    # dropped by torchxrayvision's filters: the lateral view, the 7-year-old and the row without labels
    assert sorted(recs.index) == ["0/img_normal.png", "1/img_effusion.png", "1/img_pacemaker.png"]
    assert (recs["split"] == "train").all() and recs.loc["1/img_effusion.png", "patient"] == "p2"

    def positives(key):
        return [c for c, v in zip(PADCHEST_CLASSES, recs.loc[key, "y"]) if v == 1]

    assert positives("0/img_normal.png") == []
    assert positives("1/img_effusion.png") == ["Cardiomegaly", "Effusion"]
    assert positives("1/img_pacemaker.png") == ["Infiltration", "Support Devices"]  # synonyms mapped by xrv
    assert ds.load("1/img_effusion.png").dtype == np.uint16
    assert len(PadChest(root=str(tmp_path), frontal_only=False).records()) == 4


def test_padchest_bad_inputs(tmp_path):
    write_padchest(tmp_path / "a", header=PADCHEST_HEADER.replace("PatientID", "Patient"))
    with pytest.raises(DataError, match=r"labels_160K_01\.02\.19\.csv: missing column\(s\) \['PatientID'\]"):
        PadChest(root=str(tmp_path / "a")).records()
    write_padchest(tmp_path / "b", rows=[PADCHEST_ROWS[1]])
    with pytest.raises(DataError, match="split 'train' is empty after torchxrayvision's filters and keeping frontal"):
        PadChest(root=str(tmp_path / "b")).records()
    write_padchest(tmp_path / "c")
    (tmp_path / "c" / "1" / "img_pacemaker.png").unlink()
    with pytest.raises(DataError, match=r"\.csv row 4: image '1/img_pacemaker\.png' is missing"):
        PadChest(root=str(tmp_path / "c")).records()
