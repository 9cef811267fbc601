"""Reading a shard set: its manifest (complete, of this format, and optionally still matching its sha256),
its records, and its stored images by row (`ShardReader`, torch-free random access with a per-process LRU
cache of row groups)."""
from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from scaling.data.base import DataError, Task
from scaling.data.preprocess import Preprocess, decode_png
from scaling.data.shards.layout import RECORDS, SHARD_FORMAT_VERSION
from scaling.files import MANIFEST, verify


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
        manifest, problem = read_manifest(path)
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


def read_manifest(path: Path, checked: bool = False) -> tuple[dict | None, str]:
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


def open_if_complete(path: Path, checked: bool = False) -> ShardSet | None:
    """The set at `path` when it is complete (and, `checked`, intact)."""
    return ShardSet.open(path) if read_manifest(path, checked)[0] is not None else None


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

