"""Run a scaling study of transfer learning: data -> pre-training -> fine-tuning sweep -> fitted laws.

    python studies/scaling_law.py [--config studies/configs/default.yaml] [--out DIR]
                                  [--address HOST:PORT] [--tracking-uri URI] [key.path=value ...]
    python studies/scaling_law.py --config CONFIG --rehearse [--out DIR] [--address HOST:PORT] [--tracking-uri URI]
                                  [key.path=value ...]

--rehearse runs every stage of the config's path on this machine's CPUs in minutes, on stand-in data and
weights written under DIR (default: runs/<study name>-rehearsal) in the real layouts, at a reduced grid, and
prints a checklist, what the real run needs and its projected cost (DIR/rehearsal.md). With --address and
--tracking-uri its study runs on that Ray cluster and logs to that MLflow server. Exit 0 when every stage passed,
1 otherwise, 75 stopped on SIGUSR1/SIGTERM (rerun the same command to rehearse again).

Without a config it runs the embedded default study on data the package generates itself (no GPU, no
downloads). Exit codes: 0 done, 1 some jobs failed (rerun to retry them), 2 bad config, 3 bad data,
75 stopped on SIGUSR1/SIGTERM (rerun the same command to resume).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scaling.config import DEFAULT_CONFIG, ConfigError, load_config, override_help
from scaling.data.base import DataError
from scaling.files import NoSpace


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scaling_law.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="config keys (override any with key.path=value; values are YAML):\n" + "\n".join(override_help()))
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="study config YAML (default: %(default)s)")
    parser.add_argument("--out", help="study directory (default: runs/<study name>)")
    parser.add_argument("--address", help="join this Ray cluster (default: $RAY_ADDRESS, else start a local one)")
    parser.add_argument("--tracking-uri", help="log to this MLflow server (default: start one in the study dir)")
    parser.add_argument("--rehearse", action="store_true",
                        help="rehearse the config on this machine (stand-ins, reduced grid) and print a checklist")
    parser.add_argument("overrides", nargs="*", metavar="key.path=value")
    args = parser.parse_args(argv)
    # the study and the dashboard load torch, Ray, Optuna and Altair (seconds): --help answers without them
    import dashboards
    from scaling.study import EXIT_CONFIG, EXIT_DATA, EXIT_FAILED, run_study

    try:
        cfg = load_config(args.config, args.overrides)
        if args.rehearse:
            from scaling.rehearse.run import rehearse

            return rehearse(cfg, args.out or f"runs/{cfg.name}-rehearsal", command=[sys.executable, str(Path(
                __file__).resolve())], address=args.address, tracking_uri=args.tracking_uri,
                config_path=args.config)
        return run_study(cfg, out=args.out, address=args.address, tracking_uri=args.tracking_uri,
                         dashboard=dashboards.build)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    except DataError as e:
        print(f"data error: {e}", file=sys.stderr)
        return EXIT_DATA
    except NoSpace as e:  # shards or the results table (a pre-training job's own is its trial's error)
        print(f"disk full: {e}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
