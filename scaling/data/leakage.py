"""The leakage guard: a target's evaluation images must not be in any pre-training source, judged by content.

Names do not tell: COVIDx's negatives are RSNA pneumonia-challenge images, i.e. NIH ChestX-ray14 images under
other file names, and a PadChest target is inside a merged source that holds PadChest. So every stored image
gets a difference hash (dHash: the image averaged down to `size` x `size`+1 cells, one bit per pair of
horizontal neighbours, "is the right one brighter"; `scaling.data.dhash`), computed on the preprocessed pixels
while the shard build has them in memory and stored in the set (older sets: once, from their decoded shards, in
parallel), so the guard decodes nothing; re-encoding,
rescaling and small intensity changes of one image leave its hash within a few bits. Pairs of a target
validation/test image and a source image whose hashes differ in at most `max_distance` bits are near-duplicates.

Written here in numpy rather than with imagehash (not a dependency): imagehash hashes one PIL image at a time
(a conversion to PIL and a PIL resize per image) and has no search, while the shard pixels are already decoded,
same-sized arrays: the area averages of a whole batch are a reshape-sum and a `np.add.reduceat`, and the search
is an XOR and `np.bitwise_count` over the packed hashes, blocked so that memory stays bounded
(benchmarks/bench_leakage.py measures both at ImageNet-21k scale).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scaling.data.base import DataError
from scaling.data.dhash import HASH_BATCH, HASH_SIZE, dhash
from scaling.data.executors import MapChunks, in_process
from scaling.data.shards import HASHES, ShardReader, ShardSet
from scaling.files import publishing

__all__ = ["HASH_SIZE", "Leak", "LeakageError", "dhash", "find_leaks", "hash_shards", "leak_message",
           "near_duplicates"]

#: target x source hash pairs compared per block (bounds the buffers: ~11 bytes per pair)
PAIRS_PER_BLOCK = 1 << 22


def hash_shards(shards: ShardSet, size: int = HASH_SIZE, map_chunks: MapChunks = in_process) -> np.ndarray:
    """dHashes of every row of a shard set, (rows, size * size / 64) uint64. A set built by this version holds
    them (computed while its images were in memory); for an older one they are computed once, by `map_chunks`
    over its shard files (decoded batch by batch), and kept next to the shard set, whose content they are a
    function of, for the next study (published atomically: a concurrent study reads either no cache or a
    complete one)."""
    words = size * size // 64
    sibling = shards.path.parent / f"{shards.path.name}.dhash{size}.npy"
    for cache in ([shards.path / HASHES] if size == HASH_SIZE else []) + [sibling]:
        if cache.is_file():
            hashes = np.load(cache)
            if hashes.shape == (len(shards), words):
                return hashes
    ranges = [(start, min(start + shards.rows_per_shard, len(shards)))
              for start in range(0, len(shards), shards.rows_per_shard)]
    hashes = np.empty((len(shards), words), dtype=np.uint64)
    for position, part in map_chunks(_hash_rows, (shards, size), ranges):
        hashes[ranges[position][0]:ranges[position][1]] = part
    with publishing(sibling) as tmp, open(tmp, "wb") as f:
        np.save(f, hashes)
    return hashes


def _hash_rows(job: tuple[ShardSet, int], rows: tuple[int, int]) -> np.ndarray:
    """dHashes of the rows [start, stop) of a shard set, decoded batch by batch."""
    shards, size = job
    reader = ShardReader(shards)
    return np.concatenate([dhash(reader.take(range(start, min(start + HASH_BATCH, rows[1]))), size)
                           for start in range(*rows, HASH_BATCH)])


def near_duplicates(queries: np.ndarray, hashes: np.ndarray, max_distance: int) -> np.ndarray:
    """(k, 3) int64 rows (query position, hash position, Hamming distance) of every pair within
    `max_distance` bits, by blocked brute force: exact, and for a target's few thousand evaluation images
    against ImageNet-21k about half an hour on one core (benchmarks/bench_leakage.py), less than hashing it."""
    queries, hashes = np.atleast_2d(queries), np.atleast_2d(hashes)
    columns = np.ascontiguousarray(hashes.T)  # word-major: each word's XOR streams over contiguous memory
    found = []
    block = max(1, PAIRS_PER_BLOCK // max(1, len(queries)))
    for start in range(0, len(hashes), block):
        distance = np.zeros((len(queries), min(block, len(hashes) - start)), dtype=np.uint16)
        for word in range(columns.shape[0]):  # one word at a time: a uint8 count per pair, not a 3-D buffer
            distance += np.bitwise_count(queries[:, word, None] ^ columns[word, None, start:start + block])
        q, h = np.nonzero(distance <= max_distance)
        found.append(np.stack([q, h + start, distance[q, h]], axis=1).astype(np.int64))
    return np.concatenate(found) if found else np.empty((0, 3), dtype=np.int64)


@dataclass(frozen=True)
class Leak:
    """One near-duplicate: a target evaluation image and a source image, named by their files."""

    target_file: str
    source_file: str
    source_row: int
    distance: int


def find_leaks(target_shards, target_rows, source_shards, source_rows, max_distance: int,
               target_names, source_names, map_chunks: MapChunks = in_process) -> list[Leak]:
    """Near-duplicates between the target's `target_rows` and the source's `source_rows` (shard rows);
    `*_names(row) -> str` names an image's file for the report; `map_chunks` hashes sets that lack hashes."""
    target_rows, source_rows = np.asarray(target_rows, np.int64), np.asarray(source_rows, np.int64)
    queries = hash_shards(target_shards, map_chunks=map_chunks)[target_rows]
    hashes = hash_shards(source_shards, map_chunks=map_chunks)[source_rows]
    pairs = near_duplicates(queries, hashes, max_distance)
    return [Leak(target_names(int(target_rows[q])), source_names(int(source_rows[h])), int(source_rows[h]), int(d))
            for q, h, d in pairs]


class LeakageError(DataError):
    """A target evaluation image is (nearly) an image of a pre-training source."""


def leak_message(role: str, leaks: list[Leak], max_distance: int) -> str:
    shown = "; ".join(f"{leak.target_file} ~ {leak.source_file} ({leak.distance} bits)" for leak in leaks[:5])
    more = f"; and {len(leaks) - 5} more" if len(leaks) > 5 else ""
    return (f"data.sources.{role}: {len(leaks)} near-duplicate(s) of the target's validation/test images "
            f"(dHash within {max_distance} bits): {shown}{more}; remove them from the source, or set "
            f"data.leakage.policy: remove to drop them automatically")
