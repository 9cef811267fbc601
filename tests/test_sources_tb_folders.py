"""Shenzhen + Montgomery, TBX11K and ImageNet-style class folders: fake trees, exact counts, bad input."""
from __future__ import annotations

import pytest
from fake_trees import NLM_FILES, TBX11K_LISTS, write_nlm_tb, write_tbx11k

from scaling.data.base import DataError, describe
from scaling.data.folders import ImageFolder
from scaling.data.tb import TBX11K, ShenzhenMontgomery
from scaling.rehearse.formats import write_image_folder, write_png


def test_shenzhen_montgomery_labels_from_file_names(tmp_path):
    ds = ShenzhenMontgomery(root=str(write_nlm_tb(tmp_path)))
    assert describe(ds) == {"train": {"classes": {"negative": 3, "positive": 3}, "patients": 6}}
    recs = ds.records().set_index("key")
    assert recs.loc["ChinaSet_AllFiles/CXR_png/CHNCXR_0002_1.png", "y"] == 1
    assert recs.loc["MontgomerySet/CXR_png/MCUCXR_0002_0.png", "patient"] == "MCUCXR_0002"
    assert describe(ShenzhenMontgomery(root=str(tmp_path), sets="shenzhen")) == {
        "train": {"classes": {"negative": 1, "positive": 2}, "patients": 3}}
    assert ds.load("MontgomerySet/CXR_png/MCUCXR_0003_1.png").shape == (4, 4)


def test_shenzhen_montgomery_fingerprint_follows_the_listing(tmp_path):
    root = write_nlm_tb(tmp_path)
    before = ShenzhenMontgomery(root=str(root)).fingerprint()
    assert ShenzhenMontgomery(root=str(root)).fingerprint() == before
    assert ShenzhenMontgomery(root=str(root), sets="montgomery").fingerprint() != before
    write_png(root / "MontgomerySet/CXR_png/MCUCXR_0004_1.png")
    assert ShenzhenMontgomery(root=str(root)).fingerprint() != before


def test_montgomery_also_found_inside_the_release_folder(tmp_path):
    write_nlm_tb(tmp_path, {"NLM-MontgomeryCXRSet/MontgomerySet/CXR_png": NLM_FILES["MontgomerySet/CXR_png"]})
    recs = ShenzhenMontgomery(root=str(tmp_path), sets="montgomery").records()
    assert len(recs) == 3 and recs["key"].str.startswith("NLM-MontgomeryCXRSet/MontgomerySet/CXR_png/").all()


def test_shenzhen_montgomery_bad_inputs(tmp_path):
    write_nlm_tb(tmp_path / "a", {"ChinaSet_AllFiles/CXR_png": ["CHNCXR_0001_2.png"]})
    with pytest.raises(DataError, match=r"CHNCXR_0001_2\.png: label digit 2 is not 0 \(normal\) or 1 \(TB\)"):
        ShenzhenMontgomery(root=str(tmp_path / "a"), sets="shenzhen").records()
    write_nlm_tb(tmp_path / "b", {"ChinaSet_AllFiles/CXR_png": ["CHNCXR_0001_0.png", "scan 7.png"]})
    with pytest.raises(DataError, match=r"scan 7\.png: expected a name like CHNCXR_0001_0\.png"):
        ShenzhenMontgomery(root=str(tmp_path / "b"), sets="shenzhen").records()
    with pytest.raises(DataError, match="no montgomery images; expected a folder MontgomerySet/CXR_png or"):
        ShenzhenMontgomery(root=str(tmp_path / "b")).records()
    with pytest.raises(ValueError, match="sets must be one of both, shenzhen, montgomery"):
        ShenzhenMontgomery(root=str(tmp_path), sets="china")


def test_tbx11k_labels_from_folders_and_official_lists(tmp_path):
    ds = TBX11K(root=str(write_tbx11k(tmp_path)))
    assert describe(ds) == {"train": {"classes": {"negative": 2, "positive": 1}, "patients": 3},
                            "val": {"classes": {"negative": 1, "positive": 1}, "patients": 2}}
    assert "imgs/test/t0001.png" not in set(ds.records()["key"])
    assert ds.load("imgs/tb/tb0002.png").shape == (4, 4)


@pytest.mark.parametrize("entry,expected", [
    ("test/t0001.png", r"TBX11K_val\.txt:3: 'test/t0001\.png' is not in one of the labelled folders health, sick, tb"),
    ("tb/../../../secret.png", r"TBX11K_val\.txt:3: image path .* escapes the dataset root"),
    ("tb/tb0009.png", r"TBX11K_val\.txt:3: image 'imgs/tb/tb0009\.png' is missing"),
])
def test_tbx11k_bad_list_entries_name_file_and_line(tmp_path, entry, expected):
    root = write_tbx11k(tmp_path)
    with open(root / "lists" / "TBX11K_val.txt", "a") as f:
        f.write(entry + "\n")
    with pytest.raises(DataError, match=expected):
        TBX11K(root=str(root)).records()


def test_tbx11k_empty_or_missing_list(tmp_path):
    write_tbx11k(tmp_path, {**TBX11K_LISTS, "TBX11K_val.txt": []})
    with pytest.raises(DataError, match=r"TBX11K_val\.txt: split 'val' is empty"):
        TBX11K(root=str(tmp_path)).records()
    (tmp_path / "lists" / "TBX11K_val.txt").unlink()
    with pytest.raises(DataError, match=r"TBX11K_val\.txt not found"):
        TBX11K(root=str(tmp_path)).records()


def test_image_folder_without_split_folders(tmp_path):
    root = write_image_folder(tmp_path, {"n01440764": ["a.JPEG", "b.png", "notes.txt"],
                                         "n01443537": ["x.jpg", "sub/y.jpeg"], ".hidden": ["z.jpg"]})
    ds = ImageFolder(root=str(root))
    assert ds.task.kind == "multiclass" and ds.task.classes == ("n01440764", "n01443537") and ds.channels == 3
    assert describe(ds) == {"train": {"classes": {"n01440764": 2, "n01443537": 2}, "patients": 4}}
    assert sorted(ds.records()["key"]) == ["n01440764/a.JPEG", "n01440764/b.png", "n01443537/sub/y.jpeg",
                                           "n01443537/x.jpg"]
    assert ds.load("n01443537/sub/y.jpeg").shape == (8, 8, 3)


def test_image_folder_with_split_folders_uses_the_union_of_classes(tmp_path):
    root = write_image_folder(tmp_path, {"train/cat": ["a.jpg"], "train/dog": ["b.jpg", "c.jpg"],
                                         "val/bird": ["d.png"], "val/cat": ["e.png"]})
    ds = ImageFolder(root=str(root))
    assert ds.task.classes == ("bird", "cat", "dog")
    assert describe(ds) == {"train": {"classes": {"bird": 0, "cat": 1, "dog": 2}, "patients": 3},
                            "val": {"classes": {"bird": 1, "cat": 1, "dog": 0}, "patients": 2}}
    before = ds.fingerprint()
    write_image_folder(root, {"train/dog": ["f.jpg"]})
    assert ImageFolder(root=str(root)).fingerprint() != before


def test_image_folder_bad_inputs(tmp_path):
    write_image_folder(tmp_path / "a", {"cat": ["a.jpg"], "dog": ["readme.txt"]})
    with pytest.raises(DataError, match=r"dog: class folder holds no image files"):
        ImageFolder(root=str(tmp_path / "a")).records()
    (tmp_path / "b").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        ImageFolder(root=str(tmp_path / "b")).records()
    with pytest.raises(DataError, match="not a directory"):
        ImageFolder(root=str(tmp_path / "c")).records()
