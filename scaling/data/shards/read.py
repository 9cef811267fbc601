"""Reading a shard set: its manifest (complete, of this format, and optionally still matching its sha256),
its records, and its stored images by row (`ShardReader`, torch-free random access that reads only the row
groups of the rows asked for)."""
from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from scaling.data.base import DataError, Task
from scaling.data.encoding import decode_image
from scaling.data.preprocess import Preprocess
from scaling.data.shards.layout import RECORDS, SHARD_FORMAT_VERSION
from scaling.files import MANIFEST, verify

#: parquet.thrift: PageType.DICTIONARY_PAGE, and the compact protocol's header byte of fields 1, 2, 3 (each the next
#: field id, type i32) with which Thrift-generated writers (pyarrow, parquet-java) begin a PageHeader: type,
#: uncompressed and compressed size
DICTIONARY_PAGE, NEXT_I32_FIELD = 2, 0x15
ZSTD, ZSTD_MAGIC = pa.Codec("zstd"), b"\x28\xb5\x2f\xfd"


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
    #: total bytes of the shard files (the encoded size, except for raw pixels)
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


def _page_data(page: bytes) -> tuple[int, int, memoryview | bytes]:
    """(type, uncompressed size, compressed data) of a Parquet page read whole (header, then data), from the first
    three fields of its Thrift compact header; (-1, -1, b"") when it does not begin with them."""
    fields, at = [], 0
    while len(fields) < 3 and at < len(page) and page[at] == NEXT_I32_FIELD:
        value, shift, at = 0, 0, at + 1
        while at < len(page):  # a zigzag varint
            value, shift, at = value | (page[at] & 0x7F) << shift, shift + 7, at + 1
            if page[at - 1] < 0x80:
                break
        fields.append(value >> 1 ^ -(value & 1))
    if len(fields) < 3 or not 0 < fields[2] <= len(page) - at:
        return -1, -1, b""
    return fields[0], fields[1], memoryview(page)[len(page) - fields[2]:]  # the data ends the page


class ShardReader:
    """Random access to the stored images of a shard set, without torch.

    A read goes by Parquet row group, the smallest unit Parquet reads: `take` reads each row group that holds
    a requested row once (all of one file's groups in one call) and nothing else, so with the small groups of
    large images (`layout.GROUP_BYTES`) a random batch reads about the bytes of its own images. Nothing is
    cached here (the OS's page cache is the cache). Files are read with plain positioned reads, not memory
    maps: predictable on parallel file systems, and counted in /proc/self/io (benchmarks/bench_loader.py). File
    handles are per process: dropped when the reader is pickled to a spawned worker, re-opened after a fork (an
    inherited handle must not be shared).

    Raw images of one image per row group (512 px: `layout.group_rows`) skip Parquet's reader: pyarrow stores
    such an image as its column chunk's dictionary page (a dictionary of one value, zstd-compressed), so a read
    is one pread of that page and one zstd decompression (`_page_images`; a batch's pages are announced to the
    kernel first, so that cold reads overlap). Through `read_row_groups` a 512 px image cost 70-100 us more
    (~300 us in all: Parquet's per-row-group setup and its copies into the table), which held lazy raw batches
    at 0.72-0.78 of the in-memory decode rate (benchmarks/bench_loader.py; now about 0.9)."""

    def __init__(self, shards: ShardSet):
        self.shards = shards
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._files: dict[int, pq.ParquetFile] = {}
        #: per file: (offset, bytes) of each row group's image page when `_page_image` can read them, else None
        self._pages: dict[int, np.ndarray | None] = {}
        self._raw_files: dict[int, io.FileIO] = {}
        self._dtype = self.shards.dtype
        self._image_bytes = int(np.prod(self.shards.shape)) * self._dtype.itemsize

    def __getstate__(self) -> dict:
        return {"shards": self.shards}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset()

    def locate(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(file number, row group, row within the group) of each row id."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(indices) and (indices.min() < 0 or indices.max() >= len(self.shards)):
            bad = indices[(indices < 0) | (indices >= len(self.shards))][0]
            raise IndexError(f"row {bad} out of range for a shard set of {len(self.shards)} images")
        file_no, row = np.divmod(indices, self.shards.rows_per_shard)
        group, row = np.divmod(row, self.shards.rows_per_group)
        return file_no, group, row

    def _file(self, file_no: int) -> pq.ParquetFile:
        handle = self._files.get(file_no)
        if handle is None:
            handle = pq.ParquetFile(self.shards.path / self.shards.files[file_no])
            self._files[file_no] = handle
        return handle

    def _image_pages(self, file_no: int) -> np.ndarray | None:
        """(offset, bytes) of each row group's dictionary page in a file of one raw image per zstd-compressed
        row group, or None (groups of several images, encoded images, or pages written without a dictionary,
        as another writer may): `take_stored` then reads row groups through Parquet."""
        if file_no not in self._pages:
            metadata, pages = self._file(file_no).metadata, None
            if self.shards.preprocess.encoding == "raw" and self.shards.rows_per_group == 1:
                image = metadata.schema.to_arrow_schema().get_field_index("image")
                chunks = [metadata.row_group(g).column(image) for g in range(metadata.num_row_groups)]
                if all(c.compression == "ZSTD" and c.has_dictionary_page and c.num_values == 1 for c in chunks):
                    pages = np.array([(c.dictionary_page_offset, c.data_page_offset - c.dictionary_page_offset)
                                      for c in chunks], dtype=np.int64)
            self._pages[file_no] = pages
        return self._pages[file_no]

    def _raw_file(self, file_no: int) -> int:
        """A file descriptor of the file, for positioned reads of its pages."""
        handle = self._raw_files.get(file_no)
        if handle is None:
            handle = self._raw_files[file_no] = open(self.shards.path / self.shards.files[file_no], "rb", buffering=0)
        return handle.fileno()

    def _page_images(self, file_no: int, pages: list[list[int]]) -> Iterator[np.ndarray]:
        """The raw images stored in the dictionary pages (offset, bytes: header and zstd frame) of one file."""
        fd = self._raw_file(file_no)
        if hasattr(os, "posix_fadvise"):  # all pages asked of the disk at once: cold reads take half the time
            for offset, length in pages:
                os.posix_fadvise(fd, offset, length, os.POSIX_FADV_WILLNEED)
        for offset, length in pages:
            yield self._page_image(file_no, fd, offset, length)

    def _page_image(self, file_no: int, fd: int, offset: int, length: int) -> np.ndarray:
        kind, size, data = _page_data(os.pread(fd, length, offset))
        if (kind, size) != (DICTIONARY_PAGE, self._image_bytes) or bytes(data[:4]) != ZSTD_MAGIC:
            raise DataError(f"{self.shards.path / self.shards.files[file_no]}: the page at byte {offset} is not a "
                            f"zstd-compressed dictionary page of one {self._image_bytes}-byte image")
        pixels = np.frombuffer(ZSTD.decompress(data, self._image_bytes), dtype=self._dtype)
        return pixels.reshape(self.shards.shape)

    def _read_groups(self, file_no: int, groups: np.ndarray) -> pa.ChunkedArray:
        """The stored images of row groups `groups` (ascending) of one file, in that order."""
        table = self._file(file_no).read_row_groups(groups.tolist(), columns=["image"], use_threads=False)
        return table.column("image")

    def _pixels(self, chunk: pa.Array) -> np.ndarray:
        """A chunk of raw images as an (n, *shape) array, without copying."""
        width = chunk.type.byte_width
        data = np.frombuffer(chunk.buffers()[1], dtype=np.uint8, count=len(chunk) * width, offset=chunk.offset * width)
        return data.view(self.shards.dtype).reshape(len(chunk), *self.shards.shape)

    def take_stored(self, indices: Sequence[int]) -> np.ndarray | pa.LargeBinaryArray:
        """Many images as stored, in the order asked: a dense array for raw encoding, a LargeBinaryArray of
        encoded images otherwise (`decode` one item of it)."""
        file_no, group, row = self.locate(indices)
        if os.getpid() != self._pid:  # forked: the parent's handles must not be shared
            self._reset()
        raw = self.shards.preprocess.encoding == "raw"
        out = np.empty((len(file_no), *self.shards.shape), self.shards.dtype) if raw else None
        parts, order = [], []
        for number in np.unique(file_no):
            where = np.flatnonzero(file_no == number)
            groups, group_of = np.unique(group[where], return_inverse=True)
            pages = self._image_pages(int(number)) if raw else None
            if pages is not None:
                # each group read once, however often it is asked for
                for k, image in enumerate(self._page_images(int(number), pages[groups].tolist())):
                    out[where[group_of == k]] = image
                continue
            images = self._read_groups(int(number), groups)
            # a row's place among the groups read: groups before it are full (only a file's last one is short)
            rows = np.searchsorted(groups, group[where]) * self.shards.rows_per_group + row[where]
            if not raw:  # 64-bit offsets: a selection may hold more than 2 GiB of encoded images
                parts.append(images.take(pa.array(rows)).combine_chunks().cast(pa.large_binary()))
                order.append(where)
                continue
            # one copy per image, straight from Arrow's buffer into `out` (a fancy-indexed gather then scatter
            # copies twice, through a fresh batch-sized temporary)
            pixels = [self._pixels(chunk) for chunk in images.chunks]
            starts = np.cumsum([0] + [len(chunk) for chunk in images.chunks])
            chunk_of = np.searchsorted(starts, rows, side="right") - 1
            for position, chunk, at in zip(where.tolist(), chunk_of.tolist(), (rows - starts[chunk_of]).tolist()):
                out[position] = pixels[chunk][at]
        if raw:
            return out
        if not parts:
            return pa.array([], pa.large_binary())
        # back from file order to the order asked
        return pa.concat_arrays(parts).take(pa.array(np.argsort(np.concatenate(order), kind="stable")))

    def decode(self, stored: np.ndarray | pa.LargeBinaryScalar | bytes) -> np.ndarray:
        """One image's stored pixels from an item of `take_stored`."""
        if isinstance(stored, np.ndarray):
            return stored
        if isinstance(stored, pa.LargeBinaryScalar):
            stored = stored.as_buffer()
        return decode_image(stored, self.shards.channels, self.shards.dtype)

    def take(self, indices: Sequence[int]) -> np.ndarray:
        """Many images' stored pixels, decoded and stacked."""
        stored = self.take_stored(indices)
        if isinstance(stored, np.ndarray):
            return stored
        out = np.empty((len(stored), *self.shards.shape), self.shards.dtype)
        for position, item in enumerate(stored):
            out[position] = self.decode(item)
        return out
