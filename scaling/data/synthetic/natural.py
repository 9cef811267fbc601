"""Textured shapes in cluttered scenes: the generic "natural image" source.

A class is a (shape, texture) pair. Colour is a nuisance (any hue, 30% of images grey), the object's contrast
against the background varies down to faint, smaller distractor objects of any class stand behind it, and the
background carries luminance clutter at three scales with amplitude falling with frequency, as photographs do.
A classifier so has to learn edges, contours, oriented textures and figure/ground under clutter and low
contrast -- generic features of images -- and nothing about chest anatomy or the targets' findings.
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
    "hatch": lambda x, y, f: np.maximum(np.cos(np.pi * f * (x + y)), np.cos(np.pi * f * (x - y))) ** 2,
    "spiral": lambda x, y, f: 0.5 + 0.5 * np.cos(2 * np.pi * f * np.sqrt(x**2 + y**2) + 3 * np.arctan2(y, x)),
}

#: every (shape, texture) class, in a fixed shuffled order so that the first n classes mix both factors
CLASSES: tuple[tuple[str, str], ...] = tuple(
    tuple(c) for c in np.random.default_rng(20210601).permutation(list(product(SHAPES, TEXTURES))).tolist())
MAX_CLASSES = len(CLASSES)
#: share of images without colour, as ImageNet holds some grey photographs
GREY_FRACTION = 0.3
#: up to this many smaller distractor objects of any class behind the labelled one
MAX_DISTRACTORS = 2


def class_name(index: int) -> str:
    return "-".join(CLASSES[index])


@dataclass
class ObjectParams:
    """One textured shape; `alpha` 0 = absent (a distractor slot left empty)."""

    shape: str
    texture: str
    colour: tuple[float, float, float]  # the texture's bright RGB
    shade: tuple[float, float, float]  # its darker RGB
    centre: tuple[float, float]
    radius: float
    rotation: float
    frequency: float
    alpha: float = 1.0


@dataclass
class NaturalParams:
    """One image: its objects (distractors first, drawn behind; the labelled object last) and the scene."""

    objects: list[ObjectParams]
    grey: bool
    background: tuple[float, float, float]
    knots: np.ndarray  # background colour mottling, one field per channel
    clutter: list[np.ndarray]  # background luminance at three scales, coarse to fine
    pixel_noise: np.ndarray


def _object(rng: np.random.Generator, shape: str, texture: str, centre_range: float,
            radius: tuple[float, float], value: tuple[float, float]) -> ObjectParams:
    # any hue, and a brightness that may sit close to the background's: colour is no cue, contrast varies
    hue, sat, val = rng.random(), rng.uniform(0.2, 1.0), rng.uniform(*value)
    return ObjectParams(
        shape=shape, texture=texture,
        colour=colorsys.hsv_to_rgb(hue, sat, val),
        shade=colorsys.hsv_to_rgb(hue, sat, val * rng.uniform(0.3, 0.6)),
        centre=(rng.uniform(-centre_range, centre_range), rng.uniform(-centre_range, centre_range)),
        radius=rng.uniform(*radius),
        rotation=rng.uniform(0, 2 * np.pi),
        frequency=rng.uniform(1.4, 2.0),  # a texture period of 4 px or more at 32 px
    )


def sample(rng: np.random.Generator, label: int, size: int) -> NaturalParams:
    shape, texture = CLASSES[label]
    distractors = []
    for k in range(MAX_DISTRACTORS):
        other = CLASSES[int(rng.integers(MAX_CLASSES))]
        d = _object(rng, *other, centre_range=0.75, radius=(0.18, 0.35), value=(0.2, 0.8))
        d.alpha = float(k < rng.integers(MAX_DISTRACTORS + 1))
        distractors.append(d)
    return NaturalParams(
        objects=[*distractors, _object(rng, shape, texture, centre_range=0.25, radius=(0.45, 0.72), value=(0.45, 1.0))],
        grey=bool(rng.random() < GREY_FRACTION),
        background=colorsys.hsv_to_rgb(rng.random(), rng.uniform(0, 0.5), rng.uniform(0.05, 0.5)),
        knots=rng.standard_normal((3, 6, 6)),
        clutter=[rng.standard_normal((c, c)) for c in (4, 8, 16)],
        pixel_noise=rng.standard_normal((size, size, 3)).astype(np.float32),
    )


#: amplitude of the background's luminance clutter per scale: falling with frequency, as in photographs
_CLUTTER = (0.12, 0.07, 0.04)


def _layer(objects: list[ObjectParams], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Coverage (B, H, W, 1) and colour (B, H, W, 3) of one object per image."""
    gx, gy = grid(size)
    col = lambda name: np.asarray([getattr(o, name) for o in objects], np.float32)  # noqa: E731
    cx, cy, rad, rot, freq = (v[:, None, None] for v in (*col("centre").T, col("radius"), col("rotation"),
                                                         col("frequency")))
    # object coordinates: the shape fits the unit disc whatever its position, size and rotation
    c, s = np.cos(rot), np.sin(rot)
    ox = (c * (gx - cx) + s * (gy - cy)) / rad
    oy = (-s * (gx - cx) + c * (gy - cy)) / rad
    sdf = np.empty(ox.shape, np.float32)
    pattern = np.empty(ox.shape, np.float32)
    shapes = np.array([o.shape for o in objects])
    textures = np.array([o.texture for o in objects])
    for name in set(shapes):
        i = shapes == name
        sdf[i] = SHAPES[name](ox[i], oy[i])
    for name in set(textures):
        i = textures == name
        pattern[i] = TEXTURES[name](ox[i], oy[i], freq[i])
    mask = sigmoid(-sdf * rad / edge_width(size))[..., None] * col("alpha")[:, None, None, None]
    pattern = pattern[..., None]
    return mask, col("colour")[:, None, None] * pattern + col("shade")[:, None, None] * (1 - pattern)


def render(params: list[NaturalParams], size: int) -> np.ndarray:
    """Paint a batch: (B, size, size, 3) uint8."""
    n = len(params)
    mottle = smooth_noise(np.concatenate([p.knots for p in params]), size).reshape(n, 3, size, size)
    clutter = sum(a * smooth_noise(np.stack([p.clutter[k] for p in params]), size)
                  for k, a in enumerate(_CLUTTER))
    background = np.asarray([p.background for p in params], np.float32)[:, None, None]
    img = background + 0.05 * mottle.transpose(0, 2, 3, 1) + clutter[..., None]
    for k in range(MAX_DISTRACTORS + 1):
        mask, fg = _layer([p.objects[k] for p in params], size)
        img = img * (1 - mask) + fg * mask
    img = img + 0.02 * np.stack([p.pixel_noise for p in params])
    grey = np.asarray([p.grey for p in params])
    img[grey] = (img[grey] @ np.asarray([0.299, 0.587, 0.114], np.float32))[..., None]
    return to_uint8(img)
