"""Preprocessed images materialised once per (dataset, preprocessing) as Parquet shards in a cache.

Layout of one shard set, `cache_dir / f"{dataset.name}-{key}"` (key: content hash of the dataset's
fingerprint, the preprocessing and SHARD_FORMAT_VERSION):

    records.parquet        index, split, key, patient, y (one row per stored image, in dataset order)
    shard-00000.parquet    index, image (raw pixel bytes or PNG bytes); row groups of a few MiB
    ...
    manifest.json          written last: format, parameters, shapes, every file with its size and sha256,
                           skipped keys

A shard set is built in a temporary sibling directory that is renamed into place after its manifest is
written (scaling/files.py), so a directory at the final path is complete; one without a valid manifest
(tampered with, or from another format version) is never read and is rebuilt. Concurrent preparers of one key
(two studies sharing a cache) serialise on a `filelock.FileLock` next to it (flock: released by the kernel
when a preparer dies); the loser of the race finds the winner's result and reuses it. Every build that
completes appends a line to `cache_dir/builds.jsonl` (what was built, by whom, how long it took).

Corruption: a preparer that finds a set re-reads every file against the sha256 recorded when it was published
(`prepare_shards`, once per study run in the driver, before any worker reads it); a set that no longer matches
is rebuilt, with a warning naming the file, since shards are a pure function of the dataset and can always be
made again. Workers opening a set (`ShardSet.open`) check only sizes: hashing terabytes per job would cost more
than the jobs. A full file system while building raises `scaling.files.NoSpace` naming the set and the space
it needs, and leaves nothing at the final path.

Reading: `ShardReader` (torch-free random access with a per-process LRU cache of row groups) and
`ShardDataset` (the map-style torch dataset on top of it).
"""
from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, suppress
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock

from scaling.data.base import RECORD_COLUMNS, SPLITS, DataError, Dataset, Task
from scaling.data.preprocess import Preprocess, decode_png, encode_png, preprocess_image
from scaling.files import MANIFEST, publish, space_for, verify, written

#: bump when the on-disk layout changes; old shard sets then get a new key and are rebuilt
SHARD_FORMAT_VERSION = 1
RECORDS = "records.parquet"
#: target size of one Parquet row group: the unit a reader decodes and caches
GROUP_BYTES = 4 << 20
BAD_IMAGE_POLICIES = ("error", "skip")
#: one JSON line per completed build, in the cache directory
BUILDS = "builds.jsonl"

_log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


def shard_key(dataset: Dataset, preprocess: Preprocess) -> str:
    """Content hash of everything that determines the stored pixels."""
    spec = {
        "format": SHARD_FORMAT_VERSION,
        "dataset": dataset.name,
        "fingerprint": dataset.fingerprint(),
        "channels": int(dataset.channels),
        "preprocess": preprocess.as_dict(),
    }
    return sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def shard_path(dataset: Dataset, preprocess: Preprocess, cache_dir: str | Path) -> Path:
    """Where the shard set of (dataset, preprocess) lives (or will live) under `cache_dir`."""
    return Path(cache_dir) / f"{dataset.name}-{shard_key(dataset, preprocess)}"


@dataclass(frozen=True, eq=False)
class ShardSet:
    """A complete shard set on disk. Open one with `ShardSet.open(path)` or get it from `prepare_shards`.

    `records` has columns index (row id in the shard set, also the frame's index), split, key, patient and
    y (same convention as `Dataset.records`); images whose loading failed under on_bad_image="skip" are
    absent from it and listed in `skipped_keys`."""

    path: Path
    records: pd.DataFrame
    task: Task
    channels: int
    preprocess: Preprocess
    skipped_keys: tuple[str, ...]
    #: shape of one stored image: (H, W) or (H, W, 3)
    shape: tuple[int, ...]
    files: tuple[str, ...]
    rows_per_shard: int
    rows_per_group: int
    #: total bytes of the shard files (encoded size for PNG)
    stored_bytes: int

    @property
    def skipped(self) -> int:
        return len(self.skipped_keys)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.preprocess.storage).newbyteorder("<")

    def __len__(self) -> int:
        return len(self.records)

    @classmethod
    def open(cls, path: str | Path) -> ShardSet:
        """Open a complete shard set. Raises DataError naming the directory when it has no valid manifest
        (an interrupted or foreign write) or a listed file is missing or has the wrong size."""
        path = Path(path)
        manifest, problem = _read_manifest(path)
        if manifest is None:
            raise DataError(f"{path}: not a complete shard set ({problem})")
        preprocess = Preprocess(**manifest["preprocess"])
        task = Task(manifest["task"]["kind"], tuple(manifest["task"]["classes"]))
        return cls(
            path=path,
            records=_read_records(path / RECORDS, task),
            task=task,
            channels=manifest["channels"],
            preprocess=preprocess,
            skipped_keys=tuple(manifest["skipped"]),
            shape=tuple(manifest["shape"]),
            files=tuple(name for name in manifest["files"] if name != RECORDS),
            rows_per_shard=manifest["rows_per_shard"],
            rows_per_group=manifest["rows_per_group"],
            stored_bytes=sum(size for name, size in manifest["files"].items() if name != RECORDS),
        )

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """Stored pixels of the given rows, stacked: (n, H, W) or (n, H, W, 3) in the storage dtype."""
        return ShardReader(self).take(indices)


def prepare_shards(dataset: Dataset, preprocess: Preprocess, cache_dir: str | Path, *,
                   on_bad_image: str = "error", rows_per_shard: int = 2048,
                   progress: Progress | None = None, workers: int = 1) -> ShardSet:
    """Materialise `dataset` under `preprocess` into the shard cache once, and return it.

    A complete shard set for the same key whose files still match their sha256 is reused without loading a
    single image; one that does not is rebuilt (see the module docstring). on_bad_image="error"
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
    shards = _open_if_complete(final, checked=True)
    if shards is None:
        with FileLock(final.parent / f"{final.name}.lock"):
            manifest, problem = _read_manifest(final, checked=True)  # another process may have finished it
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


# ---------------------------------------------------------------------------------------------- writing

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


def _stored_bytes(dataset: Dataset, preprocess: Preprocess, key: str) -> bytes | DataError:
    """One image as stored, or the DataError that loading or preprocessing it raised."""
    try:
        pixels = preprocess_image(dataset.load(key), preprocess, dataset.channels, source=f"{dataset.name} {key}")
    except DataError as err:
        return err
    if preprocess.encoding == "png":
        return encode_png(pixels)
    return np.ascontiguousarray(pixels, dtype=np.dtype(preprocess.storage).newbyteorder("<")).tobytes()


_worker_job: tuple[Dataset, Preprocess] | None = None


def _init_worker(dataset: Dataset, preprocess: Preprocess) -> None:
    global _worker_job
    _worker_job = (dataset, preprocess)


def _worker_stored_bytes(key: str) -> bytes | DataError:
    return _stored_bytes(*_worker_job, key)


def _stored_images(dataset: Dataset, preprocess: Preprocess, keys: list[str],
                   workers: int) -> Iterator[bytes | DataError]:
    if workers == 1:
        yield from (_stored_bytes(dataset, preprocess, key) for key in keys)
        return
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(dataset, preprocess))
    try:
        block = 256 * workers  # submitted a block at a time: bounded memory, and a failure stops soon
        for start in range(0, len(keys), block):
            yield from pool.map(_worker_stored_bytes, keys[start:start + block], chunksize=16)
    finally:
        pool.shutdown(cancel_futures=True)


class _ShardWriter:
    """Appends images to shard-NNNNN.parquet files of `rows_per_shard` rows, in row groups."""

    def __init__(self, directory: Path, image_type: pa.DataType, compression: str,
                 rows_per_shard: int, rows_per_group: int):
        self.directory, self.rows_per_shard, self.rows_per_group = directory, rows_per_shard, rows_per_group
        self.schema = pa.schema([("index", pa.int64()), ("image", image_type)])
        self.compression = compression
        self.files: list[str] = []
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._pending: list[bytes] = []

    def add(self, image: bytes) -> None:
        self._pending.append(image)
        if len(self._pending) == self.rows_per_group or (self.rows + len(self._pending)) % self.rows_per_shard == 0:
            self._flush()

    def close(self) -> None:
        self._flush()
        if self._writer is not None:
            self._writer.close()

    def abandon(self) -> None:
        """Release the open file of a failed build (its directory is removed next), e.g. of a full disk."""
        if self._writer is not None:
            with suppress(OSError):
                self._writer.close()
            self._writer = None

    def _flush(self) -> None:
        if not self._pending:
            return
        if self.rows % self.rows_per_shard == 0:
            if self._writer is not None:
                self._writer.close()
            self.files.append(f"shard-{len(self.files):05d}.parquet")
            self._writer = pq.ParquetWriter(self.directory / self.files[-1], self.schema,
                                            compression=self.compression)
        index = pa.array(np.arange(self.rows, self.rows + len(self._pending)), pa.int64())
        table = pa.Table.from_arrays([index, pa.array(self._pending, self.schema.field("image").type)],
                                     schema=self.schema)
        self._writer.write_table(table, row_group_size=self.rows_per_group)
        self.rows += len(self._pending)
        self._pending = []


def _build(dataset: Dataset, preprocess: Preprocess, records: pd.DataFrame, final: Path, *,
           on_bad_image: str, rows_per_shard: int, progress: Progress, workers: int) -> None:
    shape = preprocess.stored_shape(dataset.channels)
    dtype = np.dtype(preprocess.storage)
    image_bytes = int(np.prod(shape)) * dtype.itemsize
    rows_per_group = max(1, min(rows_per_shard, GROUP_BYTES // image_bytes))
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
            writer = _ShardWriter(tmp, pa.binary(image_bytes) if raw else pa.binary(),
                                  "zstd" if raw else "none", rows_per_shard, rows_per_group)
            keys = [str(k) for k in records["key"]]
            kept, skipped = [], []
            with closing(_stored_images(dataset, preprocess, keys, workers)) as images:  # stops a pool early
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
            writer.close()
            if not kept:
                raise DataError(f"{dataset.name}: none of its {len(keys)} images could be loaded "
                                f"(first: {skipped[0]})")
            _write_records(tmp / RECORDS, records.iloc[kept], dataset.task)
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
                if _open_if_complete(final) is None:
                    raise FileExistsError(f"{final} exists but is not a complete shard set")
                shutil.rmtree(tmp, ignore_errors=True)
            with open(final.parent / BUILDS, "a") as log:
                log.write(json.dumps({"set": final.name, "published": published, "host": socket.gethostname(),
                                      "pid": os.getpid(), "rows": len(kept), "created": manifest["created"],
                                      "build_s": round(time.monotonic() - start, 3)}) + "\n")
    except BaseException:
        if writer is not None:
            writer.abandon()
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_records(path: Path, records: pd.DataFrame, task: Task) -> None:
    if task.kind == "multilabel":
        y = pa.array([np.asarray(v, dtype=np.float32) for v in records["y"]], pa.list_(pa.float32()))
    else:
        y = pa.array(records["y"].to_numpy(dtype=np.int64), pa.int64())
    table = pa.table({
        "index": pa.array(np.arange(len(records)), pa.int64()),
        "split": pa.array(records["split"].astype(str).tolist(), pa.string()),
        "key": pa.array(records["key"].astype(str).tolist(), pa.string()),
        "patient": pa.array(records["patient"].astype(str).tolist(), pa.string()),
        "y": y,
    })
    pq.write_table(table, path)


def _remove_leftovers(final: Path) -> None:
    """Temporary dirs of dead preparers of this key, and a final dir without a valid manifest. Only called
    under the lock, so no live preparer owns them."""
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


# ---------------------------------------------------------------------------------------------- reading

def _read_manifest(path: Path, checked: bool = False) -> tuple[dict | None, str]:
    """(manifest, "") when `path` holds a complete shard set of this format, else (None, why not).
    `checked`: also compare every file with the sha256 recorded when the set was published."""
    try:
        with open(path / MANIFEST) as fh:
            manifest = json.load(fh)
    except FileNotFoundError:
        return None, f"no {MANIFEST}"
    except (OSError, ValueError) as err:
        return None, f"unreadable {MANIFEST}: {err}"
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if version != SHARD_FORMAT_VERSION:
        return None, f"format version {version}, expected {SHARD_FORMAT_VERSION}"
    for name, size in manifest.get("files", {}).items():
        try:
            actual = (path / name).stat().st_size
        except FileNotFoundError:
            return None, f"{name} is missing"
        if actual != size:
            return None, f"{name} has {actual} bytes, the manifest says {size}"
    problem = verify(path) if checked else ""
    return (None, problem) if problem else (manifest, "")


def _open_if_complete(path: Path, checked: bool = False) -> ShardSet | None:
    """The set at `path` when it is complete (and, `checked`, intact)."""
    return ShardSet.open(path) if _read_manifest(path, checked)[0] is not None else None


def _read_records(path: Path, task: Task) -> pd.DataFrame:
    records = pq.read_table(path).to_pandas()
    if task.kind == "multilabel":
        records["y"] = [np.asarray(v, dtype=np.float32) for v in records["y"]]
    records.index = pd.Index(records["index"].to_numpy(), name=None)
    return records


class ShardReader:
    """Random access to the stored images of a shard set, without torch.

    Reading goes by Parquet row group (a few MiB): a group is read from the memory-mapped file once and
    kept in a per-process LRU cache of `cache_groups` groups, so neighbouring rows cost one read. File
    handles and the cache are per process: they are dropped when the reader is pickled to a spawned worker,
    and file handles are re-opened after a fork (an inherited handle must not be shared)."""

    def __init__(self, shards: ShardSet, cache_groups: int = 16):
        self.shards = shards
        self.cache_groups = max(1, int(cache_groups))
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._files: dict[int, pq.ParquetFile] = {}
        self._cached_group = functools.lru_cache(maxsize=self.cache_groups)(self._read_group)

    def __getstate__(self) -> dict:
        return {"shards": self.shards, "cache_groups": self.cache_groups}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset()

    def locate(self, index: int) -> tuple[int, int, int]:
        """(file number, row group, row within the group) of a row id."""
        if not 0 <= index < len(self.shards):
            raise IndexError(f"row {index} out of range for a shard set of {len(self.shards)} images")
        file_no, row = divmod(int(index), self.shards.rows_per_shard)
        group, row = divmod(row, self.shards.rows_per_group)
        return file_no, group, row

    def _read_group(self, file_no: int, group: int) -> np.ndarray | pa.BinaryArray:
        """A row group's images: an (n, *shape) array for raw encoding, a BinaryArray of PNGs otherwise."""
        if os.getpid() != self._pid:  # forked: the parent's cached groups stay valid, its handles do not
            self._pid, self._files = os.getpid(), {}
        handle = self._files.get(file_no)
        if handle is None:
            handle = pq.ParquetFile(self.shards.path / self.shards.files[file_no], memory_map=True)
            self._files[file_no] = handle
        column = handle.read_row_group(group, columns=["image"]).column("image").combine_chunks()
        if self.shards.preprocess.encoding == "png":
            return column
        width = column.type.byte_width
        data = np.frombuffer(column.buffers()[1], dtype=np.uint8, count=len(column) * width,
                             offset=column.offset * width)
        return data.view(self.shards.dtype).reshape(len(column), *self.shards.shape)

    def stored(self, index: int) -> np.ndarray | bytes:
        """One image as stored: the pixel array (raw) or its PNG bytes."""
        file_no, group, row = self.locate(index)
        images = self._cached_group(file_no, group)
        return images[row] if isinstance(images, np.ndarray) else images[row].as_py()

    def decode(self, stored: np.ndarray | bytes) -> np.ndarray:
        return stored if isinstance(stored, np.ndarray) else decode_png(stored, self.shards.dtype)

    def image(self, index: int) -> np.ndarray:
        """One image's stored pixels, decoded."""
        return self.decode(self.stored(index))

    def take_stored(self, indices: Sequence[int]) -> np.ndarray | list[bytes]:
        """Many images as stored, each row group read once (bypassing the cache): a dense array for raw
        encoding, a list of PNG bytes otherwise."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        places = np.array([self.locate(i) for i in indices], dtype=np.int64).reshape(-1, 3)
        raw = self.shards.preprocess.encoding == "raw"
        out: np.ndarray | list = np.empty((len(indices), *self.shards.shape), self.shards.dtype) if raw \
            else [b""] * len(indices)
        for file_no, group in np.unique(places[:, :2], axis=0):
            where = np.flatnonzero((places[:, 0] == file_no) & (places[:, 1] == group))
            images = self._read_group(int(file_no), int(group))
            if raw:
                out[where] = images[places[where, 2]]
            else:
                for position in where:
                    out[position] = images[int(places[position, 2])].as_py()
        return out

    def take(self, indices: Sequence[int]) -> np.ndarray:
        """Many images' stored pixels, decoded and stacked."""
        stored = self.take_stored(indices)
        if isinstance(stored, np.ndarray):
            return stored
        return np.stack([self.decode(item) for item in stored]) if stored else \
            np.empty((0, *self.shards.shape), self.shards.dtype)


def pixels_to_tensor(pixels: np.ndarray, channels: int | None = None):
    """A batch of stored pixels, (B, H, W) or (B, H, W, 3) in uint8/uint16, as a float32 (B, C, H, W)
    tensor in [0, 1]; `channels=3` replicates grayscale."""
    import torch

    images = np.divide(pixels, np.float32(np.iinfo(pixels.dtype).max), dtype=np.float32)
    images = images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)
    tensor = torch.from_numpy(np.ascontiguousarray(images))
    if channels == 3 and tensor.shape[1] == 1:
        tensor = tensor.expand(-1, 3, -1, -1).contiguous()
    return tensor


class ShardDataset:
    """Map-style torch dataset over (a subset of) a shard set: item i is (image, label[, row id]).

    image: float32 tensor CxHxW in [0, 1] (C = the shard set's channels, or 3 with `channels=3`, which
    replicates grayscale), passed through `transform` when given. label: float32 scalar (binary, for
    BCE-with-logits), int64 scalar (multiclass) or float32 vector with NaN for unknown (multilabel).

    Why map-style: the training loop needs weighted sampling (class-balanced oversampling) and per-epoch
    shuffling, which samplers give a map-style dataset for free. Across DDP ranks use a
    `torch.utils.data.DistributedSampler` (equal-length ranks for training; it pads by repeating a few
    items) or, to see every item exactly once (evaluation), `partition(rank, world_size)`. Across DataLoader
    workers nothing is needed: the loader hands each batch of indices to one worker.

    Memory: when the selected images' stored bytes fit in `memory_bytes`, they are read into memory once,
    here in the constructing process; forked loader workers share those pages (spawned ones get a copy).
    Larger selections are read lazily through a per-process LRU cache of row groups of about
    `memory_bytes`; with lazy reading use `persistent_workers=True` so worker caches survive epochs.
    PNG shards keep encoded bytes in memory and decode them in the loader workers. Items are converted a
    batch at a time (`__getitems__`), so in-memory raw shards are fastest with `num_workers=0`: loader
    workers then add only inter-process transfer (see benchmarks/bench_shards.py).
    """

    def __init__(self, shards: ShardSet, indices: Sequence[int] | None = None, *, channels: int | None = None,
                 transform: Callable | None = None, return_index: bool = False, memory_bytes: int = 2 << 30):
        self.shards = shards
        self.indices = np.arange(len(shards), dtype=np.int64) if indices is None \
            else np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(self.indices) and (self.indices.min() < 0 or self.indices.max() >= len(shards)):
            raise IndexError(f"indices must lie in [0, {len(shards)}) for {shards.path.name}, got range "
                             f"[{self.indices.min()}, {self.indices.max()}]")
        if channels not in (None, shards.channels) and not (channels == 3 and shards.channels == 1):
            raise ValueError(f"channels={channels} for a {shards.channels}-channel shard set; "
                             "only grayscale -> 3 replication is supported")
        self.channels = channels or shards.channels
        self.transform, self.return_index, self.memory_bytes = transform, return_index, memory_bytes
        ys = shards.records["y"].to_numpy()[self.indices]
        #: labels of the selected rows: (n,) int64 or (n, classes) float32 for multilabel
        self.labels = ys.astype(np.int64) if shards.task.kind != "multilabel" \
            else np.stack(ys).astype(np.float32) if len(ys) else np.zeros((0, len(shards.task.classes)), np.float32)
        per_image = shards.stored_bytes / max(len(shards), 1)
        if shards.preprocess.encoding == "raw":
            per_image = int(np.prod(shards.shape)) * shards.dtype.itemsize
        group_bytes = max(per_image * shards.rows_per_group, 1)
        self._reader = ShardReader(shards, cache_groups=max(2, int(memory_bytes // group_bytes)))
        self._preloaded = self._reader.take_stored(self.indices) \
            if per_image * len(self.indices) <= memory_bytes else None

    def __len__(self) -> int:
        return len(self.indices)

    def partition(self, rank: int, world_size: int) -> ShardDataset:
        """The rank's contiguous share of this dataset's items: over all ranks every item exactly once
        (sizes differ by at most one)."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in [0, {world_size}), got {rank}")
        return ShardDataset(self.shards, np.array_split(self.indices, world_size)[rank], channels=self.channels,
                            transform=self.transform, return_index=self.return_index,
                            memory_bytes=self.memory_bytes)

    def __getitem__(self, i: int):
        return self.__getitems__([i])[0]

    def __getitems__(self, positions: Sequence[int]) -> list[tuple]:
        """A batch of items, converted together (the DataLoader calls this with a batch's indices):
        one gather and one float conversion per batch instead of per image."""
        import torch

        positions = np.asarray(positions, dtype=np.int64)
        if self._preloaded is None:
            pixels = np.stack([self._reader.image(int(index)) for index in self.indices[positions]])
        elif isinstance(self._preloaded, np.ndarray):
            pixels = self._preloaded[positions]
        else:
            pixels = np.stack([self._reader.decode(self._preloaded[p]) for p in positions])
        images = pixels_to_tensor(pixels, self.channels).unbind(0)
        if self.transform is not None:
            images = [self.transform(image) for image in images]
        dtype = torch.int64 if self.shards.task.kind == "multiclass" else torch.float32
        labels = torch.as_tensor(self.labels[positions], dtype=dtype).unbind(0)
        if self.return_index:
            return list(zip(images, labels, self.indices[positions].tolist()))
        return list(zip(images, labels))
