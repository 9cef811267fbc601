"""The difference hash (dHash) of stored images, the leakage guard's fingerprint of an image's content (see
`scaling.data.leakage`): computed while an image is in memory during the shard build, and for older shard sets
from their decoded pixels. Pure numpy: a whole batch of same-sized images at once."""
from __future__ import annotations

import numpy as np

#: hash side: size x size bits; 16 -> 256-bit hashes (64-bit dHash confuses unrelated chest X-rays, which share
#: their coarse layout)
HASH_SIZE = 16
#: images hashed per batch (bounds the float copy of one batch)
HASH_BATCH = 256


def hashable(shape: tuple[int, ...], size: int = HASH_SIZE) -> bool:
    """Whether images of `shape` ((H, W) or (H, W, 3)) are large enough for a `size` hash."""
    return shape[0] >= size and shape[1] >= size + 1


def dhash(images: np.ndarray, size: int = HASH_SIZE) -> np.ndarray:
    """Difference hashes of a batch of same-sized images, (n, H, W) or (n, H, W, 3) of any numeric dtype:
    (n, size * size / 64) uint64. Colour is averaged to gray; the image is area-averaged to size x (size + 1)
    cells (bins of near-equal width, so any H, W >= the cells work)."""
    images = np.asarray(images)
    if images.ndim == 4:
        images = images.mean(axis=3, dtype=np.float32)
    if images.ndim != 3 or not hashable(images.shape[1:], size):
        raise ValueError(f"expected images of shape (n, H, W[, 3]) with H >= {size} and W >= {size + 1}, "
                         f"got {images.shape}")
    if size * size % 64:
        raise ValueError(f"hash size {size}: size * size must be a multiple of 64")
    rows = np.linspace(0, images.shape[1], size + 1).astype(int)[:-1]
    cols = np.linspace(0, images.shape[2], size + 2).astype(int)[:-1]
    n, height = images.shape[:2]
    if height % size == 0:  # equal bins: a reshape-sum, ~10x faster than reduceat
        cells = images.reshape(n, size, height // size, -1).sum(axis=2, dtype=np.float32)
    else:
        cells = np.add.reduceat(images, rows, axis=1, dtype=np.float32)
    cells = np.add.reduceat(cells, cols, axis=2)
    cells /= np.outer(np.diff(np.r_[rows, images.shape[1]]), np.diff(np.r_[cols, images.shape[2]]))
    bits = cells[:, :, 1:] > cells[:, :, :-1]
    return np.packbits(bits.reshape(len(bits), -1), axis=1).view(np.uint64)
