"""Generation speed of the embedded synthetic datasets, one process: images/s through `load` (one image per
call) and through `render_batch` (the vectorised path), side by side in one run, printed as a table.
Each figure is the best of `--repeats` runs, as other processes on a shared machine only ever slow it down.

    python benchmarks/bench_synthetic.py [--image-size 64] [--images 512] [--threads 1] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import time


def _rate(fn, n: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return n / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--images", type=int, default=512, help="images per measurement")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (one process either way)")
    parser.add_argument("--repeats", type=int, default=3)
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
        single = _rate(lambda: [ds.load(str(i)) for i in range(n)], n, args.repeats)
        batched = _rate(lambda: ds.render_batch(range(n, 2 * n)), n, args.repeats)
        # records() caches its table, so each repeat times a fresh instance
        records = _rate(lambda: type(ds)(**ds.options).records(), 2 * n, args.repeats)
        rows.append((name, single, batched, batched / single, 1e6 / records))

    print(f"synthetic generation at {args.image_size} px, one process, {args.threads} BLAS thread(s), "
          f"{n} images per measurement, best of {args.repeats}")
    print(f"{'dataset':<20}{'load img/s':>12}{'batch img/s':>13}{'batch/load':>12}{'records us/img':>16}")
    for name, single, batched, ratio, rec in rows:
        print(f"{name:<20}{single:>12.0f}{batched:>13.0f}{ratio:>12.2f}{rec:>16.1f}")


if __name__ == "__main__":
    main()
