"""Coloured shapes with textures on dim backgrounds: the generic "natural image" source.

A class is a (shape, texture, colour) triple, so a classifier must learn edges, textures and colour -- generic
low-level features -- and nothing about chest anatomy. Objects are bright and saturated on dark, greyish
backgrounds: at low object/background contrast the prototype found 48 px images barely learnable.
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass
from itertools import product

import numpy as np

from scaling.data.synthetic.fields import edge_width, grid, sigmoid, smooth_noise, to_uint8


def _polar(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.sqrt(x**2 + y**2), np.arctan2(y, x)


# signed distance-like functions (negative inside) in object coordinates, each shape fitting the unit disc
SHAPES = {
    "circle": lambda x, y: np.sqrt(x**2 + y**2) - 0.9,
    "square": lambda x, y: np.maximum(np.abs(x), np.abs(y)) - 0.68,
    "triangle": lambda x, y: np.maximum(0.866 * np.abs(x) + 0.5 * y, -y) - 0.45,
    "diamond": lambda x, y: (np.abs(x) + np.abs(y) - 0.95) * 0.707,
    "hexagon": lambda x, y: np.maximum(0.866 * np.abs(x) + 0.5 * np.abs(y), np.abs(y)) - 0.8,
    "star": lambda x, y: (lambda r, a: (r - 0.55 - 0.35 * np.cos(5 * a)) * 0.6)(*_polar(x, y)),
    "ring": lambda x, y: np.abs(np.sqrt(x**2 + y**2) - 0.68) - 0.22,
    "cross": lambda x, y: np.minimum(np.maximum(np.abs(x) - 0.28, np.abs(y) - 0.9),
                                     np.maximum(np.abs(y) - 0.28, np.abs(x) - 0.9)),
    "crescent": lambda x, y: np.maximum(np.sqrt(x**2 + y**2) - 0.9, 0.72 - np.sqrt((x - 0.45) ** 2 + y**2)),
    "ellipse": lambda x, y: (np.sqrt((x / 0.95) ** 2 + (y / 0.5) ** 2) - 1) * 0.5,
}

# patterns in [0, 1] (1 = the object's bright colour); `f` is cycles per object radius
TEXTURES = {
    "solid": lambda x, y, f: np.ones_like(x),
    "stripes": lambda x, y, f: 0.5 + 0.5 * np.cos(2 * np.pi * f * x),
    "checker": lambda x, y, f: sigmoid(8 * np.sin(np.pi * f * x) * np.sin(np.pi * f * y)),
    "dots": lambda x, y, f: sigmoid((np.cos(2 * np.pi * f * x) * np.cos(2 * np.pi * f * y) - 0.3) / 0.1),
    "rings": lambda x, y, f: 0.5 + 0.5 * np.cos(2 * np.pi * f * np.sqrt(x**2 + y**2)),
    "waves": lambda x, y, f: 0.5 + 0.5 * np.cos(2 * np.pi * f * (y + 0.25 * np.sin(np.pi * f * x))),
}

# hues (degrees) spaced by perceived difference rather than evenly
COLOURS = {"red": 0, "orange": 30, "yellow": 58, "green": 120, "cyan": 180, "blue": 225, "purple": 270,
           "magenta": 310}

#: every (shape, texture, colour) class, in a fixed shuffled order so that the first n classes mix all factors
CLASSES: tuple[tuple[str, str, str], ...] = tuple(
    tuple(c) for c in np.random.default_rng(20210601).permutation(list(product(SHAPES, TEXTURES, COLOURS))).tolist())
MAX_CLASSES = len(CLASSES)


def class_name(index: int) -> str:
    return "-".join(CLASSES[index])


@dataclass
class NaturalParams:
    """One image: the class's shape, texture and colour plus per-image nuisance."""

    shape: str
    texture: str
    colour: tuple[float, float, float]  # bright RGB of the object
    shade: tuple[float, float, float]  # the texture's darker RGB
    background: tuple[float, float, float]
    centre: tuple[float, float]
    radius: float
    rotation: float
    frequency: float
    knots: np.ndarray  # background mottling, one field per channel
    pixel_noise: np.ndarray


def sample(rng: np.random.Generator, label: int, size: int) -> NaturalParams:
    shape, texture, colour = CLASSES[label]
    hue = (COLOURS[colour] / 360 + rng.uniform(-0.025, 0.025)) % 1
    sat, val = rng.uniform(0.65, 1.0), rng.uniform(0.8, 1.0)
    return NaturalParams(
        shape=shape,
        texture=texture,
        colour=colorsys.hsv_to_rgb(hue, sat, val),
        shade=colorsys.hsv_to_rgb(hue, sat, val * rng.uniform(0.3, 0.45)),
        background=colorsys.hsv_to_rgb(rng.random(), rng.uniform(0, 0.4), rng.uniform(0.05, 0.3)),
        centre=(rng.uniform(-0.25, 0.25), rng.uniform(-0.25, 0.25)),
        radius=rng.uniform(0.45, 0.72),
        rotation=rng.uniform(0, 2 * np.pi),
        frequency=rng.uniform(2.0, 2.8),
        knots=rng.standard_normal((3, 6, 6)),
        pixel_noise=rng.standard_normal((size, size, 3)).astype(np.float32),
    )


def render(params: list[NaturalParams], size: int) -> np.ndarray:
    """Paint a batch: (B, size, size, 3) uint8."""
    gx, gy = grid(size)
    col = lambda name: np.asarray([getattr(p, name) for p in params], np.float32)  # noqa: E731
    cx, cy, rad, rot, freq = (v[:, None, None] for v in (*col("centre").T, col("radius"), col("rotation"),
                                                         col("frequency")))
    # object coordinates: the shape fits the unit disc whatever its position, size and rotation
    c, s = np.cos(rot), np.sin(rot)
    ox = (c * (gx - cx) + s * (gy - cy)) / rad
    oy = (-s * (gx - cx) + c * (gy - cy)) / rad
    sdf = np.empty(ox.shape, np.float32)
    pattern = np.empty(ox.shape, np.float32)
    shapes = np.array([p.shape for p in params])
    textures = np.array([p.texture for p in params])
    for name in set(shapes):
        i = shapes == name
        sdf[i] = SHAPES[name](ox[i], oy[i])
    for name in set(textures):
        i = textures == name
        pattern[i] = TEXTURES[name](ox[i], oy[i], freq[i])
    mask = sigmoid(-sdf * rad / edge_width(size))[..., None]
    pattern = pattern[..., None]
    fg = col("colour")[:, None, None] * pattern + col("shade")[:, None, None] * (1 - pattern)
    mottle = smooth_noise(np.concatenate([p.knots for p in params]), size).reshape(len(params), 3, size, size)
    bg = col("background")[:, None, None] + 0.05 * mottle.transpose(0, 2, 3, 1)
    img = bg * (1 - mask) + fg * mask + 0.02 * np.stack([p.pixel_noise for p in params])
    return to_uint8(img)
