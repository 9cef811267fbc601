"""Shard reader vs decoding PNG files every epoch, side by side in one run.

Writes `--n` grayscale PNG files at the output resolution (decode-only baseline) and at `--source` px (the
realistic baseline: decode and resize every epoch), prepares shards (raw uint8 and PNG-encoded) from the
large files, then reads every variant through the same DataLoader settings for `--epochs` epochs (the first
is a warm-up and not timed). Prints images/s and the ratio to the decode-only PNG baseline.

    python benchmarks/bench_shards.py [--n 2000] [--res 64] [--source 256] [--epochs 4] [--workers 2]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from torch.utils.data import DataLoader

from scaling.data.base import DataError, Dataset, Task
from scaling.data.preprocess import Preprocess, preprocess_image
from scaling.data.shards import ShardDataset, pixels_to_tensor, prepare_shards


class PngFiles(Dataset):
    """Grayscale PNG files in one directory, labelled by the parity of their number."""

    channels = 1
    task = Task("binary", ("even", "odd"))

    def __init__(self, *, root: Path):
        self.root = root
        self.name = f"bench-png-{root.name}"
        self.files = sorted(p.name for p in root.glob("*.png"))

    def records(self) -> pd.DataFrame:
        return pd.DataFrame({"split": "train", "key": self.files, "patient": self.files,
                             "y": [i % 2 for i in range(len(self.files))]})

    def load(self, key: str) -> np.ndarray:
        try:
            with Image.open(self.root / key) as image:
                return np.asarray(image)
        except OSError as err:
            raise DataError(f"{self.root / key}: {err}") from err

    def fingerprint(self) -> str:
        return f"{self.root}:{len(self.files)}"


class PngEveryEpoch:
    """The baseline: each item decodes its PNG file (and preprocesses it) again."""

    def __init__(self, dataset: PngFiles, preprocess: Preprocess):
        self.dataset, self.preprocess, self.keys = dataset, preprocess, dataset.files

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int):
        pixels = preprocess_image(self.dataset.load(self.keys[i]), self.preprocess, 1)
        return pixels_to_tensor(pixels[None])[0], i % 2


def write_pngs(root: Path, n: int, side: int) -> PngFiles:
    """Smooth X-ray-like intensity fields with noise, so PNG compression is realistic (neither trivial nor
    incompressible)."""
    root.mkdir(parents=True)
    yy, xx = np.mgrid[0:side, 0:side] / side
    for i in range(n):
        rng = np.random.default_rng(i)
        field = 0.5 + 0.3 * np.sin(2 * np.pi * (rng.random() * 3 * xx + rng.random())) * np.cos(3 * np.pi * yy)
        pixels = np.clip(field + 0.04 * rng.standard_normal((side, side)), 0, 1)
        Image.fromarray((pixels * 255).astype(np.uint8)).save(root / f"{i:06d}.png")
    return PngFiles(root=root)


def images_per_second(dataset, epochs: int, batch: int, workers: int) -> float:
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers,
                        persistent_workers=workers > 0)
    for _ in loader:  # warm-up epoch: worker start, caches
        pass
    start = time.perf_counter()
    for _ in range(epochs - 1):
        for _ in loader:
            pass
    return len(dataset) * (epochs - 1) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--res", type=int, default=64)
    parser.add_argument("--source", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    preprocess = Preprocess(args.res)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        small = write_pngs(tmp / f"png{args.res}", args.n, args.res)
        large = write_pngs(tmp / f"png{args.source}", args.n, args.source)
        timings = []
        for workers in sorted({1, args.workers}):
            start = time.perf_counter()
            raw = prepare_shards(large, preprocess, tmp / f"cache-w{workers}", workers=workers)
            timings.append(f"{args.n / (time.perf_counter() - start):.0f} img/s with workers={workers}")
        png = prepare_shards(large, Preprocess(args.res, encoding="png"), tmp / "cache-w1")
        print(f"prepare {args.n} images {args.source}px -> {args.res}px raw shards: {', '.join(timings)}")

        variants = [
            (f"PNG files {args.res}px, decode every epoch (baseline)", PngEveryEpoch(small, preprocess)),
            (f"PNG files {args.source}px, decode + resize every epoch", PngEveryEpoch(large, preprocess)),
            ("shards raw uint8, in memory", ShardDataset(raw)),
            ("shards raw uint8, lazy row-group cache per worker", ShardDataset(raw, memory_bytes=0)),
            ("shards PNG bytes, decoded in workers", ShardDataset(png)),
        ]
        settings = sorted({0, args.workers})
        rates = {(name, workers): images_per_second(ds, args.epochs, args.batch, workers)
                 for workers in settings for name, ds in variants}

    print(f"\n{args.n} images at {args.res}px, batch {args.batch}, shuffled, {args.epochs - 1} timed epochs after "
          f"one warm-up; ratio = images/s over the decode-only PNG baseline with the same loader workers\n")
    width = max(len(name) for name, _ in variants)
    header = "".join(f" {'workers=' + str(w) + ' img/s':>17} | {'ratio':>7} |" for w in settings)
    print(f"| {'reader':<{width}} |{header}")
    print(f"| {'-' * width} |" + " ----------------: | ------: |" * len(settings))
    for name, _ in variants:
        cells = "".join(f" {rates[name, w]:17.0f} | {rates[name, w] / rates[variants[0][0], w]:6.2f}x |"
                        for w in settings)
        print(f"| {name:<{width}} |{cells}")
    best_png = max(rates[variants[0][0], w] for w in settings)
    best_shards = max(rate for (name, _), rate in rates.items() if name.startswith("shards raw"))
    print(f"\nbest raw shards / best decode-only PNG (each at its best worker count): "
          f"{best_shards / best_png:.1f}x")


if __name__ == "__main__":
    main()
