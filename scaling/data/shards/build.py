"""Building a shard set once per key: the dataset's records checked before any image is loaded, every image
loaded, preprocessed and written into a temporary sibling of the set's path, published there by rename under the
key's lock, and a line appended to the cache's build log."""
from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from scaling.data.base import RECORD_COLUMNS, SPLITS, DataError, Dataset
from scaling.data.preprocess import Preprocess
from scaling.data.shards.encode import stored_images
from scaling.data.shards.layout import RECORDS, SHARD_FORMAT_VERSION, group_rows, shard_path
from scaling.data.shards.read import ShardSet, open_if_complete, read_manifest
from scaling.data.shards.write import ShardWriter, write_records
from scaling.files import LockFiles, publish, space_for, written

BAD_IMAGE_POLICIES = ("error", "skip")
#: one JSON line per completed build, in the cache directory
BUILDS = "builds.jsonl"

_log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


def prepare_shards(dataset: Dataset, preprocess: Preprocess, cache_dir: str | Path, *,
                   on_bad_image: str = "error", rows_per_shard: int = 2048,
                   progress: Progress | None = None, workers: int = 1) -> ShardSet:
    """Materialise `dataset` under `preprocess` into the shard cache once, and return it.

    A complete shard set for the same key whose files still match their sha256 is reused without loading a
    single image; one that does not is rebuilt (see the package docstring). on_bad_image="error"
    raises the dataset's DataError (naming the file) at the first image that fails to load or does not
    match the dataset's channels; "skip" leaves such images out and records their keys (reusing a set
    with skipped images under "error" raises too). `progress(done, total)` is called as images are stored;
    without it a line goes to stderr every 10 s. `workers` > 1 loads and preprocesses images in that many
    processes (the dataset must be picklable)."""
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
                       rows_per_shard=rows_per_shard, progress=progress or _StderrProgress(final.name),
                       workers=workers)
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
           on_bad_image: str, rows_per_shard: int, progress: Progress, workers: int) -> None:
    shape = preprocess.stored_shape(dataset.channels)
    dtype = np.dtype(preprocess.storage)
    image_bytes = int(np.prod(shape)) * dtype.itemsize
    rows_per_group = group_rows(image_bytes, rows_per_shard)
    raw = preprocess.encoding == "raw"
    tmp = final.parent / f".{final.name}.tmp-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    # raw pixels: their uncompressed size bounds the set; PNG: only what was written before the disk filled
    needed = (lambda: (len(records) * image_bytes, False)) if raw else (lambda: (written(tmp), True))
    start = time.monotonic()
    tmp.mkdir()
    writer = None
    try:
        with space_for(final, needed):
            # raw pixels compress a little and decode fast with zstd; PNG bytes are already compressed
            writer = ShardWriter(tmp, pa.binary(image_bytes) if raw else pa.binary(),
                                 "zstd" if raw else "none", rows_per_shard, rows_per_group)
            keys = [str(k) for k in records["key"]]
            with closing(stored_images(dataset, preprocess, keys, workers)) as images:  # stops a pool early
                kept, skipped = _write_images(writer, images, keys, on_bad_image, progress)
            writer.close()
            if not kept:
                raise DataError(f"{dataset.name}: none of its {len(keys)} images could be loaded "
                                f"(first: {skipped[0]})")
            write_records(tmp / RECORDS, records.iloc[kept], dataset.task)
            manifest = {
                "format_version": SHARD_FORMAT_VERSION,
                "key": final.name,
                "dataset": dataset.name,
                "fingerprint": dataset.fingerprint(),
                "task": {"kind": dataset.task.kind, "classes": list(dataset.task.classes)},
                "channels": int(dataset.channels),
                "preprocess": preprocess.as_dict(),
                "shape": list(shape),
                "rows": len(kept),
                "rows_per_shard": rows_per_shard,
                "rows_per_group": rows_per_group,
                "files": {name: (tmp / name).stat().st_size for name in [RECORDS, *writer.files]},
                "skipped": skipped,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            published = publish(tmp, final, manifest)
            if not published:  # rename-wins: keep another preparer's complete result
                if open_if_complete(final) is None:
                    raise FileExistsError(f"{final} exists but is not a complete shard set")
                shutil.rmtree(tmp, ignore_errors=True)
            _log_build(final, published, len(kept), manifest["created"], start)
    except BaseException:
        if writer is not None:
            writer.abandon()
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_images(writer: ShardWriter, images: Iterator[bytes | DataError], keys: list[str], on_bad_image: str,
                  progress: Progress) -> tuple[list[int], list[str]]:
    """Every stored image into `writer`: (rows kept, keys skipped). A failed image raises its DataError under
    on_bad_image="error" and is skipped under "skip"."""
    kept, skipped = [], []
    for row, stored in enumerate(images):
        if isinstance(stored, DataError):
            if on_bad_image == "error":
                raise stored
            skipped.append(keys[row])
        else:
            writer.add(stored)
            kept.append(row)
        if (row + 1) % 64 == 0 or row + 1 == len(keys):
            progress(row + 1, len(keys))
    return kept, skipped


def _log_build(final: Path, published: bool, rows: int, created: str, start: float) -> None:
    """A line in the cache's build log: what was built, by whom, how long it took."""
    with open(final.parent / BUILDS, "a") as log:
        log.write(json.dumps({"set": final.name, "published": published, "host": socket.gethostname(),
                              "pid": os.getpid(), "rows": rows, "created": created,
                              "build_s": round(time.monotonic() - start, 3)}) + "\n")


def _remove_leftovers(final: Path) -> None:
    """Temporary dirs of dead preparers of this key, and a final dir without a valid manifest. Only called
    under the key's lock, so no live preparer owns them (but one whose lock was taken over as stale, whose
    rename then fails or wins; see `scaling.files`)."""
    for stale in final.parent.glob(f".{final.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    if final.exists():
        shutil.rmtree(final)


class _StderrProgress:
    """A compact progress line every `interval` seconds, only for preparations that last that long."""

    def __init__(self, name: str, interval: float = 10.0):
        self.name, self.interval = name, interval
        self.start = self.last = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last < self.interval and done < total:
            return
        if done == total and now - self.start < self.interval:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        print(f"shards {self.name}: {done}/{total} images, {rate:.0f}/s, "
              f"{(total - done) / max(rate, 1e-9):.0f} s left", file=sys.stderr, flush=True)

