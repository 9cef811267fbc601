"""The loader at scale, side by side in one run: images/s per loader process at 512 px from a shard set at least
10x the loader's memory budget (read batch by batch), against the same set held in memory, against pure
decoding, and against today's reader (16-image row groups, one image at a time through an LRU of groups); raw
and PNG; bytes read per image (counted by the kernel: /proc/self/io rchar). Then the encodings' bytes per image
and decode cost per core at 224 and 512 px (OpenCV, which the loader uses, and Pillow), the cache size of the
real configs, and the loader processes one A100 needs for R50x1 at 480 px.

    python benchmarks/bench_loader.py [--n 3000] [--res 512] [--memory-mb 48] [--batches 10] [--rounds 3]
                                      [--cache DIR]   # keep the built sets for the next run

Images: chest phantoms of `synthetic-medical` (and `synthetic-natural` for colour), a few rendered and the set
made of them shifted, flipped and with a little noise each (rendering all of them would take an hour here).
Reads come from the page cache (the set was just written); rows "cold" drop the set's pages first
(posix_fadvise DONTNEED), so that they read the local disk.
"""
from __future__ import annotations

import argparse
import functools
import io
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from scaling.data.base import Dataset, Task
from scaling.data.encoding import decode_image, encode_image
from scaling.data.preprocess import Preprocess
from scaling.data.registry import open_dataset
from scaling.data.shards import ShardDataset, ShardSet, pixels_to_tensor, prepare_shards
from scaling.train.batches import StepBatches

ROOT = Path(__file__).resolve().parent.parent
#: today's row-group rule (4 MiB groups): the "today" rows rewrite the set with it
OLD_GROUP_BYTES = 4 << 20
#: R50x1 at 480 px, forward (scaling.models.flops_per_image); training ~3x forward; 40% of an A100's bf16 peak
R50X1_FORWARD_FLOP, TRAIN_FACTOR, A100_FLOPS = 37.5e9, 3, 0.4 * 312e12
#: images of the real configs' datasets (published counts; COVIDx 9B about 30k)
REAL_IMAGES = {"covidx": 30_000, "chexpert": 224_316, "mimic-cxr": 377_110, "nih": 112_120, "padchest": 160_861,
               "shenzhen-montgomery": 800}
ENCODINGS = ("raw", "png", "jpeg:95", "jpeg:90", "jpeg:75", "webp:90")
TODAY = "lazy, today's reader"
DECODE_ROUNDS = 5
LAZY = "lazy, this reader"
DECODE_BOUND = "decode-bound (in memory: decode + tensors)"


def phantoms(name: str, side: int, count: int, **options) -> list[np.ndarray]:
    dataset = open_dataset(name, size=count, image_size=side, **options)
    return [dataset.load(key) for key in list(dataset.records()["key"])[:count]]


class Variations(Dataset):
    """`n` grayscale images made of a few phantoms: each shifted, maybe flipped, with its own faint noise."""

    channels = 1
    task = Task("binary", ("negative", "positive"))
    name = "bench-loader"

    def __init__(self, bases: list[np.ndarray], n: int):
        self.bases, self.n = bases, n

    def records(self) -> pd.DataFrame:
        keys = [f"{i:06d}" for i in range(self.n)]
        return pd.DataFrame({"split": "train", "key": keys, "patient": keys, "y": np.arange(self.n) % 2})

    def load(self, key: str) -> np.ndarray:
        i = int(key)
        rng = np.random.default_rng(i)
        image = np.roll(self.bases[i % len(self.bases)], tuple(rng.integers(-20, 21, 2)), axis=(0, 1))
        image = image[:, ::-1] if rng.random() < 0.5 else image
        return np.clip(image + rng.normal(0, 2, image.shape), 0, 255).astype(np.uint8)

    def fingerprint(self) -> str:
        return f"{len(self.bases)}x{self.bases[0].shape}:{self.n}"


def rchar() -> int:
    """Bytes this process has read through read()/pread() so far (what a reader asked the file system for)."""
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


def drop_page_cache(shards: ShardSet) -> None:
    for name in shards.files:
        fd = os.open(shards.path / name, os.O_RDONLY)
        try:
            os.fsync(fd)  # dirty pages are not dropped
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def with_old_groups(shards: ShardSet, where: Path) -> ShardSet:
    """A copy of the set with today's row groups (4 MiB: 16 images at 512 px), same compression."""
    shutil.copytree(shards.path, where)
    image_bytes = int(np.prod(shards.shape)) * shards.dtype.itemsize
    rows = max(1, min(shards.rows_per_shard, OLD_GROUP_BYTES // image_bytes))
    compression = "zstd" if shards.preprocess.encoding == "raw" else "none"
    manifest = json.loads((where / "manifest.json").read_text())
    for name in shards.files:
        pq.write_table(pq.read_table(shards.path / name), where / name, row_group_size=rows, compression=compression)
        manifest["files"][name] = (where / name).stat().st_size
    manifest["rows_per_group"] = rows
    (where / "manifest.json").write_text(json.dumps(manifest))
    return ShardSet.open(where)


class TodaysLazyReader:
    """Today's lazy path on today's row groups, kept here only: per image, its whole row group through an LRU of groups
    (cache_groups = memory_bytes / group bytes), then one tensor conversion per batch. Plain reads instead of
    today's memory map, so that its reads are counted (the bytes are the same)."""

    def __init__(self, shards: ShardSet, memory_bytes: int):
        self.shards = shards
        group_bytes = shards.stored_bytes / len(shards) * shards.rows_per_group
        self.files = [pq.ParquetFile(shards.path / name) for name in shards.files]
        self.group = functools.lru_cache(maxsize=max(2, int(memory_bytes // group_bytes)))(self._group)

    def _group(self, file_no: int, group: int):
        column = self.files[file_no].read_row_group(group, columns=["image"]).column("image").combine_chunks()
        if self.shards.preprocess.encoding != "raw":
            return column
        return np.frombuffer(column.buffers()[1], np.uint8, count=len(column) * column.type.byte_width,
                             offset=column.offset * column.type.byte_width).reshape(len(column), *self.shards.shape)

    def __getitems__(self, indices):
        pixels = []
        for index in indices:
            file_no, row = divmod(int(index), self.shards.rows_per_shard)
            group, row = divmod(row, self.shards.rows_per_group)
            images = self.group(file_no, group)
            pixels.append(images[row] if isinstance(images, np.ndarray)
                          else decode_image(images[row].as_buffer(), 1, self.shards.dtype))
        return pixels_to_tensor(np.stack(pixels))


class PureDecoding:
    """Each image's stored bytes already in memory, decoded (PNG) or decompressed (raw: zstd, as Parquet stores
    it), nothing read; `tensors`: also converted as the dataset converts a batch, i.e. the decode-bound rate
    of a loader process."""

    def __init__(self, shards: ShardSet, tensors: bool):
        self.shards, self.tensors = shards, tensors
        stored = ShardDataset(shards, memory_bytes=1 << 40)._preloaded
        self.codec = pa.Codec("zstd")
        self.stored = [self.codec.compress(image.tobytes(), asbytes=True) for image in stored] \
            if isinstance(stored, np.ndarray) else [item.as_buffer() for item in stored]

    def __getitems__(self, indices):
        if self.shards.preprocess.encoding == "raw":
            size = int(np.prod(self.shards.shape))
            pixels = [np.frombuffer(self.codec.decompress(self.stored[i], size), np.uint8) for i in indices]
        else:
            pixels = [decode_image(self.stored[i], 1, self.shards.dtype) for i in indices]
        return pixels_to_tensor(np.stack(pixels).reshape(-1, *self.shards.shape)) if self.tensors else pixels


def measure(variants: list, batches: list[list[int]], rounds: int) -> dict[str, tuple[float, float]]:
    """name -> (images/s, bytes read per image): the best of `rounds` interleaved rounds over `batches` (the
    machine is shared), after one batch of warm-up (opening files). A variant with a shard set drops its
    pages from the page cache before each round."""
    best: dict[str, tuple[float, float]] = {}
    for name, reader, _ in variants:
        reader.__getitems__(batches[0])
    for _ in range(rounds):
        for name, reader, cold in variants:
            if cold is not None:
                drop_page_cache(cold)
            mine = batches[1:] if not name.startswith(TODAY) else batches[1:len(batches) // 2 + 1]  # slow: half
            images = sum(len(b) for b in mine)
            read, start = rchar(), time.perf_counter()
            for batch in mine:
                reader.__getitems__(batch)
            images_s = images / (time.perf_counter() - start)
            if images_s > best.get(name, (0.0, 0.0))[0]:
                best[name] = (images_s, (rchar() - read) / images)
    return best


def loader_table(args, tmp: Path) -> dict:
    bases = phantoms("synthetic-medical", args.res, 8)
    dataset = Variations(bases, args.n)
    budget = args.memory_mb << 20
    steps = StepBatches(np.arange(args.n), args.batch, seed=0, start=0, stop=args.batches + 1)
    batches = list(steps)
    rows, rates = [], {}
    for encoding in ("raw", "png"):
        start = time.perf_counter()
        shards = prepare_shards(dataset, Preprocess(args.res, encoding=encoding), args.cache or tmp / "cache")
        built = time.perf_counter() - start
        old = with_old_groups(shards, tmp / f"old-{encoding}")
        per_image = shards.stored_bytes / len(shards)
        print(f"{encoding}: {args.n} images at {args.res} px built in {built:.0f} s; {shards.stored_bytes / 2**20:.0f} "
              f"MiB stored ({shards.stored_bytes / budget:.0f}x the loader's memory budget of {args.memory_mb} MiB); "
              f"row groups of {shards.rows_per_group} image(s), today {old.rows_per_group}", flush=True)
        if shards.stored_bytes < 10 * budget:
            raise SystemExit(f"the {encoding} set must be at least 10x the loader's memory budget: lower --memory-mb")
        variants = [("in memory", ShardDataset(shards, memory_bytes=1 << 40), None),
                    ("pure decoding", PureDecoding(shards, tensors=False), None),
                    (DECODE_BOUND, PureDecoding(shards, tensors=True), None),
                    (LAZY, ShardDataset(shards, memory_bytes=budget), None),
                    (LAZY + ", cold", ShardDataset(shards, memory_bytes=budget), shards),
                    (TODAY, TodaysLazyReader(old, budget), None),
                    (TODAY + ", cold", TodaysLazyReader(old, budget), old)]
        assert variants[3][1]._preloaded is None and variants[0][1]._preloaded is not None
        for name, (images_s, read) in measure(variants, batches, args.rounds).items():
            rates[encoding, name] = images_s
            rows.append((encoding, name, images_s, read, read / per_image))
    print(f"\n{args.res} px, batches of {args.batch} from StepBatches (seed 0), one loader process; "
          f"x = images/s over the named reader's, same encoding; read/stored: bytes read per image over the "
          f"stored bytes per image\n")
    print("| encoding | reader | images/s | x in memory | x decode-bound | x today | bytes read/image | read/stored |")
    print("| -------- | ------ | -------: | ----------: | -------------: | ------: | ---------------: | ----------: |")
    for encoding, name, images_s, read, ratio in rows:
        today = rates[encoding, TODAY + (", cold" if name.endswith("cold") else "")]
        print(f"| {encoding} | {name} | {images_s:,.0f} | {images_s / rates[encoding, 'in memory']:.2f} | "
              f"{images_s / rates[encoding, DECODE_BOUND]:.2f} | {images_s / today:.1f} | {read:,.0f} | "
              f"{ratio:.2f} |")
    return rates


def encodings_table() -> dict:
    """Bytes per image and decode ms per image on one core, for each encoding at 224 and 512 px."""
    import cv2
    from PIL import Image

    cv2.setNumThreads(1)
    codec = pa.Codec("zstd")
    print("\nEncodings: bytes per image and decode cost on one core (mean over the images; raw = zstd as "
          "Parquet stores it)\n")
    print("| images | px | encoding | bytes/image | x raw | OpenCV ms | Pillow ms | OpenCV images/s per core |")
    print("| ------ | -: | -------- | ----------: | ----: | --------: | --------: | -----------------------: |")
    sizes = {}
    for kind, name, options in (("X-ray (gray)", "synthetic-medical", {}),
                                ("natural (RGB)", "synthetic-natural", {"num_classes": 20})):
        for side in (224, 512):
            images = phantoms(name, side, 6, **options)
            channels = images[0].ndim == 3 and 3 or 1
            for encoding in ENCODINGS:
                if encoding == "raw":
                    stored = [codec.compress(image.tobytes(), asbytes=True) for image in images]
                    opencv = lambda data, n=images[0].nbytes: codec.decompress(data, n)  # noqa: E731
                    pillow = opencv
                else:
                    stored = [encode_image(image, encoding) for image in images]
                    opencv = lambda data: decode_image(data, channels, np.dtype(np.uint8))  # noqa: E731
                    pillow = lambda data: np.asarray(Image.open(io.BytesIO(data)).convert(  # noqa: E731
                        "RGB" if channels == 3 else "L"))
                timings = {}
                for label, decode in (("opencv", opencv), ("pillow", pillow)):
                    best = math.inf
                    for _ in range(DECODE_ROUNDS):  # the best round: the machine is shared
                        start = time.perf_counter()
                        for data in stored:
                            decode(data)
                        best = min(best, (time.perf_counter() - start) / len(stored))
                    timings[label] = best * 1e3
                size = float(np.mean([len(data) for data in stored]))
                sizes[kind, side, encoding] = size
                print(f"| {kind} | {side} | {encoding} | {size:,.0f} | {size / images[0].nbytes:.2f} | "
                      f"{timings['opencv']:.2f} | {timings['pillow']:.2f} | {1e3 / timings['opencv']:,.0f} |",
                      flush=True)
    return sizes


def cache_table(sizes: dict) -> None:
    """The shard cache of each real config: images x bytes per image of its encoding at its resolution."""
    print("\nShard cache of the real configs (images x bytes per image measured above; 512 px measured, other "
          "resolutions scaled by pixel count)\n")
    print("| config | sets (images) | px | encoding | cache | as raw | as jpeg:90 |")
    print("| ------ | ------------- | -: | -------- | ----: | -----: | ---------: |")
    for path in sorted((ROOT / "studies" / "configs").glob("*_bit.yaml")):
        data = yaml.safe_load(path.read_text())["data"]
        refs = [data["target"]] + [ref for ref in data.get("sources", {}).values() if ref.get("dataset") or
                                   ref.get("merge")]
        names = [r["dataset"] for ref in refs for r in (ref.get("merge") or [ref])]
        images = sum(REAL_IMAGES[name] for name in names)
        side, encoding = data["resolution"], data.get("encoding", "raw")
        scale = (side / 512) ** 2

        def cache(enc: str) -> str:
            return f"{images * sizes['X-ray (gray)', 512, enc] * scale / 1e9:,.0f} GB"
        listed = ", ".join(f"{n} {REAL_IMAGES[n] / 1e3:,.0f}k" for n in names)
        print(f"| {path.name} | {listed}: {images / 1e3:,.0f}k | {side} | {encoding} | {cache(encoding)} | "
              f"{cache('raw')} | {cache('jpeg:90')} |")


def a100_line(rates: dict) -> None:
    need = A100_FLOPS / (R50X1_FORWARD_FLOP * TRAIN_FACTOR)
    resources = yaml.safe_load((ROOT / "studies/configs/covidx_bit.yaml").read_text())["resources"]
    print(f"\nOne A100 training R50x1 at 480 px at 40% of 312 TFLOP/s consumes {need:,.0f} images/s "
          f"(37.5 GFLOP forward x 3).")
    for encoding in ("raw", "png"):
        for name in (LAZY, LAZY + ", cold"):
            per = rates[encoding, name]
            print(f"  {encoding:>3} shards, {name}: {per:,.0f} images/s per loader process -> "
                  f"{math.ceil(need / per)} loader processes per GPU")
    print(f"covidx_bit.yaml: loader_workers {resources['loader_workers']}, cpus_per_worker "
          f"{resources['cpus_per_worker']} per GPU worker")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--res", type=int, default=512)
    parser.add_argument("--memory-mb", type=int, default=48, help="the lazy loader's memory budget")
    parser.add_argument("--batches", type=int, default=10, help="timed batches per reader and round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best counts")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--cache", type=Path, help="shard cache to build in and reuse (default: a temporary one)")
    parser.add_argument("--skip-encodings", action="store_true", help="only the loader table")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rates = loader_table(args, Path(tmp))
    if not args.skip_encodings:
        cache_table(encodings_table())
    a100_line(rates)


if __name__ == "__main__":
    main()
