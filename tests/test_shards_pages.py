"""Raw images of one image per row group are read straight from their Parquet dictionary page (ShardReader's fast
path): the same bytes as Parquet's own reader, any order and repeats, a damaged page refused naming the file, and
pages without a dictionary still read through Parquet, forked loader workers the same pixels."""
from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

import scaling.data.shards.layout as shards_layout
from scaling.data.base import DataError
from scaling.data.preprocess import Preprocess, preprocess_image
from scaling.data.shards import ShardDataset, ShardReader, ShardSet, prepare_shards
from scaling.files import MANIFEST
from scaling.train.batches import StepBatches
from tiny_dataset import TinyDataset


def through_parquet(reader: ShardReader, rows: np.ndarray) -> np.ndarray:
    """The rows as pyarrow's Parquet reader returns them (one image per row group)."""
    images = reader._read_groups(0, np.unique(rows)).combine_chunks()
    return reader._pixels(images)[np.searchsorted(np.unique(rows), rows)]


@pytest.mark.parametrize("channels, storage", [(1, "uint8"), (3, "uint8"), (1, "uint16")])
def test_one_image_groups_are_read_from_their_pages_with_parquets_bytes(tmp_path, monkeypatch, channels, storage):
    itemsize = 2 if storage == "uint16" else 1
    monkeypatch.setattr(shards_layout, "GROUP_BYTES", 16 * 16 * channels * itemsize)  # one image per group
    dataset = TinyDataset(n=12, height=16, width=16, channels=channels, dtype=storage)
    shards = prepare_shards(dataset, Preprocess(16, storage=storage), tmp_path)
    reader = ShardReader(shards)
    assert shards.rows_per_group == 1 and reader._image_pages(0) is not None
    rows = np.array([7, 0, 11, 7, 3, 3, 10])  # random order, repeats
    stored = reader.take_stored(rows)
    assert stored.dtype == shards.dtype and np.array_equal(stored, through_parquet(reader, rows))
    assert np.array_equal(stored[0], preprocess_image(dataset.image(7), shards.preprocess, channels))


def test_a_damaged_page_header_is_refused_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(shards_layout, "GROUP_BYTES", 16 * 16)
    shards = prepare_shards(TinyDataset(n=4, height=16, width=16), Preprocess(16), tmp_path)
    offset = int(ShardReader(shards)._image_pages(0)[2][0])
    path = shards.path / shards.files[0]
    with open(path, "r+b") as f:  # the page type's field header: the page no longer begins as Parquet's do
        f.seek(offset)
        f.write(b"\x00")
    assert ShardReader(shards).take_stored([0, 1]).shape == (2, 16, 16)  # other pages still read
    with pytest.raises(DataError, match=rf"{path}: the page at byte {offset} is not a zstd-compressed dictionary"):
        ShardReader(shards).take_stored([1, 2])


def test_pages_written_without_a_dictionary_are_read_through_parquet(tmp_path, monkeypatch):
    monkeypatch.setattr(shards_layout, "GROUP_BYTES", 16 * 16)
    dataset = TinyDataset(n=5, height=16, width=16)
    shards = prepare_shards(dataset, Preprocess(16), tmp_path)
    path = shards.path / shards.files[0]  # rewritten as another writer might: plain pages, no dictionary
    pq.write_table(pq.read_table(path), path, row_group_size=1, compression="zstd", use_dictionary=False)
    manifest = json.loads((shards.path / MANIFEST).read_text())
    manifest["files"][shards.files[0]] = path.stat().st_size
    (shards.path / MANIFEST).write_text(json.dumps(manifest))
    reader = ShardReader(ShardSet.open(shards.path))
    assert reader._image_pages(0) is None
    assert np.array_equal(reader.take_stored([4, 1])[0], preprocess_image(dataset.image(4), shards.preprocess, 1))


def test_forked_loader_workers_read_the_same_pixels_from_the_pages(tmp_path, monkeypatch):
    monkeypatch.setattr(shards_layout, "GROUP_BYTES", 16 * 16)
    shards = prepare_shards(TinyDataset(n=24, height=16, width=16), Preprocess(16), tmp_path)
    lazy = ShardDataset(shards, memory_bytes=0)
    lazy.__getitems__([5, 1])  # the parent opens the file first: its handle must not serve the workers
    steps = StepBatches(np.arange(24), 6, seed=3, start=0, stop=4)
    held = [x for x, _ in DataLoader(ShardDataset(shards), batch_sampler=steps)]
    forked = [x for x, _ in DataLoader(lazy, batch_sampler=steps, num_workers=2, multiprocessing_context="fork")]
    assert lazy._preloaded is None and lazy._reader._raw_files
    assert all(torch.equal(a, b) for a, b in zip(held, forked, strict=True))
