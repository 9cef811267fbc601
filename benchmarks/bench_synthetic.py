"""Generation speed of the embedded synthetic datasets, one process: images/s through `load` (one image per
call) and through `render_batch` (the vectorised path), side by side in one run, printed as a table.

    python benchmarks/bench_synthetic.py [--image-size 64] [--images 512] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import time


def _rate(fn, n: int) -> float:
    start = time.perf_counter()
    fn()
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--images", type=int, default=512, help="images per measurement")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (one process either way)")
    args = parser.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # before numpy loads its BLAS

    from scaling.data.registry import open_dataset

    n = args.images
    rows = []
    for name in ("synthetic-natural", "synthetic-medical", "synthetic-covidx", "synthetic-tb"):
        ds = open_dataset(name, size=2 * n, test_size=0 if name in ("synthetic-natural", "synthetic-medical")
                          else 2, image_size=args.image_size)
        ds.render_batch(range(8))  # warm caches (grids, interpolation weights)
        single = _rate(lambda: [ds.load(str(i)) for i in range(n)], n)
        batched = _rate(lambda: ds.render_batch(range(n, 2 * n)), n)
        start = time.perf_counter()
        ds.records()
        rows.append((name, single, batched, batched / single, (time.perf_counter() - start) / (2 * n) * 1e6))

    print(f"synthetic generation at {args.image_size} px, one process, {args.threads} BLAS thread(s), "
          f"{n} images per measurement")
    print(f"{'dataset':<20}{'load img/s':>12}{'batch img/s':>13}{'batch/load':>12}{'records us/img':>16}")
    for name, single, batched, ratio, rec in rows:
        print(f"{name:<20}{single:>12.0f}{batched:>13.0f}{ratio:>12.2f}{rec:>16.1f}")


if __name__ == "__main__":
    main()
