"""A tiny deterministic Dataset for the shard and subset tests (independent of scaling.data.synthetic)."""
from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd

from scaling.data.base import DataError, Dataset, Task


class TinyDataset(Dataset):
    """`n` images of `height` x `width` whose brightness depends on the label; a patient has
    `images_per_patient` consecutive images. `bad` keys raise DataError on load; after `slow_after` loads
    each further load sleeps `slow_seconds` (to kill a preparation mid-write). `loads` counts loads."""

    def __init__(self, *, n: int = 30, height: int = 24, width: int = 32, kind: str = "binary",
                 num_classes: int = 2, channels: int = 1, dtype: str = "uint8", seed: int = 0,
                 images_per_patient: int = 2, positive_fraction: float = 0.3, bad: tuple[str, ...] = (),
                 slow_after: int | None = None, slow_seconds: float = 0.0, name: str = "tiny"):
        self.name = name
        self.n, self.height, self.width, self.channels, self.dtype = n, height, width, channels, np.dtype(dtype)
        self.seed, self.bad, self.slow_after, self.slow_seconds = seed, set(bad), slow_after, slow_seconds
        classes = tuple(f"c{i}" for i in range(num_classes)) if kind != "binary" else ("negative", "positive")
        self.task = Task(kind, classes)
        rng = np.random.default_rng(seed)
        if kind == "binary":
            ys: list = list((rng.random(n) < positive_fraction).astype(int))
        elif kind == "multiclass":
            ys = list(np.arange(n) % num_classes)
        else:
            ys = [(rng.random(num_classes) < positive_fraction).astype(np.float32) for _ in range(n)]
        splits = np.where(np.arange(n) % 5 == 4, "test", "train")
        self._records = pd.DataFrame({
            "split": splits,
            "key": [f"img{i:05d}" for i in range(n)],
            "patient": [f"p{i // images_per_patient}" for i in range(n)],
            "y": ys,
        })
        self._options = dict(n=n, height=height, width=width, kind=kind, num_classes=num_classes,
                             channels=channels, dtype=dtype, seed=seed, images_per_patient=images_per_patient,
                             positive_fraction=positive_fraction, bad=sorted(self.bad))
        self.loads = 0

    def records(self) -> pd.DataFrame:
        return self._records.copy()

    def image(self, i: int) -> np.ndarray:
        """The deterministic image of row i."""
        rng = np.random.default_rng([self.seed, i])
        label = self._records["y"].iloc[i]
        level = 0.3 + 0.4 * float(np.max(label)) / max(len(self.task.classes) - 1, 1)
        shape = (self.height, self.width) if self.channels == 1 else (self.height, self.width, 3)
        pixels = np.clip(level + 0.1 * rng.standard_normal(shape), 0, 1)
        return (pixels * np.iinfo(self.dtype).max).round().astype(self.dtype)

    def load(self, key: str) -> np.ndarray:
        self.loads += 1
        if self.slow_after is not None and self.loads > self.slow_after:
            time.sleep(self.slow_seconds)
        if key in self.bad:
            raise DataError(f"/data/tiny/{key}.png: truncated PNG file")
        return self.image(int(key[3:]))

    def fingerprint(self) -> str:
        return json.dumps(self._options, sort_keys=True)
