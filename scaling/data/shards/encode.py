"""Dataset images turned into what a shard stores: the preprocessed pixels (which the leakage hash is computed
on, while they are in memory) and their stored bytes (raw little-endian pixels, or PNG/JPEG/WebP bytes)."""
from __future__ import annotations

import numpy as np

from scaling.data.base import DataError, Dataset
from scaling.data.encoding import encode_image
from scaling.data.preprocess import Preprocess, preprocess_image


def stored_image(dataset: Dataset, preprocess: Preprocess, key: str) -> tuple[np.ndarray, bytes] | DataError:
    """One image as stored, (pixels, bytes), or the DataError that loading or preprocessing it raised."""
    try:
        pixels = preprocess_image(dataset.load(key), preprocess, dataset.channels, source=f"{dataset.name} {key}")
    except DataError as err:
        return err
    return pixels, stored_bytes(pixels, preprocess)


def stored_bytes(pixels: np.ndarray, preprocess: Preprocess) -> bytes:
    """The bytes a shard stores for an image's preprocessed pixels."""
    if preprocess.encoding != "raw":
        return encode_image(pixels, preprocess.encoding)
    return np.ascontiguousarray(pixels, dtype=np.dtype(preprocess.storage).newbyteorder("<")).tobytes()
