"""The data stage's build throughput, measured side by side in one run on realistic inputs: generated 16-bit
grayscale PNGs of about 2,000 px (CR radiographs) and 8-bit 2,500 x 2,048 JPEGs (MIMIC-CXR-JPG), preprocessed to
512 px and stored as PNG shards, as studies/configs/covidx_bit.yaml does.

    python benchmarks/bench_data_stage.py [--png 72] [--jpeg 72] [--rows-per-shard 6] [--no-ray-data]

Rows: the build in this process; as plain Ray tasks (scaling.cluster.RayChunks, what the study uses) on a local
Ray of 1 and of 2 CPUs; and as Ray Data (`map_batches` + `write_parquet`, streaming) on 2 CPUs, the alternative
that was measured against it. Each Ray cluster is warmed up (its worker processes started and their imports done)
before it is timed. Then the leakage hash in the build against the build followed by the old hashing pass over
the decoded shards (both in one process), and the wall time of covidx_bit.yaml's data stage on 16 JUWELS Booster
nodes (48 cores each) projected from the measured per-core rate. Everything runs at niceness 15, Ray's for its
workers, and the machine's load is printed: on a shared machine the 1 -> 2 CPU ratio is bounded by what the other
processes leave.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from hashlib import sha256
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scaling.cluster import RayChunks  # noqa: E402
from scaling.data.base import Dataset, Task  # noqa: E402
from scaling.data.executors import in_process  # noqa: E402
from scaling.data.images import read_image  # noqa: E402
from scaling.data.leakage import hash_shards  # noqa: E402
from scaling.data.dhash import dhash  # noqa: E402
from scaling.data.shards import HASHES, Preprocess, ShardReader, ShardSet, prepare_shards  # noqa: E402
from scaling.data.shards.encode import stored_image  # noqa: E402
from scaling.files import MANIFEST  # noqa: E402

#: covidx_bit.yaml's sets (images): COVIDx 9B, and the merged chest X-ray source (CheXpert 224,316, MIMIC-CXR-JPG
#: 377,110, NIH ChestX-ray14 112,120, PadChest 160,868)
COVIDX_BIT = {"covidx 9B (target)": 30_882, "merged chest X-rays (medical)": 874_414}
NODES, CORES = 16, 48
ROWS_PER_SHARD = 2048  # the default chunk of a study's sets


class XrayFiles(Dataset):
    """The image files of a folder, one grayscale image each (16-bit PNGs stay 16-bit)."""

    name = "xray-files"
    task = Task("binary", ("negative", "positive"))
    channels = 1

    def __init__(self, root: Path):
        self.root = Path(root)
        self.keys = sorted(p.name for p in self.root.iterdir())

    def records(self) -> pd.DataFrame:
        return pd.DataFrame({"split": "train", "key": self.keys, "patient": self.keys, "y": 0})

    def load(self, key: str) -> np.ndarray:
        return read_image(self.root / key)

    def fingerprint(self) -> str:
        return json.dumps([str(self.root), self.keys])


def write_inputs(folder: Path, pngs: int, jpegs: int, side: int, seed: int = 0) -> None:
    """Radiograph-like images: a smooth random field (anatomy) plus noise, so that PNG compresses as it would."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)

    def field(height: int, width: int, peak: int) -> np.ndarray:
        coarse = Image.fromarray((rng.random((24, 20)) * 255).astype(np.uint8)).resize((width, height), Image.BILINEAR)
        smooth = np.asarray(coarse, dtype=np.float32) / 255
        return np.clip((0.2 + 0.6 * smooth + 0.03 * rng.standard_normal((height, width))) * peak, 0, peak)

    for i in range(pngs):
        Image.fromarray(field(side + side // 4, side, 65535).astype(np.uint16)).save(folder / f"cr{i:04d}.png")
    for i in range(jpegs):
        Image.fromarray(field(int(side * 1.25), int(side * 1.02), 255).astype(np.uint8)).save(
            folder / f"dx{i:04d}.jpg", quality=90)


def digests(folder: Path) -> dict[str, str]:
    return {f.name: sha256(f.read_bytes()).hexdigest() for f in folder.iterdir() if f.name != MANIFEST}


def timed(build) -> float:
    start = time.perf_counter()
    build()
    return time.perf_counter() - start


def ray_build(dataset: XrayFiles, preprocess: Preprocess, cache: Path, cpus: int, rows: int, warm: XrayFiles) -> float:
    """Seconds of a build on a local Ray of `cpus` CPUs, after a warm-up build that starts its workers."""
    with RayChunks(num_cpus=cpus) as ray_chunks:
        prepare_shards(warm, preprocess, cache / "warm-up", rows_per_shard=1, map_chunks=ray_chunks,
                       progress=lambda *_: None)
        return timed(lambda: prepare_shards(dataset, preprocess, cache, rows_per_shard=rows, map_chunks=ray_chunks,
                                            progress=lambda *_: None))


def ray_data_build(dataset: XrayFiles, preprocess: Preprocess, out: Path, cpus: int, rows: int,
                   warm: XrayFiles) -> float:
    """Seconds of the same work as Ray Data: keys -> map_batches(load, preprocess, encode, hash) -> write_parquet."""
    import ray

    def encode(batch: dict) -> dict:
        images = [stored_image(dataset, preprocess, str(key)) for key in batch["key"]]
        return {"key": batch["key"], "image": [data for _, data in images],
                "dhash": list(dhash(np.stack([pixels for pixels, _ in images])))}

    def run(keys: list[str], target: Path) -> None:
        items = ray.data.from_items([{"key": key} for key in keys], override_num_blocks=math.ceil(len(keys) / rows))
        items.map_batches(encode, batch_size=rows, num_cpus=1).write_parquet(str(target))

    with RayChunks(num_cpus=cpus) as ray_chunks:
        ray_chunks.cpus()  # starts the cluster
        ray.data.DataContext.get_current().enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        run(warm.keys, out / "warm-up")
        return timed(lambda: run(dataset.keys, out / "set"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--png", type=int, default=72, help="16-bit PNGs (fewer: fixed costs weigh on the 2-CPU ratio)")
    parser.add_argument("--jpeg", type=int, default=72, help="8-bit JPEGs")
    parser.add_argument("--side", type=int, default=2000, help="width of the inputs in px")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--rows-per-shard", type=int, default=6, help="images per chunk here (studies: 2048)")
    parser.add_argument("--no-ray-data", action="store_true", help="skip the Ray Data row")
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.nice(15 - os.nice(0))  # Ray runs its workers at niceness 15: every row at the same priority on a shared machine
    preprocess = Preprocess(args.resolution, encoding="png")
    rows = args.rows_per_shard

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_inputs(tmp / "images", args.png, args.jpeg, args.side)
        write_inputs(tmp / "warm", 2, 2, 64, seed=1)
        dataset, warm, n = XrayFiles(tmp / "images"), XrayFiles(tmp / "warm"), args.png + args.jpeg
        quiet = {"progress": lambda *_: None, "rows_per_shard": rows}

        load = os.getloadavg()[0]
        prepare_shards(warm, preprocess, tmp / "warm-up", map_chunks=in_process, **quiet)  # imports, caches
        t_in = timed(lambda: prepare_shards(dataset, preprocess, tmp / "in-process", map_chunks=in_process, **quiet))
        reference = digests(next((tmp / "in-process").glob("xray-files-*")))
        rows_table = [("in this process", 1, t_in)]
        rows_table.append(("Ray tasks", 1, ray_build(dataset, preprocess, tmp / "ray-1", 1, rows, warm)))
        rows_table.append(("Ray tasks", 2, ray_build(dataset, preprocess, tmp / "ray-2", 2, rows, warm)))
        for name in ("ray-1", "ray-2"):
            assert digests(next((tmp / name).glob("xray-files-*"))) == reference, f"{name}: other bytes"
        if not args.no_ray_data:
            rows_table.append(("Ray Data", 2, ray_data_build(dataset, preprocess, tmp / "ray-data", 2, rows, warm)))

        # hash in the build against build-then-hash (the guard's old pass, decoding the shards), one process:
        # what the build spends on the hash (dHash of the pixels it has in memory, in its batches of 64) against
        # that pass over a copy of the set without its hashes
        built = next((tmp / "in-process").glob("xray-files-*"))
        pixels = ShardReader(ShardSet.open(built)).take(range(n))
        t_dhash = timed(lambda: [dhash(pixels[i:i + 64]) for i in range(0, n, 64)])
        old = tmp / "old" / built.name
        shutil.copytree(built, old)
        (old / HASHES).unlink()
        t_pass = timed(lambda: hash_shards(ShardSet.open(old)))
        assert np.array_equal(hash_shards(ShardSet.open(old)), np.load(built / HASHES)), "hashes differ"
        load = max(load, os.getloadavg()[0])

    print(f"\ndata stage build: {args.png} 16-bit PNGs {args.side}x{args.side + args.side // 4} + {args.jpeg} "
          f"8-bit JPEGs {int(args.side * 1.02)}x{int(args.side * 1.25)} -> {args.resolution} px PNG shards, "
          f"chunks of {rows}; load average {load:.1f} on {os.cpu_count()} CPUs")
    print(f"{'engine':<18}{'CPUs':>5}{'seconds':>9}{'images/s':>10}{'vs 1 CPU':>10}")
    base = {engine: n / t for engine, cpus, t in rows_table if cpus == 1}
    for engine, cpus, seconds in rows_table:
        ratio = (n / seconds) / base.get(engine, base["Ray tasks"])
        print(f"{engine:<18}{cpus:>5}{seconds:>9.1f}{n / seconds:>10.2f}{ratio:>9.2f}x")
    then = t_in - t_dhash + t_pass
    print(f"\nleakage hash, one process: build with the hash {t_in:.1f} s (of which the hash {t_dhash:.2f} s, "
          f"{1000 * t_dhash / n:.1f} ms/image); build then hash {t_in - t_dhash:.1f} + {t_pass:.2f} s (decoding the "
          f"shards, {1000 * t_pass / n:.1f} ms/image) = {then:.1f} s; build-then-hash / hash-in-build {then / t_in:.3f}x")

    per_core = n / rows_table[1][2]
    cores = NODES * CORES
    chunk_s = ROWS_PER_SHARD / per_core
    print(f"\nprojection: covidx_bit.yaml's data stage on {NODES} Booster nodes x {CORES} cores = {cores} Ray tasks "
          f"at {per_core:.2f} images/s per core (Ray tasks, 1 CPU, here); chunks of {ROWS_PER_SHARD}: "
          f"{chunk_s / 60:.1f} min each")
    total = 0.0
    for name, images in COVIDX_BIT.items():
        chunks = math.ceil(images / ROWS_PER_SHARD)
        wall = math.ceil(chunks / cores) * chunk_s
        total += wall
        print(f"  {name:<32}{images:>9,} images {chunks:>5} chunks: {wall / 60:5.1f} min "
              f"(all cores busy: {images / per_core / cores / 60:.1f} min)")
    print(f"  {'data stage (sets one after another)':<32}{sum(COVIDX_BIT.values()):>9,} images"
          f"{'':>12} {total / 60:5.1f} min")


if __name__ == "__main__":
    main()
