"""Reading shard sets larger than memory (batch by batch, only the row groups used) and the stored encodings: the
same pixels as in memory, about one image's bytes read per image, lossy encodings within their quality, bad
encodings refused naming the key."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import scaling.data.shards.layout as shards_layout
from scaling.config import ConfigError, load_config
from scaling.data.encoding import decode_image, encode_image
from scaling.data.preprocess import Preprocess, preprocess_image
from scaling.data.shards import ShardDataset, ShardReader, prepare_shards, shard_key
from scaling.train.batches import StepBatches
from tiny_dataset import TinyDataset

SMOKE = "studies/configs/smoke.yaml"


def bytes_read() -> int:
    """What this process has read through read()/pread() (the kernel's count)."""
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


def smooth(side: int, channels: int = 1) -> np.ndarray:
    """An X-ray-like image: smooth shading and a soft blob, as lossy codecs meet them."""
    yy, xx = np.mgrid[0:side, 0:side] / side
    gray = 0.2 + 0.5 * xx * (1 - yy) + 0.25 * np.exp(-((xx - 0.6) ** 2 + (yy - 0.4) ** 2) / 0.02)
    pixels = np.round(np.clip(gray, 0, 1) * 255).astype(np.uint8)
    return pixels if channels == 1 else np.stack([pixels, pixels[::-1], pixels[:, ::-1]], axis=-1)


@pytest.mark.parametrize("encoding, channels", [("raw", 1), ("png", 1), ("png", 3), ("jpeg:90", 3), ("webp:80", 1)])
def test_lazy_reading_returns_exactly_the_in_memory_images(tmp_path, monkeypatch, encoding, channels):
    monkeypatch.setattr(shards_layout, "GROUP_BYTES", 3 * 16 * 16 * channels)  # 3 images per row group
    dataset = TinyDataset(n=45, height=16, width=16, channels=channels)
    shards = prepare_shards(dataset, Preprocess(16, encoding=encoding), tmp_path, rows_per_shard=8)
    assert (shards.rows_per_group, len(shards.files)) == (3, 6)  # short last groups in every file
    selection = np.random.default_rng(0).choice(45, 30, replace=False)
    held, lazy = ShardDataset(shards, selection), ShardDataset(shards, selection, memory_bytes=0)
    assert held._preloaded is not None and lazy._preloaded is None
    positions = np.random.default_rng(1).permutation(30)
    for batch in np.array_split(positions, 4):  # random order, repeats of files and groups within a batch
        for (a, ya), (b, yb) in zip(held.__getitems__(batch), lazy.__getitems__(batch)):
            assert torch.equal(a, b) and torch.equal(ya, yb)
    stored = shards.read(selection)
    if encoding.startswith("png") or encoding == "raw":  # lossless: the preprocessed pixels themselves
        assert np.array_equal(stored, np.stack([preprocess_image(dataset.image(i), shards.preprocess, channels)
                                                for i in selection]))


def test_a_random_batch_reads_about_the_bytes_of_its_own_images(tmp_path):
    dataset = TinyDataset(n=48, height=512, width=512)
    shards = prepare_shards(dataset, Preprocess(512), tmp_path)
    assert shards.rows_per_group == 1  # 256 KiB images: one per row group
    per_image = shards.stored_bytes / len(shards)
    lazy = ShardDataset(shards, memory_bytes=4 * per_image)
    assert lazy._preloaded is None
    lazy.__getitems__([0])  # opens the file (its footer is read once)
    batch = np.random.default_rng(0).choice(48, 12, replace=False)
    before = bytes_read()
    pixels = lazy._reader.take(batch)
    read = bytes_read() - before
    assert 0.9 * len(batch) * per_image <= read <= 2 * len(batch) * per_image, read / len(batch) / per_image
    assert np.array_equal(pixels[3], preprocess_image(dataset.image(int(batch[3])), shards.preprocess, 1))


def test_row_groups_hold_one_or_two_large_images_and_many_small_ones():
    def rows(side: int, channels: int = 1, itemsize: int = 1) -> int:
        return shards_layout.group_rows(side * side * channels * itemsize, rows_per_shard=2048)
    assert rows(512) == rows(480) == rows(512, itemsize=2) == rows(224, channels=3) == 1
    assert rows(224) == rows(256) == 2
    assert rows(32, channels=3) == 42 and rows(8) == 2048  # never more than a shard


def test_batches_are_the_same_lazily_across_loader_workers_and_after_a_resume(tmp_path):
    shards = prepare_shards(TinyDataset(n=40, height=16, width=16), Preprocess(16, encoding="png"), tmp_path)

    def images(memory_bytes: int, start: int, workers: int) -> list[torch.Tensor]:
        steps = StepBatches(np.arange(40), 8, seed=5, start=start, stop=6)
        loader = DataLoader(ShardDataset(shards, memory_bytes=memory_bytes), batch_sampler=steps,
                            num_workers=workers)
        return [x for x, _ in loader]
    held = images(1 << 30, 0, 0)
    assert all(torch.equal(a, b) for a, b in zip(held, images(0, 0, 2), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(held[2:], images(0, 2, 0), strict=True))


def test_lossless_encodings_are_exact_and_lossy_ones_keep_their_quality():
    for pixels in (smooth(64), smooth(64, 3), (smooth(64).astype(np.uint16) * 257)):
        assert np.array_equal(decode_image(encode_image(pixels, "png"), pixels.ndim == 3 and 3 or 1, pixels.dtype),
                              pixels)
    for image in (smooth(64), smooth(64, 3)):
        channels = image.ndim == 3 and 3 or 1
        for name in ("jpeg", "webp"):
            error = {q: np.abs(decode_image(encode_image(image, f"{name}:{q}"), channels, np.dtype(np.uint8))
                               .astype(int) - image).mean() for q in (30, 95)}
            assert error[95] <= 1.5, (name, channels, error)  # in gray levels of 255
            assert error[30] > error[95], (name, channels, error)  # the stated quality is the one applied


def test_the_quality_is_part_of_the_shard_key(tmp_path):
    dataset = TinyDataset(n=4)
    keys = {shard_key(dataset, Preprocess(16, encoding=e)) for e in ("raw", "png", "jpeg:90", "jpeg:80", "webp:90")}
    assert len(keys) == 5
    shards = prepare_shards(dataset, Preprocess(16, encoding="jpeg:90"), tmp_path)
    expected = [decode_image(encode_image(preprocess_image(dataset.image(i), shards.preprocess, 1), "jpeg:90"), 1,
                             np.dtype(np.uint8)) for i in range(4)]
    assert np.array_equal(ShardReader(shards).take([3, 0, 2, 1]), np.stack(expected)[[3, 0, 2, 1]])


@pytest.mark.parametrize("encoding, storage, message", [
    ("jpeg", "uint8", "got 'jpeg'; expected raw, png, jpeg:Q or webp:Q"),
    ("jpeg:0", "uint8", "got 'jpeg:0'"),
    ("webp:101", "uint8", "got 'webp:101'"),
    ("gif", "uint8", "got 'gif'"),
    ("jpeg:90", "uint16", "JPEG and WebP store 8-bit pixels"),
])
def test_bad_encodings_are_refused_naming_the_key(encoding, storage, message):
    with pytest.raises(ConfigError) as err:
        load_config(SMOKE, [f"data.encoding={encoding}", f"data.storage={storage}"])
    assert str(err.value).startswith("data.encoding: ") and message in str(err.value)
    with pytest.raises(ValueError, match="Preprocess.encoding: .*" + message.split(";")[0].replace("'", ".")):
        Preprocess(32, storage=storage, encoding=encoding)
    assert load_config(SMOKE, ["data.encoding=webp:85"]).data.encoding == "webp:85"
