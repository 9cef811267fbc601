"""Image preprocessing applied once when shards are built: X-ray centre crop, resize, optional CLAHE,
quantisation to the storage dtype (how the stored pixels become bytes: `scaling.data.encoding`).

Pixel values are scaled by the range of the input dtype (uint8 / 255, uint16 / 65535), the convention
torchxrayvision uses; datasets whose 16-bit files use fewer bits rescale in their own `load`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from skimage import exposure, transform, util

from scaling.data.base import DataError
from scaling.data.encoding import encoding_problem

CROPS = ("center", "none")
STORAGES = ("uint8", "uint16")


@dataclass(frozen=True)
class Preprocess:
    """How images are turned into stored pixels.

    resolution: output side length (square).
    crop:       "center" crops the central square (the X-ray centre crop) before resizing;
                "none" resizes the whole image, distorting its aspect ratio.
    clahe:      contrast-limited adaptive histogram equalisation after resizing.
    storage:    "uint8" or "uint16" stored pixels.
    encoding:   "raw" stores the pixel array's bytes (fast to read, for small sets); "png" stores lossless
                PNG bytes decoded in loader workers (compact, for large sets of X-rays); "jpeg:Q" / "webp:Q"
                lossy 8-bit bytes at quality Q (natural images at scale). See `scaling.data.encoding`.
    """

    resolution: int
    crop: str = "center"
    clahe: bool = False
    storage: str = "uint8"
    encoding: str = "raw"

    def __post_init__(self) -> None:
        if isinstance(self.resolution, bool) or not isinstance(self.resolution, (int, np.integer)) \
                or self.resolution < 1:
            raise ValueError(f"Preprocess.resolution must be a positive int, got {self.resolution!r}")
        for field, value, allowed in (("crop", self.crop, CROPS), ("storage", self.storage, STORAGES)):
            if value not in allowed:
                raise ValueError(f"Preprocess.{field} must be one of {allowed}, got {value!r}")
        problem = encoding_problem(self.encoding, self.storage)
        if problem:
            raise ValueError(f"Preprocess.encoding: {problem}")
        if not isinstance(self.clahe, bool):
            raise ValueError(f"Preprocess.clahe must be a bool, got {self.clahe!r}")

    def as_dict(self) -> dict:
        return asdict(self)

    def stored_shape(self, channels: int) -> tuple[int, ...]:
        """Shape of one stored image: (H, W) for grayscale, (H, W, 3) for colour."""
        side = int(self.resolution)
        return (side, side) if channels == 1 else (side, side, channels)

    def check_channels(self, channels: int) -> None:
        if channels not in (1, 3):
            raise ValueError(f"datasets have 1 or 3 channels, got {channels}")
        if channels == 3 and self.storage == "uint16" and self.encoding == "png":
            raise ValueError("PNG encoding of 16-bit colour images is not supported; use encoding='raw' "
                             "or storage='uint8' for colour datasets")


def preprocess_image(image: np.ndarray, preprocess: Preprocess, channels: int, source: str = "image") -> np.ndarray:
    """Crop, resize, equalise and quantise one image as `Dataset.load` returns it (HxW or HxWx3,
    uint8/uint16, or float in [0, 1]). Returns an array of `preprocess.stored_shape(channels)` in the
    storage dtype. Raises DataError naming `source` when the image does not match `channels` or its dtype."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    expected = "HxW" if channels == 1 else "HxWx3"
    if (channels == 1 and image.ndim != 2) or (channels == 3 and (image.ndim != 3 or image.shape[2] != 3)):
        raise DataError(f"{source}: expected a {expected} image for a {channels}-channel dataset, "
                        f"got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise DataError(f"{source}: empty image of shape {image.shape}")
    if image.dtype.kind == "f":
        if not np.isfinite(image).all() or image.min() < 0 or image.max() > 1:
            raise DataError(f"{source}: float images must lie in [0, 1], got range "
                            f"[{np.nanmin(image)}, {np.nanmax(image)}]")
    elif image.dtype not in (np.uint8, np.uint16):
        raise DataError(f"{source}: expected uint8, uint16 or float pixels, got {image.dtype}")
    pixels = util.img_as_float(image)
    if preprocess.crop == "center":
        height, width = pixels.shape[:2]
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        pixels = pixels[top:top + side, left:left + side]
    target = preprocess.stored_shape(channels)
    if pixels.shape != target:
        pixels = transform.resize(pixels, target, order=1, anti_aliasing=True, preserve_range=True)
    if preprocess.clahe:
        pixels = exposure.equalize_adapthist(np.clip(pixels, 0.0, 1.0))
    pixels = np.clip(pixels, 0.0, 1.0)
    return util.img_as_ubyte(pixels) if preprocess.storage == "uint8" else util.img_as_uint(pixels)
