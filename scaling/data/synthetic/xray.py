"""Chest-X-ray-like phantoms: one renderer for the medical source and both targets.

Sharing the renderer is what makes medical pre-training transfer: the source and the targets see the same
anatomy, exposure and noise statistics, and the source's findings include the targets' patterns and their
look-alikes. An image is drawn in three steps:

1. `sample_anatomy(rng, size)` draws a patient (pose, body, lungs, heart, ribs, exposure, noise fields);
2. `add_*` functions draw findings onto those parameters (strengths are densities, roughly the change in
   final grey level, against pixel noise of 0.015-0.045);
3. `render(params, size)` paints a batch with numpy array operations (no per-image Python loop beyond
   stacking parameters), returning uint8 images.

Side 0 is the image's left (the patient's right lung), side 1 the image's right, where the heart bulges.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import numpy as np

from scaling.data.synthetic.fields import edge_width, grid, sigmoid, smooth_noise, to_uint8

#: lateral direction of each side in image x
SIGN = np.array([-1.0, 1.0], dtype=np.float32)


@dataclass
class ChestParams:
    """Everything that decides one phantom. Pairs are (image left, image right); zero strength = absent."""

    # pose of the patient in the image (radians, normalised units)
    rotation: float
    shift_x: float
    shift_y: float
    scale: float
    # anatomy
    body_width: float
    lung_x: float  # distance of each lung's centre from the midline
    lung_width: tuple[float, float]
    lung_top: float
    lung_base: tuple[float, float]  # costophrenic level; lower with deeper inspiration
    dome: float  # height of the diaphragm dome
    heart_width: float
    heart_height: float
    heart_x: float
    heart_y: float
    rib_spacing: float
    rib_phase: float
    rib_density: float
    bone_density: float
    soft_density: float
    air_density: float
    texture: float
    gastric_bubble: float
    # exposure and detector
    contrast: float
    offset: float
    gamma: float
    gradient_x: float
    gradient_y: float
    noise_sigma: float
    # random fields: lung markings (two scales), finding patchiness, pixel noise
    knots_coarse: np.ndarray
    knots_fine: np.ndarray
    knots_patch: np.ndarray
    pixel_noise: np.ndarray
    # findings
    peripheral: tuple[float, float] = (0.0, 0.0)  # patchy opacity of the lateral/lower lung
    consolidation: tuple[float, float] = (0.0, 0.0)  # dense lobar opacity
    upper_lobe: tuple[float, float] = (0.0, 0.0)  # 1: consolidation in the upper lobe, 0: lower
    central_haze: float = 0.0  # bilateral perihilar haze (edema-like)
    effusion: tuple[float, float] = (0.0, 0.0)  # fraction of lung air replaced by fluid at the base
    effusion_height: tuple[float, float] = (0.0, 0.0)
    pneumothorax: tuple[float, float] = (0.0, 0.0)  # how far the lung has collapsed from the wall
    atelectasis: tuple[float, float] = (0.0, 0.0)  # plate-like band at the base
    apical: tuple[float, float] = (0.0, 0.0)  # upper-zone fibrotic haze (TB)
    # round lesions: rows (x, y, radius, strength) in the anatomy frame
    nodules: list[tuple[float, float, float, float]] = field(default_factory=list)
    cavities: list[tuple[float, float, float, float]] = field(default_factory=list)


def sample_anatomy(rng: np.random.Generator, size: int) -> ChestParams:
    """A healthy patient under a random exposure."""
    u = rng.uniform
    lung_width = u(0.23, 0.29)
    base = u(0.3, 0.48)
    right_higher = u(0.0, 0.06)  # the right hemidiaphragm usually sits higher
    return ChestParams(
        rotation=float(np.clip(rng.normal(0, 0.05), -0.12, 0.12)),
        shift_x=u(-0.07, 0.07),
        shift_y=u(-0.07, 0.05),
        scale=u(0.88, 1.05),
        body_width=u(0.8, 0.95),
        lung_x=u(0.36, 0.42),
        lung_width=(lung_width, lung_width * u(0.9, 0.98)),
        lung_top=u(-0.76, -0.64),
        lung_base=(base - right_higher, base),
        dome=u(0.1, 0.18),
        heart_width=u(0.27, 0.33),
        heart_height=u(0.19, 0.24),
        heart_x=u(0.07, 0.12),
        heart_y=base - u(0.2, 0.27),
        rib_spacing=u(0.13, 0.16),
        rib_phase=u(0.0, 1.0),
        rib_density=u(0.04, 0.09),
        bone_density=u(0.15, 0.25),
        soft_density=u(0.42, 0.55),
        air_density=u(0.27, 0.37),
        texture=u(0.025, 0.055),
        gastric_bubble=u(0.08, 0.18) if rng.random() < 0.6 else 0.0,
        contrast=u(0.85, 1.2),
        offset=u(-0.06, 0.06),
        gamma=u(0.75, 1.3),
        gradient_x=u(-0.06, 0.06),
        gradient_y=u(-0.06, 0.06),
        noise_sigma=u(0.015, 0.045),
        knots_coarse=rng.standard_normal((7, 7)),
        knots_fine=rng.standard_normal((17, 17)),
        knots_patch=rng.standard_normal((8, 8)),
        pixel_noise=rng.standard_normal((size, size)).astype(np.float32),
    )


# ----------------------------------------------------------------------------------------- findings
def _pair(p: ChestParams, name: str, side: int, value: float) -> None:
    pair = list(getattr(p, name))
    pair[side] = value
    setattr(p, name, tuple(pair))


def _lung_point(p: ChestParams, rng: np.random.Generator, side: int, t_range: tuple[float, float],
                u_range: tuple[float, float] = (-0.6, 0.65)) -> tuple[float, float]:
    """A point inside a lung, from lung coordinates u (-1 medial .. 1 lateral) and t (0 apex .. 1 base)."""
    uu, tt = rng.uniform(*u_range), rng.uniform(*t_range)
    x = float(SIGN[side]) * (p.lung_x + uu * p.lung_width[side])
    y = p.lung_top + tt * (p.lung_base[side] - p.lung_top)
    return x, y


def add_cardiomegaly(p: ChestParams, rng: np.random.Generator) -> None:
    """Cardio-thoracic ratio above ~0.5."""
    p.heart_width = rng.uniform(0.4, 0.48)
    p.heart_height = rng.uniform(0.25, 0.3)
    p.heart_x = rng.uniform(0.12, 0.17)


def add_peripheral_opacity(p: ChestParams, rng: np.random.Generator, sides: tuple[int, ...],
                           strength: tuple[float, float] = (0.11, 0.21)) -> None:
    """Patchy ground-glass opacity of the lateral, lower lung (bilateral: the COVID-19 pattern).

    The default strength is calibrated for the COVIDx-like target at 32 px (benchmarks/calibrate_world.py): the
    default study's rungs (`cpu` w6-w24) trained from scratch for 50 steps on its 449 training images reach a test
    AUC of 0.672-0.725 (tuned in 0.08-0.5), leaving room both to gain from pre-training and to lose."""
    for s in sides:
        _pair(p, "peripheral", s, rng.uniform(*strength))


def add_consolidation(p: ChestParams, rng: np.random.Generator, sides: tuple[int, ...],
                      upper_lobe: float = 0.3, strength: tuple[float, float] = (0.08, 0.18)) -> None:
    """Dense lobar consolidation bounded by a fissure (bacterial pneumonia); in the upper lobe with
    probability `upper_lobe`, else the lower."""
    for s in sides:
        _pair(p, "consolidation", s, rng.uniform(*strength))
        _pair(p, "upper_lobe", s, float(rng.random() < upper_lobe))


def add_central_haze(p: ChestParams, rng: np.random.Generator,
                     strength: tuple[float, float] = (0.05, 0.12)) -> None:
    """Bilateral perihilar 'bat-wing' haze (pulmonary edema)."""
    p.central_haze = rng.uniform(*strength)


def add_effusion(p: ChestParams, rng: np.random.Generator, sides: tuple[int, ...]) -> None:
    """Fluid in the costophrenic angle with a meniscus, blunting the angle."""
    for s in sides:
        _pair(p, "effusion", s, rng.uniform(0.6, 0.95))
        _pair(p, "effusion_height", s, rng.uniform(0.08, 0.35))


def add_pneumothorax(p: ChestParams, rng: np.random.Generator, sides: tuple[int, ...]) -> None:
    """Lung collapsed away from the apex and lateral wall, leaving a marking-free dark rim and a pleural line."""
    for s in sides:
        _pair(p, "pneumothorax", s, rng.uniform(0.1, 0.3))


def add_atelectasis(p: ChestParams, rng: np.random.Generator, sides: tuple[int, ...]) -> None:
    """Plate-like band at the lung base with volume loss (raised hemidiaphragm)."""
    for s in sides:
        _pair(p, "atelectasis", s, rng.uniform(0.1, 0.2))
        _pair(p, "lung_base", s, p.lung_base[s] - rng.uniform(0.03, 0.08))


def add_nodules(p: ChestParams, rng: np.random.Generator, count: int, side: int | None = None,
                t_range: tuple[float, float] = (0.12, 0.85), radius: tuple[float, float] = (0.025, 0.055),
                strength: tuple[float, float] = (0.1, 0.22)) -> None:
    """Round lesions in the lungs (a random side each unless `side` is given)."""
    for _ in range(count):
        s = int(rng.integers(2)) if side is None else side
        x, y = _lung_point(p, rng, s, t_range)
        p.nodules.append((x, y, rng.uniform(*radius), rng.uniform(*strength)))


def add_tb_pattern(p: ChestParams, rng: np.random.Generator, sides: tuple[int, ...]) -> None:
    """Upper-zone tuberculosis: clustered small nodules, often a cavity, often fibrotic apical haze."""
    for s in sides:
        add_nodules(p, rng, int(rng.integers(3, 7)), side=s, t_range=(0.06, 0.4), radius=(0.014, 0.03),
                    strength=(0.08, 0.17))
        if rng.random() < 0.4:
            x, y = _lung_point(p, rng, s, (0.1, 0.35), (-0.3, 0.5))
            p.cavities.append((x, y, rng.uniform(0.04, 0.065), rng.uniform(0.1, 0.18)))
        if rng.random() < 0.6:
            _pair(p, "apical", s, rng.uniform(0.04, 0.09))


# ------------------------------------------------------------------------------------------ render
def _stack(params: list[ChestParams]) -> dict[str, np.ndarray]:
    """Per-field arrays: scalars as (B, 1, 1), pairs as (2, B, 1, 1), so they broadcast against (B, H, W)."""
    out = {}
    for f in fields(ChestParams):
        vals = [getattr(p, f.name) for p in params]
        if f.name in ("nodules", "cavities") or f.name.startswith(("knots", "pixel")):
            out[f.name] = vals
        elif isinstance(vals[0], tuple):
            out[f.name] = np.asarray(vals, dtype=np.float32).T[:, :, None, None]
        else:
            out[f.name] = np.asarray(vals, dtype=np.float32)[:, None, None]
    return out


@dataclass
class _Frame:
    """The anatomy of a batch that findings are drawn into. Arrays have the batch on axis -3; per-lung arrays
    have the side on axis 0. u runs across a lung (-1 medial .. 1 lateral), t down it (0 apex .. 1 base)."""

    q: dict
    x: np.ndarray
    y: np.ndarray
    u: np.ndarray
    t: np.ndarray
    lung: np.ndarray
    markings: np.ndarray
    patch: np.ndarray  # patchy field in [0, 1] that breaks up opacities
    e: float

    def take(self, idx: np.ndarray) -> _Frame:
        """The frame of the images `idx` only: findings are drawn where they occur, not over the whole batch."""
        sub = {k: v[..., idx, :, :] for k, v in self.q.items() if isinstance(v, np.ndarray)}
        arrays = {k: getattr(self, k)[..., idx, :, :] for k in ("x", "y", "u", "t", "lung", "markings", "patch")}
        return _Frame(q=sub, e=self.e, **arrays)


def _peripheral(f: _Frame) -> np.ndarray:
    zone = f.lung * sigmoid((f.u - 0.1) / 0.18) * sigmoid((f.t - 0.3) / 0.15)  # lateral and lower
    return (f.q["peripheral"] * zone).sum(0) * f.patch


def _consolidation(f: _Frame) -> np.ndarray:
    lower = sigmoid((f.t - 0.45 - 0.15 * f.u) / (f.e / (f.q["lung_base"] - f.q["lung_top"])))  # below the fissure
    lobe = f.q["upper_lobe"] + (1 - 2 * f.q["upper_lobe"]) * lower
    return (f.q["consolidation"] * f.lung * lobe).sum(0) * (0.85 + 0.15 * f.patch)


def _central_haze(f: _Frame) -> np.ndarray:
    hilum_d2 = np.minimum(np.square(f.x + 0.15) + np.square(f.y + 0.05), np.square(f.x - 0.17) + np.square(f.y + 0.08))
    return f.q["central_haze"] * f.lung.sum(0) * np.exp(hilum_d2 * (-1 / (2 * 0.22**2)))


def _effusion(f: _Frame) -> np.ndarray:
    level = f.q["lung_base"] - f.q["effusion_height"] - 0.15 * np.square(np.clip(f.u, 0, 1))  # meniscus
    fluid = f.lung * sigmoid((f.y - level) / (2 * f.e)) * (f.q["effusion_height"] > 0)
    return f.q["air_density"] * (f.q["effusion"] * fluid).sum(0)


def _atelectasis(f: _Frame) -> np.ndarray:
    band = np.exp(-np.square((f.y - f.q["lung_base"] + 0.14 + 0.05 * f.u) / 0.025))
    return (f.q["atelectasis"] * f.lung * band).sum(0)


def _apical(f: _Frame) -> np.ndarray:
    return (f.q["apical"] * f.lung * sigmoid((0.4 - f.t) / 0.08)).sum(0) * f.patch


def _pneumothorax(f: _Frame) -> np.ndarray:
    # rho is 1 at the apex and the lateral wall; the collapsed lung's edge sits at 1 - collapse
    rho = np.sqrt(np.square((f.u + 0.6) / 1.6) + np.square((f.t - 0.7) / 0.7))
    ptx = f.q["pneumothorax"]
    edge = rho - (1 - ptx)
    gap = f.lung * sigmoid(edge / (0.5 * f.e)) * (ptx > 0)  # air without lung markings
    line = f.lung * np.exp(-np.square(edge / 0.012)) * (ptx > 0)  # the visceral pleura
    return (0.12 * line - 0.06 * gap).sum(0) - f.q["texture"] * f.markings * gap.sum(0)


# findings drawn over the images where their strength is non-zero
_PAINTERS = {"peripheral": _peripheral, "consolidation": _consolidation, "central_haze": _central_haze,
             "effusion": _effusion, "atelectasis": _atelectasis, "apical": _apical, "pneumothorax": _pneumothorax}


def _add_lesions(d: np.ndarray, rows: list[list[tuple]], x: np.ndarray, y: np.ndarray, e: float,
                 ring: bool) -> None:
    """Add round lesions into d, all lesions of the batch in one array operation."""
    owner = np.asarray([b for b, r in enumerate(rows) for _ in r], dtype=np.intp)  # sorted
    if not len(owner):
        return
    cx, cy, rad, st = np.asarray([les for r in rows for les in r], np.float32).T[:, :, None, None]
    dist = np.sqrt(np.square(x[owner] - cx) + np.square(y[owner] - cy))
    if ring:  # bright wall, dark air-filled centre
        field_ = np.exp(-np.square((dist - rad) / (0.3 * rad + e))) - 0.8 * sigmoid((0.75 * rad - dist) / e)
    else:
        field_ = sigmoid((rad - dist) / e)
    images, first = np.unique(owner, return_index=True)
    d[images] += np.add.reduceat(st * field_, first, axis=0)


def render(params: list[ChestParams], size: int, quantise: bool = True) -> np.ndarray:
    """Paint a batch of phantoms: (B, size, size) uint8, or float32 grey levels before quantisation."""
    q = _stack(params)
    e = edge_width(size)
    gx, gy = grid(size)
    # the anatomy frame: undo the patient's pose
    cr, sr = np.cos(q["rotation"]), np.sin(q["rotation"])
    dx, dy = gx - q["shift_x"], gy - q["shift_y"]
    x = (cr * dx + sr * dy) / q["scale"]
    y = (-sr * dx + cr * dy) / q["scale"]
    ax = np.abs(x)

    # the torso with rounded shoulders near the top of the image, and the neck above
    body_r = np.sqrt(np.sqrt(np.square(np.square(ax / q["body_width"])) + np.square(np.square((y - 0.35) / 1.2))))
    body = np.maximum(sigmoid((1 - body_r) * q["body_width"] / (2 * e)), sigmoid((0.24 - ax) / (2 * e)))

    # lungs: round apex, widening downwards, the diaphragm's dome below
    height = q["lung_base"] - q["lung_top"]  # (2, B, 1, 1)
    t = (y - q["lung_top"]) / height
    width = q["lung_width"] * (0.8 + 0.35 * np.clip(t, 0, 1))
    u = (SIGN[:, None, None, None] * x - q["lung_x"]) / width
    r = np.sqrt(np.square(u) + np.square(np.minimum(t - 0.5, 0) * 2))
    diaphragm = q["lung_base"] - q["dome"] * (1 - np.square(np.clip(u, -1, 1)))
    lung = sigmoid((1 - r) * q["lung_width"] / e) * sigmoid((diaphragm - y) / e)  # (2, B, H, W)
    lungs = lung[0] + lung[1]

    hcx, hcy = x - q["heart_x"], y - q["heart_y"]
    c, s = math.cos(0.35), math.sin(0.35)  # the long axis points to the apex, down and to the image right
    hr = np.sqrt(np.square((c * hcx - s * hcy) / q["heart_width"]) + np.square((s * hcx + c * hcy) / q["heart_height"]))
    heart = sigmoid((1 - hr) * q["heart_height"] / e)
    mediastinum = (sigmoid((0.11 - np.abs(x - 0.02)) / e) * sigmoid((y - q["lung_top"]) / (3 * e))
                   * sigmoid((q["heart_y"] - y) / (3 * e)))
    trachea = sigmoid((0.035 - ax) / e) * sigmoid((-0.3 - y) / e)
    aorta = sigmoid((0.07 - np.sqrt(np.square(x - 0.1) + np.square(y + 0.3))) / e)
    hila = (np.exp((np.square(x + 0.15) + np.square(y + 0.05)) * (-1 / (2 * 0.06**2)))
            + np.exp((np.square(x - 0.17) + np.square(y + 0.08)) * (-1 / (2 * 0.06**2))))
    bubble_d = np.sqrt(np.square(x - 0.33) + np.square(y - q["lung_base"][1] - 0.1))
    bubble = q["gastric_bubble"] * sigmoid((0.07 - bubble_d) / e)

    # bones: ribs as arcs repeating down the chest (posterior ones bright, anterior ones faint), the spine,
    # the clavicles
    ua = np.maximum(ax - 0.04, 0)
    thorax = (sigmoid((ax - 0.05) / e) * sigmoid((q["lung_x"] + 1.2 * q["lung_width"][0] - ax) / e)
              * sigmoid((q["lung_base"][1] + 0.05 - y) / e) * sigmoid((y - q["lung_top"] + 0.1) / e))
    posterior = np.square(0.5 + 0.5 * np.cos((2 * np.pi) * ((y + 0.5 * ua - 1.1 * np.square(ua)) / q["rib_spacing"]
                                                            + q["rib_phase"])))
    anterior = 0.5 + 0.5 * np.cos((2 * np.pi) * ((y - 0.5 * ua) / (1.3 * q["rib_spacing"]) + q["rib_phase"]))
    ribs = thorax * (np.square(posterior) + 0.4 * np.square(anterior) * np.square(anterior) * anterior)
    spine = sigmoid((0.055 - ax) / e) * (0.75 + 0.25 * np.square(np.cos((2 * np.pi / 0.12) * y)))
    clav_u = ax - 0.07
    clavicles = (np.exp(-np.square((y - (q["lung_top"] + 0.02) + 0.18 * clav_u - 0.2 * np.square(clav_u)) / 0.028))
                 * sigmoid(clav_u / e) * sigmoid((0.55 - clav_u) / e))

    # lung markings: vessels fan out from the hila, so the texture is stronger centrally
    markings = (smooth_noise(np.stack(q["knots_coarse"]), size) * 0.6
                + smooth_noise(np.stack(q["knots_fine"]), size)) * (0.6 + 0.8 * hila)
    patch = sigmoid((smooth_noise(np.stack(q["knots_patch"]), size) + 0.3) / 0.3)

    central = np.maximum(mediastinum, heart)  # displaces the lungs: little air lies in front of it
    d = (q["soft_density"] * body + 0.2 * central + 0.1 * aorta + 0.08 * hila
         - 0.12 * trachea - bubble
         + q["rib_density"] * ribs + q["bone_density"] * (0.5 * spine + clavicles)
         - q["air_density"] * lungs * (1 - 0.8 * central) + q["texture"] * markings * lungs)

    frame = _Frame(q=q, x=x, y=y, u=u, t=t, lung=lung, markings=markings, patch=patch, e=e)
    for name, paint in _PAINTERS.items():
        idx = np.flatnonzero((q[name] != 0).reshape(-1, len(params)).any(0))
        if len(idx):
            d[idx] += paint(frame.take(idx))
    _add_lesions(d, q["nodules"], x, y, e, ring=False)
    _add_lesions(d, q["cavities"], x, y, e, ring=True)

    # exposure, detector response and noise, in the image frame
    img = q["offset"] + q["contrast"] * d + q["gradient_x"] * gx + q["gradient_y"] * gy
    img = np.clip(img, 0, 1) ** q["gamma"] + q["noise_sigma"] * np.stack(q["pixel_noise"])
    return to_uint8(img) if quantise else img
