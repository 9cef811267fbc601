"""The leakage guard: a target evaluation image planted into a pre-training source is found by content (under
another name and re-encoded) and named with both files; unrelated images are not; the policies remove or stop;
a target that is a member of a merged source is caught too."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import yaml
from fake_trees import PADCHEST_ROWS, write_chexpert, write_nih, write_padchest
from PIL import Image

from scaling.config import load_config
from scaling.data.base import Dataset
from scaling.data.leakage import LeakageError, dhash, near_duplicates
from scaling.data.registry import open_dataset
from scaling.data.shards import Preprocess, prepare_shards
from scaling.data.stage import guard, prepare_study_data, split_rows
from scaling.rehearse.formats import write_png


def jpeg(pixels: np.ndarray, quality: int = 95) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())))


class Planted(Dataset):
    """A synthetic medical source with one extra image under its own name: a re-encoded copy of `planted`."""

    def __init__(self, planted: np.ndarray):
        self.base = open_dataset("synthetic-medical", size=300, image_size=48, seed=5)
        self.name, self.task, self.channels = "planted-medical", self.base.task, 1
        self.planted = jpeg(planted)

    def records(self) -> pd.DataFrame:
        recs = self.base.records()
        extra = pd.DataFrame({"split": ["train"], "key": ["copied/radiograph.png"], "patient": ["x"],
                              "y": [np.zeros(len(self.task.classes), np.float32)]})
        return pd.concat([recs, extra], ignore_index=True)

    def load(self, key: str) -> np.ndarray:
        return self.planted if key == "copied/radiograph.png" else self.base.load(key)

    def fingerprint(self) -> str:
        return "planted:" + self.base.fingerprint() + str(hash(self.planted.tobytes()))


def test_dhash_is_stable_under_re_encoding_and_tells_images_apart():
    target = open_dataset("synthetic-covidx", size=200, test_size=100, image_size=48)
    images = np.stack([target.load(k) for k in target.records()["key"]])
    hashes = dhash(images)
    assert hashes.shape == (len(images), 4) and hashes.dtype == np.uint64  # 256 bits
    again = dhash(np.stack([jpeg(i) for i in images]))
    brighter = dhash(np.clip(images * 1.1, 0, 255).astype(np.uint8))
    assert np.bitwise_count(hashes ^ again).sum(1).max() <= 8
    assert np.bitwise_count(hashes ^ brighter).sum(1).max() <= 8
    pairs = near_duplicates(hashes, hashes, 8)
    assert set(map(tuple, pairs[:, :2])) == {(i, i) for i in range(len(images))}  # only each image itself


@pytest.fixture()
def planted(tmp_path):
    """Target (synthetic COVIDx-like) and a source holding one of the target's test images under another name."""
    target_ds = open_dataset("synthetic-covidx", size=200, test_size=100, image_size=48)
    target_shards = prepare_shards(target_ds, Preprocess(resolution=48), tmp_path)
    target = split_rows(target_shards, 0.2, 0)
    victim = int(target.test[7])
    source_ds = Planted(target_shards.read([victim])[0])
    source = split_rows(prepare_shards(source_ds, Preprocess(resolution=48), tmp_path), 0.2, 0)
    return target, target_ds, source, source_ds, target_shards.records["key"].loc[victim]


def test_a_planted_duplicate_is_found_with_both_file_names(planted):
    target, target_ds, source, source_ds, victim_key = planted
    with pytest.raises(LeakageError) as err:
        guard(target, target_ds, source, source_ds, "medical", "error", 8)
    message = str(err.value)
    assert "data.sources.medical: 1 near-duplicate(s)" in message
    assert f"synthetic-covidx:{victim_key} ~ planted-medical:copied/radiograph.png" in message


def test_remove_drops_only_the_duplicate_and_counts_it(planted):
    target, target_ds, source, source_ds, _ = planted
    planted_row = int(source.shards.records.index[source.shards.records["key"] == "copied/radiograph.png"][0])
    kept, counts = guard(target, target_ds, source, source_ds, "medical", "remove", 8)
    assert counts == {"near_duplicates": 1, "removed": 1}
    used, kept_used = np.r_[source.train, source.val], np.r_[kept.train, kept.val]
    assert planted_row in used and planted_row not in kept_used
    assert len(kept_used) == len(used) - 1  # every unrelated image stays


def test_a_clean_source_passes(tmp_path, planted):
    target, target_ds, _, _, _ = planted
    clean_ds = open_dataset("synthetic-medical", size=300, image_size=48, seed=5)
    clean = split_rows(prepare_shards(clean_ds, Preprocess(resolution=48), tmp_path), 0.2, 0)
    kept, counts = guard(target, target_ds, clean, clean_ds, "medical", "error", 8)
    assert counts == {"near_duplicates": 0, "removed": 0} and np.array_equal(kept.train, clean.train)


def _textured(rng) -> np.ndarray:
    """A distinct smooth random image (placeholder PNGs are all black, i.e. all the same)."""
    small = rng.integers(0, 255, (6, 6)).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize((40, 40), Image.BICUBIC))


def test_a_target_inside_a_merged_source_is_caught(tmp_path):
    roots = {"chexpert": write_chexpert(tmp_path / "chexpert"), "nih": write_nih(tmp_path / "nih"),
             "padchest": write_padchest(tmp_path / "padchest", PADCHEST_ROWS + [  # more patients to split
                 f"{i},img_n{i}.png,0,20140915,s{i},p{i},1930.0,F,POSTEROANTERIOR,PA,Manual review of DICOM fields,"
                 "No,CR,['normal']" for i in range(6, 10)])}
    rng = np.random.default_rng(0)
    for root in roots.values():
        for png in sorted(root.rglob("*.png")) + sorted(root.rglob("*.jpg")):
            write_png(png, _textured(rng))
    raw = {"name": "leak", "data": {
        "resolution": 32, "target": {"dataset": "padchest", "options": {"root": str(roots["padchest"])}},
        "sources": {"medical": {"merge": [{"dataset": d, "options": {"root": str(r)}} for d, r in roots.items()]}},
        "source_sizes": [2], "val_fraction": 0.4, "cache_dir": str(tmp_path / "cache"),
        "leakage": {"policy": "remove"}},
        "models": {"ladder": "cpu", "sizes": ["w8"]}, "sweep": {"sources": ["scratch", "medical"]}}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(raw))
    data = prepare_study_data(load_config(tmp_path / "study.yaml"), log=lambda *_: None)
    target_eval = len(data.target.val) + len(data.target.test)
    assert target_eval >= 1
    # every PadChest validation image is in the merged source's training split: found and removed
    assert data.leakage == {"medical": {"near_duplicates": target_eval, "removed": target_eval}}
    source = data.sources["medical"]
    kept_keys = set(source.shards.records["key"].loc[np.r_[source.train, source.val]])
    for key in data.target.shards.records["key"].loc[data.target.val]:
        assert f"padchest/{key}" not in kept_keys
    raw["data"]["leakage"]["policy"] = "error"
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(LeakageError, match=f"{roots['padchest']}/.* ~ {roots['padchest']}/"):
        prepare_study_data(load_config(tmp_path / "study.yaml"), log=lambda *_: None)
