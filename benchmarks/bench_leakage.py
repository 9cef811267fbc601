"""The leakage guard's cost at ImageNet-21k scale: hashing images/s and searching hashes/s, and memory per million.

Measured on one core in one run: PNG decoding of stored shard images (what a PNG-encoded shard set costs before
hashing), the batch dHash on decoded arrays, and the near-duplicate search of a target's evaluation images
(COVIDx 9B: 400 test + ~3,000 validation) against 1M source hashes; then extrapolated linearly to ImageNet-21k's
14,197,122 images. Memory: the hashes themselves (32 bytes per image) and the search's peak (tracemalloc, which
numpy reports to).

    python benchmarks/bench_leakage.py [--side 512] [--images 256] [--sources 1000000] [--queries 3400]
"""
from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from scaling.data.leakage import HASH_SIZE, dhash, near_duplicates
from scaling.data.encoding import decode_image, encode_image

IMAGENET21K = 14_197_122


def smooth_images(n: int, side: int, seed: int = 0) -> np.ndarray:
    """Distinct gray images: coarse random structure plus pixel noise (so that PNG files are about as large, and
    as slow to decode, as a radiograph's: ~60% of the raw bytes)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(16, 240, (n, 16, 16), dtype=np.uint8)
    coarse = np.repeat(np.repeat(small, -(-side // 16), axis=1), -(-side // 16), axis=2)[:, :side, :side]
    return (coarse + rng.integers(0, 16, coarse.shape, dtype=np.uint8)).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=512, help="stored image side (the real configs: 512)")
    parser.add_argument("--images", type=int, default=256, help="images hashed and decoded")
    parser.add_argument("--sources", type=int, default=1_000_000, help="source hashes searched")
    parser.add_argument("--queries", type=int, default=3400, help="target evaluation images")
    parser.add_argument("--max-distance", type=int, default=8)
    args = parser.parse_args()

    images = smooth_images(args.images, args.side)
    pngs = [encode_image(i, "png") for i in images]
    png_share = sum(map(len, pngs)) / images.nbytes
    started = time.perf_counter()
    for png in pngs:
        decode_image(png, 1, np.dtype(np.uint8))
    decode_rate = len(pngs) / (time.perf_counter() - started)
    started = time.perf_counter()
    hashes = dhash(images)
    hash_rate = len(images) / (time.perf_counter() - started)

    rng = np.random.default_rng(1)
    words = HASH_SIZE * HASH_SIZE // 64
    sources = rng.integers(0, 2**63, (args.sources, words), dtype=np.uint64)
    queries = rng.integers(0, 2**63, (args.queries, words), dtype=np.uint64)
    sources[12345] = queries[7]
    sources[12345, 0] ^= np.uint64(0b111)  # a planted near-duplicate, 3 bits away
    tracemalloc.start()
    started = time.perf_counter()
    pairs = near_duplicates(queries, sources, args.max_distance)
    search_seconds = time.perf_counter() - started
    search_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [tuple(p) for p in pairs] == [(7, 12345, 3)], pairs
    assert hashes.shape == (args.images, words)

    scale = IMAGENET21K / args.sources
    hash_bytes = words * 8
    rows = [
        ("PNG decode", f"{decode_rate:,.0f} img/s", f"{IMAGENET21K / decode_rate / 3600:,.1f} core-h", "-"),
        ("dHash (decoded)", f"{hash_rate:,.0f} img/s", f"{IMAGENET21K / hash_rate / 3600:,.1f} core-h",
         f"{hash_bytes * 1e6 / 2**20:,.1f} MiB"),
        (f"search {args.queries} queries", f"{args.sources / search_seconds:,.0f} hashes/s",
         f"{search_seconds * scale / 60:,.1f} core-min", f"{search_peak / 2**20:,.1f} MiB peak"),
    ]
    print(f"\nleakage guard at {args.side} px, {HASH_SIZE * HASH_SIZE}-bit dHash, one core; ImageNet-21k = "
          f"{IMAGENET21K:,} images")
    print(f"{'step':<26} {'rate':>18} {'at ImageNet-21k':>16} {'memory per 1M images':>22}")
    for row in rows:
        print(f"{row[0]:<26} {row[1]:>18} {row[2]:>16} {row[3]:>22}")
    print(f"(PNG files at {png_share:.0%} of the raw bytes)")
    print(f"hashes of ImageNet-21k in memory: {IMAGENET21K * hash_bytes / 2**30:.2f} GiB; the search's buffer does "
          f"not grow with the source (blocks of queries x sources)")


if __name__ == "__main__":
    main()
