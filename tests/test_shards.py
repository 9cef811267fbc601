"""Shard cache: reuse, crash safety, cache keys, storage round trips, preprocessing, bad images, and the
torch dataset across DDP ranks and DataLoader workers."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

import scaling.data.shards.layout as shards_layout
from scaling.data.base import DataError
from scaling.data.preprocess import Preprocess, preprocess_image
from scaling.data.shards import ShardDataset, ShardSet, prepare_shards, shard_key, shard_path
from scaling.files import MANIFEST
from tiny_dataset import TinyDataset

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def child(code: str) -> list[str]:
    """argv of a Python child that can import the package and the tiny dataset."""
    prelude = f"import sys; sys.path[:0] = [{str(ROOT)!r}, {str(TESTS)!r}]\n" \
              "from tiny_dataset import TinyDataset\n" \
              "from scaling.data.preprocess import Preprocess\n" \
              "from scaling.data.shards import prepare_shards\n"
    return [sys.executable, "-c", prelude + code]


def expected_pixels(dataset: TinyDataset, preprocess: Preprocess) -> np.ndarray:
    return np.stack([preprocess_image(dataset.image(i), preprocess, dataset.channels) for i in range(dataset.n)])


def test_second_prepare_reuses_without_loading(tmp_path):
    preprocess = Preprocess(16)
    first = TinyDataset(n=30)
    shards = prepare_shards(first, preprocess, tmp_path, rows_per_shard=8)
    assert first.loads == 30
    again = TinyDataset(n=30)
    reused = prepare_shards(again, preprocess, tmp_path, rows_per_shard=8)
    assert again.loads == 0
    assert reused.path == shards.path == tmp_path / f"tiny-{shard_key(first, preprocess)}"
    assert np.array_equal(reused.read(range(30)), expected_pixels(first, preprocess))
    assert list(reused.records["key"]) == list(first.records()["key"])
    assert list(reused.records["y"]) == list(first.records()["y"])


def test_killed_preparation_is_never_read_and_resumes_from_its_finished_chunks(tmp_path):
    proc = subprocess.Popen(child(
        f"prepare_shards(TinyDataset(n=40, slow_after=20, slow_seconds=60), Preprocess(16), {str(tmp_path)!r},"
        " rows_per_shard=8)"))
    try:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".tiny-*.chunks/.chunk-00002.tmp-*")):  # in its third chunk
            assert proc.poll() is None and time.monotonic() < deadline, "child ended before writing"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    final = shard_path(TinyDataset(n=40), Preprocess(16), tmp_path)
    chunks = next(tmp_path.glob(".tiny-*.chunks"))
    assert not final.exists()
    assert sorted(p.name for p in chunks.glob("chunk-*")) == ["chunk-00000", "chunk-00001"]
    # even the chunks sitting at the final path are not taken as a complete set
    shutil.copytree(chunks / "chunk-00000", final)
    with pytest.raises(DataError, match="not a complete shard set"):
        ShardSet.open(final)

    dataset = TinyDataset(n=40)
    shards = prepare_shards(dataset, Preprocess(16), tmp_path, rows_per_shard=8)
    assert dataset.loads == 24, "finished chunks were built again"
    assert not list(tmp_path.glob(".tiny-*"))
    assert len(shards) == 40 and len(shards.files) == 5
    assert np.array_equal(shards.read(range(40)), expected_pixels(dataset, Preprocess(16)))


def test_manifest_size_mismatch_makes_set_incomplete(tmp_path):
    shards = prepare_shards(TinyDataset(n=10), Preprocess(8), tmp_path)
    with open(shards.path / shards.files[0], "ab") as fh:
        fh.write(b"x")
    with pytest.raises(DataError, match="the manifest says"):
        ShardSet.open(shards.path)
    dataset = TinyDataset(n=10)
    prepare_shards(dataset, Preprocess(8), tmp_path)
    assert dataset.loads == 10


def test_concurrent_preparers_build_once(tmp_path):
    code = (f"d = TinyDataset(n=20, slow_after=0, slow_seconds=0.1)\n"
            f"s = prepare_shards(d, Preprocess(8), {str(tmp_path)!r}, rows_per_shard=6)\n"
            "print(d.loads, len(s))")
    procs = [subprocess.Popen(child(code), stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = sorted(p.communicate(timeout=120)[0].split() for p in procs)
    assert all(p.returncode == 0 for p in procs)
    assert outputs == [["0", "20"], ["20", "20"]]
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 1


def test_cache_key_follows_fingerprint_and_preprocessing():
    base_data, base = TinyDataset(), Preprocess(16)
    key = shard_key(base_data, base)
    assert shard_key(TinyDataset(), Preprocess(16)) == key
    variants = [Preprocess(32), Preprocess(16, crop="none"), Preprocess(16, clahe=True),
                Preprocess(16, storage="uint16"), Preprocess(16, encoding="png")]
    keys = {shard_key(base_data, p) for p in variants} | {shard_key(TinyDataset(seed=1), base), key}
    assert len(keys) == len(variants) + 2


@pytest.mark.parametrize("encoding", ["raw", "png"])
def test_uint16_round_trip_is_exact(tmp_path, encoding):
    dataset = TinyDataset(n=6, height=20, width=20, dtype="uint16")
    shards = prepare_shards(dataset, Preprocess(20, crop="none", storage="uint16", encoding=encoding), tmp_path)
    stored = shards.read(range(6))
    assert stored.dtype == np.uint16
    assert np.array_equal(stored, np.stack([dataset.image(i) for i in range(6)]))
    assert len(np.unique(stored)) > 256  # really 16-bit, not 8-bit scaled up
    image, _ = ShardDataset(shards)[0]
    assert torch.allclose(image[0].double(), torch.from_numpy(dataset.image(0) / 65535.0), atol=1e-6)


def test_uint8_storage_of_uint16_input_scales_by_dtype_range():
    image = np.full((8, 8), 0x8080, np.uint16)
    assert np.all(preprocess_image(image, Preprocess(8, storage="uint8"), 1) == 0x80)


def test_centre_crop_takes_the_middle_square():
    image = np.zeros((24, 40), np.uint8)
    image[:, 8:32] = 255  # the central 24x24 square
    assert np.all(preprocess_image(image, Preprocess(12), 1) == 255)
    whole = preprocess_image(image, Preprocess(12, crop="none"), 1)
    assert whole.shape == (12, 12) and whole[:, 0].max() < 128
    colour = np.repeat(image[:, :, None], 3, axis=2)
    assert preprocess_image(colour, Preprocess(12), 3).shape == (12, 12, 3)


def test_clahe_keeps_shape_and_raises_local_contrast():
    rng = np.random.default_rng(0)
    flat = (100 + 10 * rng.random((64, 48))).astype(np.uint8)
    plain = preprocess_image(flat, Preprocess(32), 1)
    equalised = preprocess_image(flat, Preprocess(32, clahe=True), 1)
    assert equalised.shape == plain.shape == (32, 32)
    assert equalised.std() > 3 * plain.std()


def test_preprocess_rejects_bad_parameters_and_images():
    with pytest.raises(ValueError, match="crop"):
        Preprocess(16, crop="left")
    with pytest.raises(ValueError, match="resolution"):
        Preprocess(0)
    with pytest.raises(DataError, match="img7.*HxWx3"):
        preprocess_image(np.zeros((8, 8), np.uint8), Preprocess(8), 3, source="img7")
    with pytest.raises(DataError, match="int32"):
        preprocess_image(np.zeros((8, 8), np.int32), Preprocess(8), 1)


def test_bad_image_raises_naming_file_and_leaves_nothing(tmp_path):
    dataset = TinyDataset(n=12, bad=("img00005",))
    with pytest.raises(DataError, match=r"/data/tiny/img00005\.png"):
        prepare_shards(dataset, Preprocess(8), tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == []  # the lock is released with its file


def test_bad_images_skipped_and_counted(tmp_path):
    dataset = TinyDataset(n=12, bad=("img00003", "img00009"))
    shards = prepare_shards(dataset, Preprocess(8), tmp_path, on_bad_image="skip")
    assert shards.skipped == 2 and shards.skipped_keys == ("img00003", "img00009")
    assert json.loads((shards.path / MANIFEST).read_text())["skipped"] == ["img00003", "img00009"]
    assert len(shards) == 10 and "img00003" not in set(shards.records["key"])
    assert list(shards.records["index"]) == list(range(10))
    kept = [i for i in range(12) if i not in (3, 9)]
    assert np.array_equal(shards.read(range(10)),
                          np.stack([preprocess_image(dataset.image(i), Preprocess(8), 1) for i in kept]))
    with pytest.raises(DataError, match="2 image"):
        prepare_shards(TinyDataset(n=12, bad=("img00003", "img00009")), Preprocess(8), tmp_path)


def test_progress_callback_reaches_total(tmp_path):
    calls = []
    prepare_shards(TinyDataset(n=70), Preprocess(8), tmp_path, rows_per_shard=32,
                   progress=lambda done, total: calls.append((done, total)))
    assert calls == [(0, 70), (32, 70), (64, 70), (70, 70)]


def test_process_pool_gives_identical_shards(tmp_path):
    serial = prepare_shards(TinyDataset(n=40), Preprocess(12, encoding="png"), tmp_path / "a", rows_per_shard=8)
    pooled = prepare_shards(TinyDataset(n=40, bad=()), Preprocess(12, encoding="png"), tmp_path / "b",
                            rows_per_shard=8, workers=2)
    assert np.array_equal(serial.read(range(40)), pooled.read(range(40)))
    assert [(serial.path / f).read_bytes() for f in serial.files] == [(pooled.path / f).read_bytes() for f in pooled.files]


def test_labels_follow_task_kind(tmp_path):
    multilabel = TinyDataset(n=8, kind="multilabel", num_classes=3)
    shards = prepare_shards(multilabel, Preprocess(8), tmp_path)
    image, label = ShardDataset(shards, channels=3)[2]
    assert image.shape == (3, 8, 8) and label.dtype == torch.float32 and label.shape == (3,)
    assert torch.equal(label, torch.from_numpy(multilabel.records()["y"].iloc[2]))
    multiclass = prepare_shards(TinyDataset(n=8, kind="multiclass", num_classes=4), Preprocess(8), tmp_path)
    assert ShardDataset(multiclass)[3][1] == torch.tensor(3)
    assert ShardDataset(multiclass)[3][1].dtype == torch.int64


@pytest.mark.parametrize("memory_bytes", [2 << 30, 0], ids=["preloaded", "lazy"])
def test_ranks_and_workers_cover_every_index(tmp_path, memory_bytes):
    shards = prepare_shards(TinyDataset(n=50), Preprocess(8, encoding="png"), tmp_path, rows_per_shard=16)
    full = ShardDataset(shards, return_index=True, memory_bytes=memory_bytes)
    full[0]  # lazy: opens file handles here, which forked workers must not reuse
    loader = dict(batch_size=4, num_workers=2)
    # evaluation: exact partition over 3 ranks, each read by 2 workers
    seen = []
    for rank in range(3):
        for images, labels, index in DataLoader(full.partition(rank, 3), **loader):
            seen += index.tolist()
            for image, row in zip(images, index.tolist()):
                assert torch.equal(image[0], torch.from_numpy(shards.read([row])[0] / np.float32(255)))
    assert sorted(seen) == list(range(50))
    # training: DistributedSampler gives equal-length ranks covering everything
    per_rank = []
    for rank in range(3):
        sampler = DistributedSampler(full, num_replicas=3, rank=rank, shuffle=True, seed=0)
        sampler.set_epoch(1)
        per_rank.append([i for _, _, index in DataLoader(full, sampler=sampler, **loader) for i in index.tolist()])
    assert len({len(r) for r in per_rank}) == 1
    assert set().union(*per_rank) == set(range(50))


def test_dataset_rejects_out_of_range_indices(tmp_path):
    shards = prepare_shards(TinyDataset(n=5), Preprocess(8), tmp_path)
    with pytest.raises(IndexError, match=r"\[0, 5\)"):
        ShardDataset(shards, [0, 5])


def test_row_groups_that_do_not_divide_shards_are_located(tmp_path, monkeypatch):
    monkeypatch.setattr(shards_layout, "GROUP_BYTES", 3 * 16 * 16)  # 3 images of 16x16 uint8 per row group
    dataset = TinyDataset(n=21)
    shards = prepare_shards(dataset, Preprocess(16), tmp_path, rows_per_shard=8)
    assert (shards.rows_per_group, len(shards.files)) == (3, 3)
    expected = expected_pixels(dataset, Preprocess(16))
    assert np.array_equal(shards.read(np.arange(21)[::-1]), expected[::-1])
    lazy = ShardDataset(shards, memory_bytes=0)
    assert lazy._preloaded is None
    assert np.array_equal(np.stack([lazy[i][0][0].numpy() for i in range(21)]), expected / np.float32(255))


def test_more_ranks_than_items_gives_empty_partitions(tmp_path):
    shards = prepare_shards(TinyDataset(n=2, kind="multilabel", num_classes=3), Preprocess(8), tmp_path)
    parts = [ShardDataset(shards).partition(rank, 3) for rank in range(3)]
    assert [len(p) for p in parts] == [1, 1, 0] and parts[2].labels.shape == (0, 3)
