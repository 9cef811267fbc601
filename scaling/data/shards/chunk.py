"""One chunk of a shard set, the unit of work of a build: the images of `rows_per_shard` consecutive records,
i.e. the set's shard file of that number. `build_chunk` loads, preprocesses, encodes and hashes them (the leakage
guard's dHash, while the pixels are in memory) into the chunk's own folder, `.{set}.chunks/chunk-NNNNN`,
published with its own manifest (sha256 of its files), so that a build killed anywhere keeps every chunk it
finished and the next one builds only the rest. A pure function of (dataset, preprocessing, chunk): a chunk
built twice, by two processes or two runs, is the same bytes.

Every chunk published appends a line to the cache's `chunks.jsonl` (set, chunk, who, how long): the record
that no chunk was built twice."""
from __future__ import annotations

import json
import os
import shutil
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from scaling.data.base import DataError, Dataset
from scaling.data.dhash import HASH_SIZE, dhash, hashable
from scaling.data.preprocess import Preprocess
from scaling.data.shards.encode import stored_image
from scaling.data.shards.layout import SHARD_FORMAT_VERSION
from scaling.data.shards.write import ShardWriter
from scaling.files import MANIFEST, NoSpace, publish, space_for, verify, written

#: the dHashes of a set's stored images, (rows, HASH_SIZE**2 / 64) uint64, in a chunk and in the set
HASHES = f"dhash{HASH_SIZE}.npy"
#: one JSON line per chunk published, in the cache directory
CHUNKS_LOG = "chunks.jsonl"
#: images hashed at once (bounds the copy of their pixels)
_HASH_BATCH = 64


@dataclass(frozen=True)
class ChunkJob:
    """What every chunk of one set shares (an executor sends it once per process)."""

    dataset: Dataset
    preprocess: Preprocess
    #: the set's final path: chunks live beside it, errors name it
    final: Path
    rows_per_shard: int
    rows_per_group: int
    on_bad_image: str
    #: records of the whole set: what its raw pixels need, for the message of a full disk
    total_rows: int

    @property
    def raw(self) -> bool:
        return self.preprocess.encoding == "raw"

    def image_bytes(self) -> int:
        return int(np.prod(self.preprocess.stored_shape(self.dataset.channels))) * \
            np.dtype(self.preprocess.storage).itemsize

    def writer(self, directory: Path, start: int = 0) -> ShardWriter:
        # raw pixels compress a little and decode fast with zstd; PNG bytes are already compressed
        return ShardWriter(directory, pa.binary(self.image_bytes()) if self.raw else pa.binary(),
                           "zstd" if self.raw else "none", self.rows_per_shard, self.rows_per_group, start)


@dataclass(frozen=True)
class Chunk:
    number: int
    #: the set's row of its first record
    start: int
    keys: tuple[str, ...]


@dataclass(frozen=True)
class ChunkResult:
    number: int
    #: positions (within the chunk) of the images stored, in order
    kept: tuple[int, ...]
    skipped: tuple[str, ...]
    #: False when a finished chunk of an earlier run was found intact
    built: bool
    files: tuple[str, ...]
    hashed: bool


def chunks_dir(final: Path) -> Path:
    return final.parent / f".{final.name}.chunks"


def chunk_path(final: Path, number: int) -> Path:
    return chunks_dir(final) / f"chunk-{number:05d}"


def build_chunk(job: ChunkJob, chunk: Chunk) -> ChunkResult:
    """The chunk built into its folder and published there, or found there intact. A bad image raises its
    DataError (naming the dataset and the file) under on_bad_image="error"; a full disk raises NoSpace naming
    the set. Either leaves the chunks finished before."""
    folder = chunk_path(job.final, chunk.number)
    found = finished_chunk(job, chunk)
    if found is not None:
        return found
    shutil.rmtree(folder, ignore_errors=True)  # from another layout, corrupted, or with skips under "error"
    tmp = folder.with_name(f".{folder.name}.tmp-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    # raw pixels: the set's uncompressed size bounds it; PNG: only what was written before the disk filled
    needed = (lambda: (job.total_rows * job.image_bytes(), False)) if job.raw else \
        (lambda: (written(chunks_dir(job.final)), True))
    started = time.monotonic()
    writer = None
    try:
        with space_for(job.final, needed):
            try:
                writer = job.writer(tmp, chunk.start)
                kept, skipped, hashed = _write(job, chunk, writer, tmp)
                writer.close()
                manifest = {**_identity(job, chunk), "kept": kept, "skipped": skipped, "shard_files": writer.files,
                            "hashed": hashed}
                published = publish(tmp, folder, manifest)
            except NoSpace as err:  # named for the chunk's folder or file: the user knows the set
                size, at_least = needed()
                raise NoSpace(job.final, size, at_least=at_least) from err
    except BaseException:
        if writer is not None:
            writer.abandon()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not published:  # another process finished it first: the same bytes
        shutil.rmtree(tmp, ignore_errors=True)
        return finished_chunk(job, chunk) or build_chunk(job, chunk)
    with open(job.final.parent / CHUNKS_LOG, "a") as log:
        log.write(json.dumps({"set": job.final.name, "chunk": chunk.number, "rows": len(kept),
                              "host": socket.gethostname(), "pid": os.getpid(),
                              "build_s": round(time.monotonic() - started, 3)}) + "\n")
    return ChunkResult(chunk.number, tuple(kept), tuple(skipped), True, tuple(writer.files), hashed)


def _write(job: ChunkJob, chunk: Chunk, writer: ShardWriter, tmp: Path) -> tuple[list[int], list[str], bool]:
    """Every image of the chunk into `writer`, its dHashes into HASHES (when the images are large enough for
    one): (positions kept, keys skipped, hashed)."""
    hashed = hashable(job.preprocess.stored_shape(job.dataset.channels))
    kept, skipped, hashes, pending = [], [], [], []
    for position, key in enumerate(chunk.keys):
        stored = stored_image(job.dataset, job.preprocess, key)
        if isinstance(stored, DataError):
            if job.on_bad_image == "error":
                named = str(stored).startswith(job.dataset.name)
                raise stored if named else DataError(f"{job.dataset.name}: {stored}")
            skipped.append(key)
            continue
        pixels, data = stored
        writer.add(data)
        kept.append(position)
        if hashed:
            pending.append(pixels)
            if len(pending) == _HASH_BATCH:
                hashes.append(dhash(np.stack(pending)))
                pending = []
    if hashed:
        if pending:
            hashes.append(dhash(np.stack(pending)))
        words = HASH_SIZE * HASH_SIZE // 64
        np.save(tmp / HASHES, np.concatenate(hashes) if hashes else np.empty((0, words), np.uint64))
    return kept, skipped, hashed


def _identity(job: ChunkJob, chunk: Chunk) -> dict:
    """What a finished chunk must match to be reused (its keys are not a set's: a chunk is never opened as one)."""
    return {"chunk_format_version": SHARD_FORMAT_VERSION, "set": job.final.name, "chunk": chunk.number,
            "start": chunk.start, "records": len(chunk.keys), "rows_per_shard": job.rows_per_shard,
            "rows_per_group": job.rows_per_group}


def finished_chunk(job: ChunkJob, chunk: Chunk) -> ChunkResult | None:
    """The chunk's result when its folder holds it, intact (its files match their sha256), for this layout,
    and usable under the job's on_bad_image (a chunk that skipped images is built again under "error", which
    then raises the image's own error)."""
    folder = chunk_path(job.final, chunk.number)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    identity = _identity(job, chunk)
    if {k: manifest.get(k) for k in identity} != identity or verify(folder):
        return None
    if manifest["skipped"] and job.on_bad_image == "error":
        return None
    return ChunkResult(chunk.number, tuple(manifest["kept"]), tuple(manifest["skipped"]), False,
                       tuple(manifest["shard_files"]), manifest["hashed"])
