"""Resolution-independent building blocks shared by the renderers.

Geometry lives in normalised coordinates (x right, y down, both in [-1, 1] across the image), so a phantom
drawn at 48 px and at 224 px shows the same anatomy; only the pixel noise is per pixel.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=16)
def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (x, y), each of shape (1, size, size), in [-1, 1]."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    y, x = np.meshgrid(c, c, indexing="ij")
    return x[None], y[None]


def edge_width(size: int) -> float:
    """Softness of drawn edges: about one pixel, but never sharper than anatomy looks at high resolution."""
    return max(0.015, 2.4 / size)


def sigmoid(z: np.ndarray) -> np.ndarray:
    # tanh form: no overflow warnings for large |z|; in place, as renderers call it on many large arrays
    out = np.tanh(np.multiply(z, 0.5))
    out *= 0.5
    out += 0.5
    return out


@lru_cache(maxsize=32)
def _upsampler(coarse: int, size: int) -> np.ndarray:
    """(size, coarse) Gaussian interpolation weights: a smooth field from a coarse grid of values."""
    knots = np.linspace(-1, 1, coarse)
    c = (np.arange(size) + 0.5) / size * 2 - 1
    w = np.exp(-0.5 * ((c[:, None] - knots[None, :]) / (2.0 / (coarse - 1))) ** 2)
    w /= np.sqrt((w**2).sum(axis=1, keepdims=True))  # unit variance for iid unit-variance knots
    return w.astype(np.float32)


def smooth_noise(knots: np.ndarray, size: int) -> np.ndarray:
    """Smooth random fields (B, size, size) of roughly unit variance from iid knot values (B, c, c)."""
    a = _upsampler(knots.shape[-1], size)
    return a @ knots.astype(np.float32) @ a.T


def to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
