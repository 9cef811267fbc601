"""How a stored image's pixels become the bytes a shard holds, and back.

Encodings: "raw" (the pixel array's bytes), "png" (lossless: X-rays, 8 or 16 bit), and "jpeg:Q" / "webp:Q"
(lossy, 8 bit, at the stated quality Q in 1..100: natural images at ImageNet-21k scale). The quality is part of
the encoding's name, so it is part of the shard key and a change rebuilds the set.

Encoding (once, when shards are built) uses Pillow: its PNG bytes are those of every shard set built so far.
Decoding (every epoch, in the loader workers) uses OpenCV's `imdecode` (`opencv-python-headless`: libjpeg-turbo,
libpng, libwebp): on this machine it decodes JPEG about 15-30% faster than Pillow and PNG at the same speed, and
it writes straight into a numpy array, without Pillow's extra copy (benchmarks/bench_loader.py measures both).
Decoding is deterministic for a given OpenCV build; PNG round trips are exact with either library.

This module imports no image library at the top, so that checking a config (`encoding_problem`) stays light.
"""
from __future__ import annotations

import io
import re

import numpy as np

#: the encodings' names; lossy ones are written with their quality, e.g. "jpeg:90"
LOSSLESS = ("raw", "png")
LOSSY = ("jpeg", "webp")
ENCODINGS = LOSSLESS + LOSSY
EXPECTED = "raw, png, jpeg:Q or webp:Q (Q: the quality, an integer 1-100)"
_PILLOW_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
_SPEC = re.compile(r"(raw|png)|(jpeg|webp):(100|[1-9][0-9]?)")


def parse_encoding(encoding: str) -> tuple[str, int | None]:
    """(name, quality) of an encoding: ("png", None), ("jpeg", 90); ValueError saying what was expected."""
    match = _SPEC.fullmatch(encoding) if isinstance(encoding, str) else None
    if match is None:
        raise ValueError(f"got {encoding!r}; expected {EXPECTED}")
    return (match[1], None) if match[1] else (match[2], int(match[3]))


def encoding_problem(encoding: str, storage: str) -> str:
    """Why `encoding` cannot store pixels of `storage` ("uint8"/"uint16"), or "" when it can."""
    try:
        name, _ = parse_encoding(encoding)
    except ValueError as err:
        return str(err)
    if name in LOSSY and storage != "uint8":
        return f"got {encoding!r} with storage {storage!r}; JPEG and WebP store 8-bit pixels: use storage " \
               "'uint8', or encoding raw or png for 16-bit pixels"
    return ""


def encode_image(pixels: np.ndarray, encoding: str) -> bytes:
    """The bytes of a stored image (uint8 gray/RGB, or uint16 gray for PNG) under a PNG, JPEG or WebP
    encoding; PNG is lossless, JPEG and WebP keep the stated quality."""
    from PIL import Image

    name, quality = parse_encoding(encoding)
    if name == "raw":
        raise ValueError("raw pixels are stored as the array's bytes, not encoded")
    options = {"compress_level": 1} if name == "png" else {"quality": quality}
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=_PILLOW_FORMATS[name], **options)
    return buffer.getvalue()


def decode_image(data, channels: int, dtype: np.dtype) -> np.ndarray:
    """Inverse of `encode_image` (any of its formats, told apart by their bytes): an HxW (channels=1) or HxWx3
    array in `dtype`. `data`: bytes or a uint8 array (e.g. a zero-copy view of a shard's buffer)."""
    import cv2

    buffer = np.frombuffer(data, np.uint8) if not isinstance(data, np.ndarray) else data
    # gray: keep 16 bits (ANYDEPTH); WebP stores gray as colour, GRAYSCALE folds it back
    flags = cv2.IMREAD_COLOR_RGB if channels == 3 else cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH
    pixels = cv2.imdecode(buffer, flags)
    if pixels is None:
        raise ValueError(f"cannot decode a stored image of {len(buffer)} bytes (corrupt shard?)")
    return pixels if pixels.dtype == dtype else pixels.astype(dtype)
