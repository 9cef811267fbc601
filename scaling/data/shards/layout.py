"""Where a shard set lives in the cache and what its files are called: the key is a content hash of everything
that determines the stored pixels, so a changed dataset, preprocessing or format gets a new set."""
from __future__ import annotations

import json
from hashlib import sha256
from pathlib import Path

from scaling.data.base import Dataset
from scaling.data.preprocess import Preprocess

#: bump when the on-disk layout changes; old shard sets then get a new key and are rebuilt
SHARD_FORMAT_VERSION = 1
RECORDS = "records.parquet"


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
