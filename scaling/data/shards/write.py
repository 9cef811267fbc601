"""Writing a shard set's Parquet files: the images into shard-NNNNN.parquet files in row groups, and the
records."""
from __future__ import annotations

from contextlib import suppress
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from scaling.data.base import Task


class ShardWriter:
    """Appends images to shard-NNNNN.parquet files of `rows_per_shard` rows, in row groups. `start` (a multiple
    of rows_per_shard) is the set's row of the first image: a chunk of a set writes the set's file of that
    number, byte for byte as a writer of the whole set would."""

    def __init__(self, directory: Path, image_type: pa.DataType, compression: str,
                 rows_per_shard: int, rows_per_group: int, start: int = 0):
        if start % rows_per_shard:
            raise ValueError(f"start {start} is not a multiple of rows_per_shard {rows_per_shard}")
        self.directory, self.rows_per_shard, self.rows_per_group = directory, rows_per_shard, rows_per_group
        self.schema = pa.schema([("index", pa.int64()), ("image", image_type)])
        self.compression = compression
        self.files: list[str] = []
        self.rows = start
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
            self.files.append(f"shard-{self.rows // self.rows_per_shard:05d}.parquet")
            self._writer = pq.ParquetWriter(self.directory / self.files[-1], self.schema,
                                            compression=self.compression)
        index = pa.array(np.arange(self.rows, self.rows + len(self._pending)), pa.int64())
        table = pa.Table.from_arrays([index, pa.array(self._pending, self.schema.field("image").type)],
                                     schema=self.schema)
        self._writer.write_table(table, row_group_size=self.rows_per_group)
        self.rows += len(self._pending)
        self._pending = []


def write_records(path: Path, records: pd.DataFrame, task: Task) -> None:
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
