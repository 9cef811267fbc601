"""A merged source from fake trees of three real layouts (CheXpert, NIH ChestX-ray14, PadChest): labels on
torchxrayvision's names, counts per member and label, distinct patients, nested subsets, describe, bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from fake_trees import write_chexpert, write_nih, write_padchest

from scaling.config import ConfigError, load_config
from scaling.data.__main__ import main
from scaling.data.base import DataError
from scaling.data.chexpert import CheXpert
from scaling.data.merged import MergedDataset
from scaling.data.nih import NIHChestXray14
from scaling.data.padchest import PadChest
from scaling.data.registry import open_dataset
from scaling.data.subsets import nested_subset

SHARED = ("Cardiomegaly", "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Effusion")


@pytest.fixture()
def roots(tmp_path):
    return {"chexpert": write_chexpert(tmp_path / "chexpert"), "nih": write_nih(tmp_path / "nih"),
            "padchest": write_padchest(tmp_path / "padchest")}


def merged(roots, labels="shared") -> MergedDataset:
    return MergedDataset([CheXpert(root=str(roots["chexpert"])), NIHChestXray14(root=str(roots["nih"])),
                          PadChest(root=str(roots["padchest"]))], labels=labels)


def test_shared_labels_counts_per_member_and_label(roots):
    ds = merged(roots)
    # CheXpert's "Pleural Effusion" is NIH's and PadChest's "Effusion" under torchxrayvision's names
    assert ds.task.classes == SHARED
    parts = ds.contributions()
    assert {n: p["images"] for n, p in parts.items()} == {
        "chexpert": {"train": 3, "val": 2, "test": 0}, "nih": {"train": 3, "val": 0, "test": 2},
        "padchest": {"train": 3, "val": 0, "test": 0}, "merged": {"train": 9, "val": 2, "test": 2}}
    cardiomegaly = {n: p["classes"]["Cardiomegaly"] for n, p in parts.items()}
    assert cardiomegaly == {"chexpert": 1, "nih": 2, "padchest": 1, "merged": 4}
    effusion = {n: p["classes"]["Effusion"] for n, p in parts.items()}
    assert effusion == {"chexpert": 0, "nih": 1, "padchest": 1, "merged": 2}
    recs = ds.records().set_index("key")
    nih_y = recs.loc["nih/images/00000003_001.png", "y"]  # Pleural_Thickening|Effusion: only Effusion is shared
    assert nih_y.tolist() == [0, 0, 0, 0, 0, 0, 1]
    assert ds.load("padchest/1/img_effusion.png").dtype == np.uint16  # loaded by its member


def test_patients_stay_distinct_and_subsets_are_nested_over_the_merged_set(roots):
    ds = merged(roots)
    recs = ds.records()
    members = [CheXpert(root=str(roots["chexpert"])), NIHChestXray14(root=str(roots["nih"])),
               PadChest(root=str(roots["padchest"]))]
    assert recs["patient"].nunique() == sum(m.records()["patient"].nunique() for m in members)
    assert recs["patient"].str.split("/").str[0].isin(["chexpert", "nih", "padchest"]).all()
    train = recs[recs["split"] == "train"]
    small, large = nested_subset(train, 4, seed=1), nested_subset(train, 7, seed=1)
    assert set(small) <= set(large) and len(large) == 7
    assert train.loc[large, "key"].str.split("/").str[0].nunique() == 3  # every member contributes


def test_union_labels_leave_missing_ones_unknown(roots):
    ds = merged(roots, "union")
    assert "Infiltration" in ds.task.classes and "Support Devices" in ds.task.classes
    recs = ds.records().set_index("key")
    i = ds.task.classes.index("Infiltration")  # NIH and PadChest label it, CheXpert does not
    assert np.isnan(recs.loc["chexpert/train/patient00001/study1/view1_frontal.jpg", "y"][i])
    assert recs.loc["padchest/1/img_pacemaker.png", "y"][i] == 1
    assert ds.fingerprint() != merged(roots).fingerprint()


def test_describe_reports_each_members_contribution(roots, tmp_path, capsys):
    raw = {"name": "m", "data": {
        "target": {"dataset": "synthetic-covidx", "options": {"size": 60, "test_size": 20}},
        "sources": {"medical": {"merge": [{"dataset": d, "options": {"root": str(r)}} for d, r in roots.items()]}},
        "source_sizes": [2]}, "models": {"ladder": "cpu", "sizes": ["w8"]},
        "sweep": {"sources": ["scratch", "medical"]}}
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["describe", "--config", str(path), "--source", "medical"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("merged-chexpert+nih+padchest: multilabel, 7 shared labels")
    assert out[1].split() == ["chexpert", "nih", "padchest", "merged"]
    assert out[2].split() == ["train", "images", "3", "3", "3", "9"]
    assert [line.split() for line in out if line.startswith("Cardiomegaly")] == [["Cardiomegaly", "1", "2", "1", "4"]]
    assert main(["describe", "--config", str(path), "--source", "medical", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["nih"]["images"]["test"] == 2
    assert main(["describe", "--config", str(path), "--source", "natural"]) == 2
    assert "--source natural: " in capsys.readouterr().err


def test_bad_merges_are_refused(roots, tmp_path):
    with pytest.raises(DataError, match="cannot merge synthetic-covidx: its labels are binary"):
        MergedDataset([open_dataset("synthetic-covidx", size=60, test_size=20), NIHChestXray14(root=str(roots["nih"]))])
    raw = {"name": "m", "data": {"target": {"dataset": "synthetic-covidx"},
                                 "sources": {"medical": {"merge": [{"dataset": "nih", "options": {"root": "/x"}}]}}},
           "models": {"ladder": "cpu", "sizes": ["w8"]}, "sweep": {"sources": ["medical"]}}
    path = tmp_path / "m.yaml"
    for merge, message in [
        ([{"dataset": "nih", "options": {"root": "/x"}}], "data.sources.medical.merge: got 1 dataset; expected at least two"),
        ([{"dataset": "nih", "options": {"root": "/x"}}, {"dataset": "nih", "options": {"root": "/y"}}],
         "data.sources.medical.merge[1].dataset: 'nih' is merged twice"),
        ([{"dataset": "nih", "options": {"root": "/x"}}, {"dataset": "chexpert", "options": {"uncertain": "ones"}}],
         "data.sources.medical.merge[1].options.uncertain: unknown option for dataset 'chexpert'"),
    ]:
        raw["data"]["sources"]["medical"]["merge"] = merge
        path.write_text(yaml.safe_dump(raw))
        with pytest.raises(ConfigError) as err:
            load_config(path)
        assert message in str(err.value)
