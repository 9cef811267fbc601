"""The embedded default's four datasets: generated, deterministic from a seed, no files.

Image `i` is a pure function of (seed, options, i): its random numbers come from generators keyed by
(seed, dataset, split, index, purpose), so shards render in parallel, any subset has the same pixels as the
whole, and an image's anatomy does not depend on its findings. Keys are global indices: train images are
0..size-1, test images size..size+test_size-1 (a test image's pixels do not depend on `size`).
Every image is its own patient.
"""
from __future__ import annotations

import abc
import copy
import math
from collections.abc import Sequence
from functools import partial

import numpy as np
import pandas as pd

from scaling.data.base import RECORD_COLUMNS, Dataset, DataError, Task
import scaling.data.synthetic.natural as natural
import scaling.data.synthetic.xray as xray

#: bump whenever any renderer or sampler changes what an image or label looks like
GENERATOR_VERSION = 3

# sub-streams of an image's randomness; separate so that e.g. drawing a finding never moves the anatomy
_ANATOMY, _PLAN, _DRAW, _LABEL_MASK = range(4)
_SPLIT_IDS = {"train": 0, "test": 1}
# pixels rendered per array pass: small enough that the float temporaries stay in the CPU cache (16 images at
# 64 px ran 1.3-3x faster than 64 or 256 at once), large enough to amortise the per-call overhead
_MAX_PIXELS_PER_CHUNK = 1 << 16
#: a lesion mask holds the pixels the lesion changes by at least this share of its largest change in the image
LESION_LEVEL = 0.25


def _check_int(name: str, value: object, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"option {name}={value!r}: expected an integer")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"option {name}={value!r}: expected an integer {bound}")
    return int(value)


def _check_fraction(name: str, value: object, closed: bool) -> float:
    """A fraction in (0, 1), or in [0, 1) when `closed`."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not ((0 <= value if closed else 0 < value) and value < 1):
        raise ValueError(f"option {name}={value!r}: expected a number in {'[0' if closed else '(0'}, 1)")
    return float(value)


class _Synthetic(Dataset):
    """Shared plumbing: options, keys, records, batched rendering, fingerprint."""

    _stream: int  # distinguishes the datasets' random streams under one seed

    def __init__(self, *, size: int, test_size: int, image_size: int, seed: int, **options) -> None:
        self.size = _check_int("size", size, 1)
        self.test_size = _check_int("test_size", test_size, 0)
        self.image_size = _check_int("image_size", image_size, 16, 1024)
        self.seed = _check_int("seed", seed, 0)
        # validated values, so that equal options give equal fingerprints whatever their numeric types
        self.options = {"size": self.size, "test_size": self.test_size, "image_size": self.image_size,
                        "seed": self.seed, **options}
        self._records: pd.DataFrame | None = None

    # -------------------------------------------------------------------------------- per-image randomness
    def _rng(self, split: str, j: int, purpose: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self._stream, _SPLIT_IDS[split], j, purpose])

    @abc.abstractmethod
    def _label(self, split: str, j: int) -> int | np.ndarray: ...

    @abc.abstractmethod
    def _render(self, items: list[tuple[str, int]]) -> np.ndarray:
        """Images for (split, index within split) pairs, as a uint8 batch."""

    # ---------------------------------------------------------------------------------------- interface
    def _locate(self, index: int) -> tuple[str, int]:
        if 0 <= index < self.size:
            return "train", index
        if self.size <= index < self.size + self.test_size:
            return "test", index - self.size
        raise DataError(f"{self.name}: key {index} out of range; expected 0..{self.size + self.test_size - 1}")

    def records(self) -> pd.DataFrame:
        if self._records is None:
            rows = []
            for i in range(self.size + self.test_size):
                split, j = self._locate(i)
                rows.append((split, str(i), f"p{i}", self._label(split, j)))
            self._records = pd.DataFrame(rows, columns=list(RECORD_COLUMNS))
        return self._records.copy()

    def load(self, key: str) -> np.ndarray:
        try:
            index = int(key)
        except (TypeError, ValueError):
            raise DataError(f"{self.name}: key {key!r} is not an image index") from None
        return self.render_batch([index])[0]

    def render_batch(self, indices: Sequence[int]) -> np.ndarray:
        """Images for many keys at once (as ints): (B, H, W) or (B, H, W, 3) uint8, identical to `load`."""
        items = [self._locate(int(i)) for i in indices]
        chunk = max(1, _MAX_PIXELS_PER_CHUNK // self.image_size**2)
        parts = [self._render(items[k:k + chunk]) for k in range(0, len(items), chunk)]
        shape = (0, self.image_size, self.image_size) + ((3,) if self.channels == 3 else ())
        return np.concatenate(parts) if parts else np.zeros(shape, np.uint8)

    def fingerprint(self) -> str:
        opts = ",".join(f"{k}={v!r}" for k, v in sorted(self.options.items()))
        return f"{type(self).__name__}/v{GENERATOR_VERSION}/{opts}"

    def __repr__(self) -> str:
        return self.fingerprint()


class SyntheticNatural(_Synthetic):
    """The ImageNet-21k stand-in: `num_classes` classes of textured shapes in cluttered RGB scenes, balanced."""

    name = "synthetic-natural"
    channels = 3
    _stream = 1

    def __init__(self, *, size: int = 10000, test_size: int = 0, image_size: int = 64, seed: int = 0,
                 num_classes: int = natural.MAX_CLASSES) -> None:
        self.num_classes = _check_int("num_classes", num_classes, 2, natural.MAX_CLASSES)
        super().__init__(size=size, test_size=test_size, image_size=image_size, seed=seed,
                         num_classes=self.num_classes)
        self.task = Task("multiclass", tuple(natural.class_name(c) for c in range(self.num_classes)))

    def _label(self, split: str, j: int) -> int:
        return j % self.num_classes

    def _render(self, items: list[tuple[str, int]]) -> np.ndarray:
        params = [natural.sample(self._rng(s, j, _DRAW), self._label(s, j), self.image_size) for s, j in items]
        return natural.render(params, self.image_size)


# ------------------------------------------------------------------------------------ chest phantoms
class _Chest(_Synthetic):
    """Grey-level chest phantoms: a plan (which findings, which sides) decides the label, the renderer draws it."""

    channels = 1

    @abc.abstractmethod
    def _plan(self, split: str, j: int) -> list[tuple]:
        """[(finding, argument), ...] from the image's plan stream; cheap, so records() can afford it."""

    def _lesions(self, split: str, j: int) -> int:
        """How many leading items of the image's plan are its label-defining lesion (none by default)."""
        return 0

    def _params(self, split: str, j: int, without_lesion: bool = False) -> xray.ChestParams:
        p = xray.sample_anatomy(self._rng(split, j, _ANATOMY), self.image_size)
        draw = self._rng(split, j, _DRAW)
        left_out = self._lesions(split, j) if without_lesion else 0
        for k, (finding, arg) in enumerate(self._plan(split, j)):
            # a finding left out is drawn into a copy, so that the later ones take the same random numbers
            _DRAWERS[finding](copy.deepcopy(p) if k < left_out else p, draw, arg)
        return p

    def _render(self, items: list[tuple[str, int]]) -> np.ndarray:
        return xray.render([self._params(s, j) for s, j in items], self.image_size)

    def lesion_masks(self, keys: Sequence[int]) -> np.ndarray:
        """Where each image's label-defining lesion lies, (B, H, W) bool at `image_size`: the pixels whose grey
        level the lesion changes by at least LESION_LEVEL of its largest change in that image (the image drawn
        with and without it: same patient, exposure, noise and other findings). All False without a lesion
        (negatives, and every image of a dataset whose labels are not lesions)."""
        items = [self._locate(int(i)) for i in keys]
        if not items:
            return np.zeros((0, self.image_size, self.image_size), bool)
        change = np.abs(xray.render([self._params(s, j) for s, j in items], self.image_size, quantise=False)
                        - xray.render([self._params(s, j, without_lesion=True) for s, j in items], self.image_size,
                                      quantise=False))
        peak = change.max(axis=(1, 2), keepdims=True)
        return (change >= LESION_LEVEL * peak) & (peak > 0)


def _side(rng: np.random.Generator) -> int:
    return int(rng.integers(2))


def _one_or_both(rng: np.random.Generator, p_both: float) -> tuple[int, ...]:
    return (0, 1) if rng.random() < p_both else (_side(rng),)


# how each planned finding is drawn: f(params, rng, argument), the argument being the sides or a count
_DRAWERS = {
    "atelectasis": xray.add_atelectasis,
    "cardiomegaly": lambda p, r, _: xray.add_cardiomegaly(p, r),
    "consolidation": xray.add_consolidation,
    "edema": lambda p, r, _: xray.add_central_haze(p, r),
    "effusion": xray.add_effusion,
    "lung_opacity": partial(xray.add_peripheral_opacity, strength=(0.08, 0.2)),
    "nodule": xray.add_nodules,
    "pneumothorax": xray.add_pneumothorax,
    # target patterns
    "peripheral_opacity": xray.add_peripheral_opacity,  # bilateral: the COVID-19 pattern
    "lower_consolidation": partial(xray.add_consolidation, upper_lobe=0.0),
    "central_haze": lambda p, r, _: xray.add_central_haze(p, r, strength=(0.05, 0.11)),
    "tb": xray.add_tb_pattern,
}

MEDICAL_FINDINGS = ("atelectasis", "cardiomegaly", "consolidation", "edema", "effusion", "lung_opacity",
                    "nodule", "pneumothorax")

# Co-occurrence as a noisy-OR over latent conditions, as in real reports: heart failure brings an enlarged
# heart, edema and effusions; infection consolidation and opacities; post-operative state atelectasis,
# effusion and pneumothorax. Row: P(finding | condition), with "leak" the rate without any condition. The
# resulting prevalences follow CheXpert's training set (an inpatient population: lung opacity about 0.47,
# effusion 0.39, edema 0.24, atelectasis 0.15, cardiomegaly 0.12, pneumothorax 0.09, consolidation 0.07, lung
# lesion 0.04), so that most images teach something; a quarter show no finding.
_CONDITIONS = {"heart_failure": 0.35, "infection": 0.45, "post_operative": 0.2}
_FINDING_GIVEN = {  # leak, heart_failure, infection, post_operative
    "atelectasis": (0.04, 0.05, 0.12, 0.3),
    "cardiomegaly": (0.03, 0.3, 0.0, 0.0),
    "consolidation": (0.02, 0.0, 0.12, 0.0),
    "edema": (0.02, 0.6, 0.0, 0.0),
    "effusion": (0.05, 0.55, 0.3, 0.4),
    "lung_opacity": (0.1, 0.3, 0.8, 0.1),
    "nodule": (0.04, 0.0, 0.0, 0.0),
    "pneumothorax": (0.03, 0.0, 0.0, 0.3),
}


class SyntheticMedical(_Chest):
    """The CheXpert stand-in: chest phantoms with multi-label findings (MEDICAL_FINDINGS), co-occurring through
    latent conditions; a fraction `uncertain_fraction` of labels is NaN (uncertain or not mentioned)."""

    name = "synthetic-medical"
    task = Task("multilabel", MEDICAL_FINDINGS)
    _stream = 2

    def __init__(self, *, size: int = 10000, test_size: int = 0, image_size: int = 64, seed: int = 0,
                 uncertain_fraction: float = 0.05) -> None:
        self.uncertain_fraction = _check_fraction("uncertain_fraction", uncertain_fraction, closed=True)
        super().__init__(size=size, test_size=test_size, image_size=image_size, seed=seed,
                         uncertain_fraction=self.uncertain_fraction)

    def _plan(self, split: str, j: int) -> list[tuple]:
        rng = self._rng(split, j, _PLAN)
        present = np.concatenate([[True], rng.random(len(_CONDITIONS)) < list(_CONDITIONS.values())])
        plan = []
        for finding, given in _FINDING_GIVEN.items():
            if rng.random() < 1 - np.prod(1 - np.asarray(given)[present]):
                # opacities are often bilateral, effusions when the heart fails; other findings seldom
                both = {"lung_opacity": 0.5, "effusion": 0.6 if present[1] else 0.2}.get(finding, 0.1)
                plan.append((finding, int(rng.integers(1, 4)) if finding == "nodule" else _one_or_both(rng, both)))
        return plan

    def _label(self, split: str, j: int) -> np.ndarray:
        found = {f for f, _ in self._plan(split, j)}
        y = np.array([f in found for f in MEDICAL_FINDINGS], np.float32)
        y[self._rng(split, j, _LABEL_MASK).random(len(y)) < self.uncertain_fraction] = np.nan
        return y


class _BinaryTarget(_Chest):
    """A small binary target: exactly round(positive_fraction * n) positives in any train prefix of n images
    (up to one), a balanced test split. Positives and negatives differ only in the planned pattern."""

    task = Task("binary", ("negative", "positive"))
    # negative kinds and their shares; "normal" draws nothing
    _negatives: dict[str, float]

    def __init__(self, *, size: int, test_size: int, image_size: int, seed: int, positive_fraction: float) -> None:
        self.positive_fraction = _check_fraction("positive_fraction", positive_fraction, closed=False)
        super().__init__(size=size, test_size=test_size, image_size=image_size, seed=seed,
                         positive_fraction=self.positive_fraction)
        if self.test_size == 1:
            raise ValueError("option test_size=1: expected 0 or >= 2 (the test split is balanced)")
        # a seeded phase for the evenly spread labels, so seeds differ in which images are positive
        self._phase = {split: np.random.default_rng([self.seed, self._stream, i, 99]).random()
                       for split, i in _SPLIT_IDS.items()}

    def _label(self, split: str, j: int) -> int:
        frac = self.positive_fraction if split == "train" else 0.5
        phase = self._phase[split]
        return int(math.floor((j + 1) * frac + phase) > math.floor(j * frac + phase))

    def _lesions(self, split: str, j: int) -> int:
        # a positive's plan opens with its positive pattern, the first draw from the plan stream (see _plan)
        return len(self._positive_plan(self._rng(split, j, _PLAN))) if self._label(split, j) else 0

    @abc.abstractmethod
    def _positive_plan(self, rng: np.random.Generator) -> list[tuple]: ...

    @abc.abstractmethod
    def _negative_plan(self, kind: str, rng: np.random.Generator) -> list[tuple]: ...

    def _incidental_plan(self, rng: np.random.Generator) -> list[tuple]:
        """Findings unrelated to the label, in both classes alike."""
        plan = [("cardiomegaly", None)] if rng.random() < 0.08 else []
        if rng.random() < 0.05:
            plan.append(("effusion", (_side(rng),)))
        return plan

    def _plan(self, split: str, j: int) -> list[tuple]:
        rng = self._rng(split, j, _PLAN)
        if self._label(split, j):
            plan = self._positive_plan(rng)
        else:
            kinds = list(self._negatives)
            kind = kinds[rng.choice(len(kinds), p=list(self._negatives.values()))]
            plan = self._negative_plan(kind, rng) if kind != "normal" else []
        return plan + self._incidental_plan(rng)


class SyntheticCovidx(_BinaryTarget):
    """The COVIDx stand-in: positive = faint bilateral peripheral ground-glass opacity; hard negatives carry
    one-sided lobar consolidation, one-sided peripheral opacity or central haze."""

    name = "synthetic-covidx"
    _stream = 3
    _negatives = {"normal": 0.4, "consolidation": 0.2, "peripheral_opacity": 0.2, "central_haze": 0.2}

    def __init__(self, *, size: int = 3000, test_size: int = 400, image_size: int = 64, seed: int = 0,
                 positive_fraction: float = 0.13) -> None:
        super().__init__(size=size, test_size=test_size, image_size=image_size, seed=seed,
                         positive_fraction=positive_fraction)

    def _positive_plan(self, rng: np.random.Generator) -> list[tuple]:
        return [("peripheral_opacity", (0, 1))]

    def _negative_plan(self, kind: str, rng: np.random.Generator) -> list[tuple]:
        return [(kind, (_side(rng),))]

    def _incidental_plan(self, rng: np.random.Generator) -> list[tuple]:
        plan = super()._incidental_plan(rng)
        return plan + [("nodule", 1)] if rng.random() < 0.05 else plan


class SyntheticTB(_BinaryTarget):
    """The Shenzhen+Montgomery stand-in: positive = upper-zone nodular/cavitary pattern on one or both sides;
    negatives are normal or carry lower-zone consolidation, a single nodule or an effusion."""

    name = "synthetic-tb"
    task = Task("binary", ("normal", "tuberculosis"))
    _stream = 4
    _negatives = {"normal": 0.5, "lower_consolidation": 0.15, "nodule": 0.2, "effusion": 0.15}

    def __init__(self, *, size: int = 640, test_size: int = 160, image_size: int = 64, seed: int = 0,
                 positive_fraction: float = 0.5) -> None:
        super().__init__(size=size, test_size=test_size, image_size=image_size, seed=seed,
                         positive_fraction=positive_fraction)

    def _positive_plan(self, rng: np.random.Generator) -> list[tuple]:
        return [("tb", _one_or_both(rng, 0.35))]

    def _negative_plan(self, kind: str, rng: np.random.Generator) -> list[tuple]:
        return [(kind, 1 if kind == "nodule" else (_side(rng),))]
