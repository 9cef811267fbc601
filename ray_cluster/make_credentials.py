"""`python -m ray_cluster.make_credentials SLURM_DIR [--ray-token]`: the job script's first step, the study's secrets
(ray_cluster/credentials.py). A command of its own because `python -m ray_cluster` reads configs, which imports
torch on the way: seconds on every job's critical path."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ray_cluster.credentials import make_credentials
from ray_cluster.in_job import StartupError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ray_cluster.make_credentials", description=make_credentials.__doc__)
    p.add_argument("slurm_dir", type=Path)
    p.add_argument("--ray-token", action="store_true", help="make Ray's token too")
    args = p.parse_args(argv)
    try:
        make_credentials(args.slurm_dir, ray_token=args.ray_token)
    except StartupError as e:
        print(f"ray_cluster: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
