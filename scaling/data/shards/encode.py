"""Dataset images turned into the bytes a shard stores (raw little-endian pixels, or PNG/JPEG/WebP bytes), in
this process or in a pool of processes."""
from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from scaling.data.base import DataError, Dataset
from scaling.data.encoding import encode_image
from scaling.data.preprocess import Preprocess, preprocess_image


def stored_bytes(dataset: Dataset, preprocess: Preprocess, key: str) -> bytes | DataError:
    """One image as stored, or the DataError that loading or preprocessing it raised."""
    try:
        pixels = preprocess_image(dataset.load(key), preprocess, dataset.channels, source=f"{dataset.name} {key}")
    except DataError as err:
        return err
    if preprocess.encoding != "raw":
        return encode_image(pixels, preprocess.encoding)
    return np.ascontiguousarray(pixels, dtype=np.dtype(preprocess.storage).newbyteorder("<")).tobytes()


#: the dataset and preprocessing of a pool worker, set once by its initializer: sent once per worker instead
#: of with every chunk of keys
_worker_job: tuple[Dataset, Preprocess] | None = None


def _init_worker(dataset: Dataset, preprocess: Preprocess) -> None:
    global _worker_job
    _worker_job = (dataset, preprocess)


def _worker_stored_bytes(key: str) -> bytes | DataError:
    return stored_bytes(*_worker_job, key)


def stored_images(dataset: Dataset, preprocess: Preprocess, keys: list[str],
                  workers: int) -> Iterator[bytes | DataError]:
    """The stored bytes of every key, in order, or the DataError of the images that failed; `workers` > 1
    spreads them over that many processes (the dataset must be picklable). Close the iterator to stop a pool
    early."""
    if workers == 1:
        yield from (stored_bytes(dataset, preprocess, key) for key in keys)
        return
    pool = ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(dataset, preprocess))
    try:
        block = 256 * workers  # submitted a block at a time: bounded memory, and a failure stops soon
        for start in range(0, len(keys), block):
            yield from pool.map(_worker_stored_bytes, keys[start:start + block], chunksize=16)
    finally:
        pool.shutdown(cancel_futures=True)
