"""Building a shard set once per key: the dataset's records checked before any image is loaded, the set's
chunks built (`chunk`: each loads, preprocesses, encodes and hashes its images into its own folder) by an
executor (`scaling.data.executors`: in this process, a process pool, or the Ray cluster's), then assembled into a
temporary sibling of the set's path and published there by rename, all under the key's lock; a line is appended
to the cache's build log."""
from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from scaling.data.base import RECORD_COLUMNS, SPLITS, DataError, Dataset
from scaling.data.executors import MapChunks, in_process, process_pool
from scaling.data.preprocess import Preprocess
from scaling.data.shards.chunk import HASHES, Chunk, ChunkJob, ChunkResult, build_chunk, chunk_path, chunks_dir
from scaling.data.shards.layout import RECORDS, SHARD_FORMAT_VERSION, group_rows, shard_path
from scaling.data.shards.read import ShardSet, open_if_complete, read_manifest
from scaling.data.shards.write import write_records
from scaling.files import LockFiles, publish, space_for, written

BAD_IMAGE_POLICIES = ("error", "skip")
#: one JSON line per completed build, in the cache directory
BUILDS = "builds.jsonl"

_log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


def prepare_shards(dataset: Dataset, preprocess: Preprocess, cache_dir: str | Path, *,
                   on_bad_image: str = "error", rows_per_shard: int = 2048,
                   progress: Progress | None = None, workers: int = 1,
                   map_chunks: MapChunks | None = None) -> ShardSet:
    """Materialise `dataset` under `preprocess` into the shard cache once, and return it.

    A complete shard set for the same key whose files still match their sha256 is reused without loading a
    single image; one that does not is rebuilt (see the package docstring). on_bad_image="error"
    raises the dataset's DataError (naming the file) at the first image that fails to load or does not
    match the dataset's channels; "skip" leaves such images out and records their keys (reusing a set
    with skipped images under "error" raises too). The set is built chunk by chunk (`rows_per_shard` records
    each): `map_chunks` runs them (default: `workers` processes of this machine; the dataset must be picklable
    for more than one), and a build that was killed resumes from the chunks it finished. `progress(done,
    total)` is called as chunks end (images built in this run, images left to build and built); without it a
    line goes to stderr every 10 s."""
    if on_bad_image not in BAD_IMAGE_POLICIES:
        raise ValueError(f"on_bad_image must be one of {BAD_IMAGE_POLICIES}, got {on_bad_image!r}")
    if rows_per_shard < 1 or workers < 1:
        raise ValueError(f"rows_per_shard and workers must be >= 1, got {rows_per_shard} and {workers}")
    preprocess.check_channels(dataset.channels)
    records = _checked_records(dataset)
    final = shard_path(dataset, preprocess, cache_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    shards = open_if_complete(final, checked=True)
    if shards is None:
        with LockFiles(final.parent).hold(f"{final.name}.lock"):
            manifest, problem = read_manifest(final, checked=True)  # another process may have finished it
            if manifest is None:
                if final.exists():
                    _log.warning("shard set %s is incomplete or corrupted (%s); rebuilding it", final, problem)
                _remove_leftovers(final)
                _build(dataset, preprocess, records, final, on_bad_image=on_bad_image,
                       rows_per_shard=rows_per_shard, progress=progress or ProgressLine(final.name),
                       map_chunks=map_chunks or process_pool(workers))
            shards = ShardSet.open(final)
    if shards.skipped and on_bad_image == "error":
        listed = ", ".join(shards.skipped_keys[:5]) + (" ..." if shards.skipped > 5 else "")
        raise DataError(f"{final}: {shards.skipped} image(s) of {dataset.name} could not be loaded "
                        f"({listed}); pass on_bad_image='skip' to use the set without them")
    return shards


def _checked_records(dataset: Dataset) -> pd.DataFrame:
    """The dataset's records, checked before any image is loaded."""
    records = dataset.records()
    missing = [c for c in RECORD_COLUMNS if c not in records.columns]
    if missing:
        raise DataError(f"{dataset.name}: records() lacks column(s) {missing}; expected {list(RECORD_COLUMNS)}")
    if len(records) == 0:
        raise DataError(f"{dataset.name}: records() is empty")
    bad_splits = sorted(set(records["split"]) - set(SPLITS))
    if bad_splits:
        raise DataError(f"{dataset.name}: unknown split(s) {bad_splits}; expected one of {SPLITS}")
    task = dataset.task
    if task.kind == "multilabel":
        lengths = {len(np.atleast_1d(y)) for y in records["y"]}
        if lengths != {len(task.classes)}:
            raise DataError(f"{dataset.name}: multilabel y must have {len(task.classes)} entries, "
                            f"found lengths {sorted(lengths)}")
    else:
        y = pd.to_numeric(records["y"], errors="coerce").to_numpy(dtype=float)
        limit = 2 if task.kind == "binary" else len(task.classes)
        bad = ~np.isfinite(y) | (y != np.round(y)) | (y < 0) | (y >= limit)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(f"{dataset.name}: record {row} (key {records['key'].iloc[row]!r}) has label "
                            f"{records['y'].iloc[row]!r}; expected an int in [0, {limit})")
    return records.reset_index(drop=True)


def _build(dataset: Dataset, preprocess: Preprocess, records: pd.DataFrame, final: Path, *,
           on_bad_image: str, rows_per_shard: int, progress: Progress, map_chunks: MapChunks) -> None:
    image_bytes = int(np.prod(preprocess.stored_shape(dataset.channels))) * np.dtype(preprocess.storage).itemsize
    job = ChunkJob(dataset, preprocess, final, rows_per_shard, group_rows(image_bytes, rows_per_shard),
                   on_bad_image, len(records))
    keys = [str(k) for k in records["key"]]
    chunks = [Chunk(n, start, tuple(keys[start:start + rows_per_shard]))
              for n, start in enumerate(range(0, len(keys), rows_per_shard))]
    start = time.monotonic()
    try:
        results = _build_chunks(job, chunks, progress, map_chunks)
    finally:
        if chunks_dir(final).is_dir() and not any(chunks_dir(final).iterdir()):
            chunks_dir(final).rmdir()
    kept = [chunk.start + position for chunk, result in zip(chunks, results) for position in result.kept]
    skipped = [key for result in results for key in result.skipped]
    if not kept:
        raise DataError(f"{dataset.name}: none of its {len(keys)} images could be loaded (first: {skipped[0]})")
    tmp = final.parent / f".{final.name}.tmp-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        with space_for(final, lambda: (written(tmp), True)):
            files = _assemble(job, chunks, results, tmp, repack=bool(skipped))
            write_records(tmp / RECORDS, records.iloc[kept], dataset.task)
            manifest = {
                "format_version": SHARD_FORMAT_VERSION,
                "key": final.name,
                "dataset": dataset.name,
                "fingerprint": dataset.fingerprint(),
                "task": {"kind": dataset.task.kind, "classes": list(dataset.task.classes)},
                "channels": int(dataset.channels),
                "preprocess": preprocess.as_dict(),
                "shape": list(preprocess.stored_shape(dataset.channels)),
                "rows": len(kept),
                "rows_per_shard": rows_per_shard,
                "rows_per_group": job.rows_per_group,
                "files": {name: (tmp / name).stat().st_size for name in [RECORDS, *files]},
                "hashes": HASHES if (tmp / HASHES).exists() else None,
                "skipped": skipped,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            published = publish(tmp, final, manifest)
        if not published:  # rename-wins: keep another preparer's complete result
            if open_if_complete(final) is None:
                raise FileExistsError(f"{final} exists but is not a complete shard set")
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(chunks_dir(final), ignore_errors=True)
    built = sum(result.built for result in results)
    _log_build(final, published, len(kept), manifest["created"], start, built, len(results) - built)


def _build_chunks(job: ChunkJob, chunks: list[Chunk], progress: Progress,
                  map_chunks: MapChunks) -> list[ChunkResult]:
    """Every chunk built (or found finished) by `map_chunks`, in chunk order; progress as each ends."""
    results: list[ChunkResult | None] = [None] * len(chunks)
    done, total = 0, sum(len(chunk.keys) for chunk in chunks)
    progress(done, total)
    for position, result in (in_process if len(chunks) == 1 else map_chunks)(build_chunk, job, chunks):
        results[position] = result
        if result.built:
            done += len(chunks[position].keys)
        else:  # finished by an earlier run: not part of this one's work
            total -= len(chunks[position].keys)
        progress(done, total)
    return results


def _assemble(job: ChunkJob, chunks: list[Chunk], results: list[ChunkResult], tmp: Path, repack: bool) -> list[str]:
    """The chunks' shard files and hashes gathered into the set's folder `tmp`: hard links of the chunks' files
    (each chunk wrote the set's file of its number), or, when images were skipped and the rows after them
    move, the stored images written again in order, as one writer of the whole set would have (no image is
    decoded). Returns the shard files."""
    folders = [chunk_path(job.final, chunk.number) for chunk in chunks]
    if repack:
        writer = job.writer(tmp)
        try:
            for folder, result in zip(folders, results):
                for name in result.files:
                    for batch in pq.ParquetFile(folder / name).iter_batches(columns=["image"]):
                        for image in batch.column(0):
                            writer.add(image.as_py())
            writer.close()
        except BaseException:
            writer.abandon()
            raise
        files = writer.files
    else:
        files = [name for result in results for name in result.files]
        for folder, result in zip(folders, results):
            for name in result.files:
                os.link(folder / name, tmp / name)
    if all(result.hashed for result in results):
        with open(tmp / HASHES, "wb") as f:
            np.save(f, np.concatenate([np.load(folder / HASHES) for folder in folders]))
    return files


def _log_build(final: Path, published: bool, rows: int, created: str, start: float, built: int,
               reused: int) -> None:
    """A line in the cache's build log: what was built, by whom, how long it took, how many of its chunks this
    run built and how many an earlier (killed) run had finished."""
    with open(final.parent / BUILDS, "a") as log:
        log.write(json.dumps({"set": final.name, "published": published, "host": socket.gethostname(),
                              "pid": os.getpid(), "rows": rows, "created": created,
                              "build_s": round(time.monotonic() - start, 3), "chunks_built": built,
                              "chunks_reused": reused}) + "\n")


def _remove_leftovers(final: Path) -> None:
    """Temporary dirs of dead preparers of this key (of the set and of its chunks; finished chunks stay), and a
    final dir without a valid manifest. Only called under the key's lock, so no live preparer owns them (but one
    whose lock was taken over as stale, whose rename then fails or wins; see `scaling.files`)."""
    for stale in [*final.parent.glob(f".{final.name}.tmp-*"), *chunks_dir(final).glob(".chunk-*.tmp-*")]:
        shutil.rmtree(stale, ignore_errors=True)
    if final.exists():
        shutil.rmtree(final)


class ProgressLine:
    """A progress line on stderr (images built, images/s, time left) every `interval` seconds, only for
    preparations that last that long (interval 0: one as each chunk ends)."""

    def __init__(self, name: str, interval: float = 10.0):
        self.name, self.interval = name, interval
        self.start: float | None = None  # the first call: the build's start (after any cluster started)

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if self.start is None:
            self.start = self.last = now
        if not done or now - self.last < self.interval and done < total:
            return
        if done == total and now - self.start < self.interval:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        left = (total - done) / rate if rate else float("inf")
        print(f"shards {self.name}: {done:,}/{total:,} images, {rate:,.1f} images/s, {_duration(left)} left",
              file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "? s"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 else \
        f"{seconds / 3600:.1f} h"
