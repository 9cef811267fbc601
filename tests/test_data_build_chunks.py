"""Building a shard set chunk by chunk, in this process and in a process pool: the leakage hash computed in the
build equals the hash of the decoded shards, older sets are hashed once in parallel, skipped images give the
layout of an uninterrupted build, and a build stopped by a bad image keeps its finished chunks (a corrupted one is
built again)."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from scaling.data.base import DataError
from scaling.data.dhash import dhash
from scaling.data.executors import process_pool
from scaling.data.leakage import hash_shards
from scaling.data.preprocess import Preprocess, preprocess_image
from scaling.data.shards import BUILDS, CHUNKS_LOG, HASHES, ShardReader, ShardSet, prepare_shards, shard_path
from scaling.files import CHECKSUMS, MANIFEST
from tiny_dataset import TinyDataset


def digests(folder: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.iterdir())
            if f.is_file() and f.name != MANIFEST}


def chunk_log(cache: Path) -> list[int]:
    return sorted(json.loads(line)["chunk"] for line in (cache / CHUNKS_LOG).read_text().splitlines())


@pytest.mark.parametrize("encoding", ["raw", "png"])
def test_hashes_computed_in_the_build_equal_those_of_the_decoded_shards(tmp_path, encoding):
    dataset = TinyDataset(n=40, height=40, width=48, bad=("img00005",))
    shards = prepare_shards(dataset, Preprocess(32, encoding=encoding), tmp_path, rows_per_shard=16,
                            on_bad_image="skip")
    decoded = dhash(ShardReader(shards).take(range(len(shards))))
    assert np.array_equal(np.load(shards.path / HASHES), decoded) and len(decoded) == 39
    assert np.array_equal(hash_shards(shards), decoded)
    assert not list(tmp_path.glob("*.npy")), "the guard hashed the set again"


def test_a_set_without_hashes_is_hashed_once_in_parallel(tmp_path):
    built = prepare_shards(TinyDataset(n=40, height=40, width=40), Preprocess(32), tmp_path / "new", rows_per_shard=16)
    old = tmp_path / "old" / built.path.name  # as published before this version: no hashes in it
    shutil.copytree(built.path, old)
    (old / HASHES).unlink()
    manifest = json.loads((old / MANIFEST).read_text())
    del manifest[CHECKSUMS][HASHES]
    (old / MANIFEST).write_text(json.dumps(manifest))
    shards = ShardSet.open(old)
    hashes = hash_shards(shards, map_chunks=process_pool(2))
    assert np.array_equal(hashes, np.load(built.path / HASHES))
    for name in shards.files:  # once: the next guard reads the hashes it kept, decoding nothing
        (old / name).unlink()
    assert np.array_equal(hash_shards(shards), hashes)


def test_skipped_images_across_chunks_give_the_layout_of_an_uninterrupted_build(tmp_path):
    dataset = TinyDataset(n=30, bad=("img00002", "img00017", "img00018"))
    shards = prepare_shards(dataset, Preprocess(16), tmp_path, rows_per_shard=8, on_bad_image="skip",
                            map_chunks=process_pool(2))
    kept = [i for i in range(30) if i not in (2, 17, 18)]
    assert shards.skipped_keys == ("img00002", "img00017", "img00018")
    assert list(shards.records["key"]) == [f"img{i:05d}" for i in kept] and len(shards.files) == 4
    assert np.array_equal(shards.read(range(27)),
                          np.stack([preprocess_image(dataset.image(i), Preprocess(16), 1) for i in kept]))
    assert chunk_log(tmp_path) == [0, 1, 2, 3]


def test_a_bad_image_keeps_finished_chunks_and_a_corrupted_one_is_built_again(tmp_path):
    bad = ("img00025",)  # in the fourth of five chunks
    with pytest.raises(DataError, match=r"^tiny: /data/tiny/img00025\.png: truncated"):
        prepare_shards(TinyDataset(n=40, bad=bad), Preprocess(16), tmp_path, rows_per_shard=8)
    final = shard_path(TinyDataset(n=40, bad=bad), Preprocess(16), tmp_path)
    assert not final.exists() and not list(tmp_path.glob(".*.tmp-*"))
    chunks = tmp_path / f".{final.name}.chunks"
    assert sorted(p.name for p in chunks.iterdir()) == ["chunk-00000", "chunk-00001", "chunk-00002"]
    shard = chunks / "chunk-00001" / "shard-00001.parquet"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))

    dataset = TinyDataset(n=40, bad=bad)
    shards = prepare_shards(dataset, Preprocess(16), tmp_path, rows_per_shard=8, on_bad_image="skip")
    assert dataset.loads == 24, "only the corrupted chunk and the unfinished ones are built"
    assert chunk_log(tmp_path) == [0, 1, 1, 2, 3, 4]
    assert json.loads((tmp_path / BUILDS).read_text())["chunks_reused"] == 2
    assert not chunks.exists()
    reference = prepare_shards(TinyDataset(n=40, bad=bad), Preprocess(16), tmp_path / "reference", rows_per_shard=8,
                               on_bad_image="skip")
    assert digests(shards.path) == digests(reference.path)


def test_process_pool_stops_at_a_bad_image_naming_file_and_dataset(tmp_path):
    with pytest.raises(DataError, match=r"tiny: /data/tiny/img00003\.png"):
        prepare_shards(TinyDataset(n=40, bad=("img00003",)), Preprocess(8), tmp_path, rows_per_shard=8,
                       map_chunks=process_pool(2))
    assert not [p for p in tmp_path.iterdir() if p.is_dir() and not p.name.endswith(".chunks")]
