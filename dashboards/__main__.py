"""``python -m dashboards build runs/<name> [--out FILE]``: (re)build a study's dashboard."""
from __future__ import annotations

import argparse
import sys

from dashboards import StudyDirError, build


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboards", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    cmd = commands.add_parser("build", help="write <study>/dashboard.html from the study's results and fits")
    cmd.add_argument("study", help="the study directory, e.g. runs/default")
    cmd.add_argument("--out", help="write the page here instead")
    args = parser.parse_args(argv)
    try:
        path = build(args.study, args.out)
    except StudyDirError as e:
        parser.error(str(e))
    print(f"{path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
