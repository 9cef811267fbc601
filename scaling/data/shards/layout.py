"""Where a shard set lives in the cache, what its files are called and how they are cut into row groups: the key
is a content hash of everything that determines the stored pixels, so a changed dataset, preprocessing or format
gets a new set."""
from __future__ import annotations

import json
from hashlib import sha256
from pathlib import Path

from scaling.data.base import Dataset
from scaling.data.preprocess import Preprocess

#: bump when the on-disk layout changes; old shard sets then get a new key and are rebuilt
SHARD_FORMAT_VERSION = 1
RECORDS = "records.parquet"
#: most bytes of pixels in one Parquet row group, the unit a reader reads: a random image costs reading its whole
#: group, so large images (>= 64 KiB: 256 px gray and up) get groups of one or two images, and a lazily read batch
#: reads at most about twice the bytes it uses; small images share a group (their sets fit in memory anyway,
#: and a read has a fixed cost of about 0.1 ms that small groups would pay per image)
GROUP_BYTES = 128 << 10


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


def group_rows(image_bytes: int, rows_per_shard: int) -> int:
    """Images per Parquet row group for images of `image_bytes` (their raw size; encoded ones are smaller)."""
    return max(1, min(rows_per_shard, GROUP_BYTES // max(1, image_bytes)))
