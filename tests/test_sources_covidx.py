"""COVIDx: fake trees in both file namings, the real split files counted against the README, and bad input."""
from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest
from fake_trees import COVIDX_9B_LINES, SHARED_COVIDX, covidx_from_real_files, write_covidx

from scaling.data.base import DataError, describe
from scaling.data.covidx import Covidx
from scaling.data.registry import dataset_options
from scaling.rehearse.formats import write_png

#: /work/shared/data/README.md (9A test: 400 in the README; per class as in the file)
README_COUNTS = {
    "8A": {"train": {"normal": 7966, "pneumonia": 5475, "COVID-19": 2158},
           "test": {"normal": 100, "pneumonia": 100, "COVID-19": 200}},
    "8B": {"train": {"negative": 13794, "positive": 2158}, "test": {"negative": 200, "positive": 200}},
    "9A": {"train": {"normal": 8085, "pneumonia": 5555, "COVID-19": 16490},
           "test": {"normal": 100, "pneumonia": 100, "COVID-19": 200}},
    "9B": {"train": {"negative": 13992, "positive": 16490}, "test": {"negative": 200, "positive": 200}},
}
README_TOTALS = {"8A": (15599, 400), "8B": (15952, 400), "9A": (30130, 400), "9B": (30482, 400)}

needs_real_files = pytest.mark.skipif(not SHARED_COVIDX.is_dir(), reason=f"{SHARED_COVIDX} is absent")


def lines_copy() -> dict[str, list[str]]:
    return {split: list(lines) for split, lines in COVIDX_9B_LINES.items()}


def test_fake_tree_gives_exact_counts_labels_and_patients(tmp_path):
    ds = Covidx(root=str(write_covidx(tmp_path)))
    assert describe(ds) == {"train": {"classes": {"negative": 2, "positive": 3}, "patients": 4},
                            "test": {"classes": {"negative": 2, "positive": 1}, "patients": 3}}
    recs = ds.records().set_index("key")
    assert list(ds.records().columns) == ["split", "key", "patient", "y"]
    assert recs.loc["train/COVID(1).png", "patient"] == "COVID 1"  # the id's space survives, parsed from the right
    assert recs.loc["train/COVID(1)b.png", "y"] == 1 and recs.loc["train/ARDSSevere.png", "y"] == 0
    assert recs.loc["test/test-b3.png", "split"] == "test"
    assert ds.task.kind == "binary" and ds.task.classes == ("negative", "positive")
    assert ds.load("train/ARDSSevere.png").shape == (4, 4)
    copy = pickle.loads(pickle.dumps(ds))  # shard preparation sends datasets to worker processes
    assert copy.records().equals(ds.records()) and copy.load("test/test-a1.png").shape == (4, 4)


def test_kaggle_file_names_give_the_same_records(tmp_path):
    named = Covidx(root=str(write_covidx(tmp_path / "a")))
    kaggle = Covidx(root=str(write_covidx(tmp_path / "b", kaggle_names=True)))
    assert kaggle.records().equals(named.records())


def test_a_val_file_adds_a_val_split(tmp_path):
    lines = {**lines_copy(), "val": ["v1 val-1.png positive bimcv"]}
    ds = Covidx(root=str(write_covidx(tmp_path, lines, kaggle_names=True)))
    assert describe(ds)["val"] == {"classes": {"negative": 0, "positive": 1}, "patients": 1}
    assert "val/val-1.png" in set(ds.records()["key"])


def test_a_versions_are_three_class(tmp_path):
    lines = {"train": ["1 a.png normal rsna", "2 b.png pneumonia rsna", "3 c.png COVID-19 sirm",
                       "3 d.png COVID-19 sirm"],
             "test": ["9 e.png COVID-19 ricord"]}
    ds = Covidx(root=str(write_covidx(tmp_path, lines, version="8A")), version="8A")
    assert ds.task.kind == "multiclass" and ds.task.classes == ("normal", "pneumonia", "COVID-19")
    assert sorted(ds.records()["y"]) == [0, 1, 2, 2, 2]
    assert describe(ds)["train"] == {"classes": {"normal": 1, "pneumonia": 1, "COVID-19": 2}, "patients": 3}


def test_fingerprint_follows_split_files_and_version_not_instances(tmp_path):
    root = write_covidx(tmp_path)
    first = Covidx(root=str(root)).fingerprint()
    assert Covidx(root=str(root)).fingerprint() == first
    assert Covidx(root=str(root), check_files=False).fingerprint() == first
    with open(root / "test_COVIDx9B.txt", "a") as f:
        f.write("c4 test-c4.png negative rsna\n")
    assert Covidx(root=str(root)).fingerprint() != first


def test_options_are_keyword_only_with_defaults():
    options = dataset_options("covidx")
    assert list(options) == ["root", "version", "check_files"]
    assert options["version"].default == "9B" and options["root"].default is options["root"].empty
    with pytest.raises(ValueError, match="version must be one of 8A, 8B, 9A, 9B"):
        Covidx(root="x", version="7Z")


@needs_real_files
@pytest.mark.parametrize("version", sorted(README_COUNTS))
def test_real_split_files_match_the_readme_counts(version, tmp_path):
    for split in ("train", "test"):
        (tmp_path / f"{split}_COVIDx{version}.txt").write_bytes(
            (SHARED_COVIDX / f"{split}_COVIDx{version}.txt").read_bytes())
    ds = Covidx(root=str(tmp_path), version=version, check_files=False)
    summary = describe(ds)
    assert {split: summary[split]["classes"] for split in summary} == README_COUNTS[version]
    counts = ds.records()["split"].value_counts()
    assert (counts["train"], counts["test"]) == README_TOTALS[version]
    spaced = ds.records()["patient"].str.contains(" ")
    assert int(spaced.sum()) == (943 if version in ("8A", "8B") else 0)


@pytest.fixture(scope="module")
def real_9b_tree(tmp_path_factory):
    if not SHARED_COVIDX.is_dir():
        pytest.skip(f"{SHARED_COVIDX} is absent")
    root = covidx_from_real_files(tmp_path_factory.mktemp("covidx9b"))
    yield root
    shutil.rmtree(root)  # 30,882 files: not worth keeping among pytest's retained temp folders


def test_tree_from_real_9b_files_describes_as_in_the_readme(real_9b_tree):
    summary = describe(Covidx(root=str(real_9b_tree)))  # check_files on: all 30,882 placeholders are found
    assert summary["test"]["classes"] == {"negative": 200, "positive": 200}
    assert summary["train"]["classes"] == {"negative": 13992, "positive": 16490}
    assert summary["train"]["patients"] == 16648 and summary["test"]["patients"] == 378


def test_missing_image_names_the_split_file_line(tmp_path):
    root = write_covidx(tmp_path)
    (root / "train" / "MIDRC-RICORD-1C-419639-003251-46647-0.png").unlink()
    with pytest.raises(DataError, match=r"train_COVIDx9B\.txt:4: image 'train/MIDRC.*' is missing .*1 of 8"):
        Covidx(root=str(root)).records()
    assert len(Covidx(root=str(root), check_files=False).records()) == 8


@pytest.mark.parametrize("split,line,expected", [
    ("train", "justtwo fields.png", r"train_COVIDx9B\.txt:6: expected 'patient_id filename label source'"),
    ("train", "7 x.png maybe rsna", r"train_COVIDx9B\.txt:6: label 'maybe' is not one of negative, positive"),
    ("train", "7 x.png COVID-19 rsna", r"train_COVIDx9B\.txt:6: label 'COVID-19' is not one of"),
    ("train", "7 ../../../etc/passwd negative rsna", r"train_COVIDx9B\.txt:6: image path .* escapes the dataset root"),
    ("test", "5 again.png negative rsna",
     r"patient '5' of covidx has images in more than one split: train .*:1\), test"),
    ("test", "b2 test-b2.png negative rsna", r"test_COVIDx9B\.txt:4: image 'test/test-b2.png' is listed twice"),
])
def test_bad_split_file_lines_name_file_and_line(tmp_path, split, line, expected):
    lines = lines_copy()
    lines[split].append(line)
    root = write_covidx(tmp_path, lines, images=False)
    with pytest.raises(DataError, match=expected):
        Covidx(root=str(root), check_files=False).records()


def test_empty_split_file_and_missing_split_file_are_errors(tmp_path):
    root = write_covidx(tmp_path, {"train": lines_copy()["train"], "test": []})
    with pytest.raises(DataError, match=r"test_COVIDx9B\.txt: split 'test' is empty"):
        Covidx(root=str(root)).records()
    (root / "test_COVIDx9B.txt").unlink()
    with pytest.raises(DataError, match="no test split file for COVIDx 9B; expected test_COVIDx9B.txt or test.txt"):
        Covidx(root=str(root)).records()


def test_missing_root_is_an_error(tmp_path):
    with pytest.raises(DataError, match="not a directory"):
        Covidx(root=str(tmp_path / "nowhere")).records()


def test_load_refuses_escapes_and_names_corrupt_files(tmp_path):
    root = write_covidx(tmp_path)
    ds = Covidx(root=str(root))
    with pytest.raises(DataError, match="escapes the dataset root"):
        ds.load("../outside.png")
    (root / "train" / "ARDSSevere.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(DataError, match=r"ARDSSevere\.png: cannot decode image"):
        ds.load("train/ARDSSevere.png")
    write_png(root / "train" / "ARDSSevere.png", np.full((3, 5), 7, dtype=np.uint8))
    assert ds.load("train/ARDSSevere.png").tolist() == [[7] * 5] * 3
