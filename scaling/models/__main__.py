"""``python -m scaling.models list [LADDER] [--resolution R]`` or ``... download LADDER|--config STUDY.yaml``."""
from __future__ import annotations

import argparse

from scaling.config import load_config
from scaling.models.ladders import LADDERS, flops_per_image, params
from scaling.models.published import download_for_config
from scaling.models.weights import download


def main(argv: list[str] | None = None) -> None:
    """``python -m scaling.models list [LADDER] [--resolution R]`` or ``... download LADDER [--cache-dir DIR]``."""
    parser = argparse.ArgumentParser(prog="python -m scaling.models", description="Model ladders: rungs with parameters and FLOPs; published weights")
    sub = parser.add_subparsers(dest="command", required=True)
    show = sub.add_parser("list", help="rungs with parameters and forward FLOPs per image")
    show.add_argument("ladder", nargs="?", choices=list(LADDERS))
    show.add_argument("--resolution", type=int, default=224)
    fetch = sub.add_parser("download", help="pre-download published weights (login node): a ladder's, or exactly "
                                            "those a study config names (--config)")
    fetch.add_argument("ladder", nargs="?", choices=list(LADDERS))
    fetch.add_argument("--config", help="a study config: fetch the published weights of its sources and rungs")
    fetch.add_argument("--cache-dir", default=None, help="Hugging Face cache (default: HF_HUB_CACHE / HF_HOME)")
    args = parser.parse_args(argv)
    if args.command == "download":
        if (args.ladder is None) == (args.config is None):
            parser.error("download: give a LADDER or --config, not both")
        try:
            if args.config:
                download_for_config(load_config(args.config), args.cache_dir)
            else:
                download(args.ladder, args.cache_dir)
        except ValueError as e:  # ModelError, ConfigError
            parser.exit(2, f"error: {e}\n")
        return
    print(f"{'ladder':8} {'rung':8} {'params':>14} {'GFLOPs@' + str(args.resolution):>14}  weights")
    for ladder in [args.ladder] if args.ladder else list(LADDERS):
        for r in LADDERS[ladder].rungs:
            flops = flops_per_image(r, args.resolution) / 1e9
            print(f"{ladder:8} {r.name:8} {params(r):>14,} {flops:>14.4f}  {r.hub_id or '-'}")


if __name__ == "__main__":
    main()
