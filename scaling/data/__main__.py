"""`python -m scaling.data`: check a dataset before a study, and materialise its shards.

    python -m scaling.data describe covidx --root /data/covidx --version 9B [--json]
    python -m scaling.data describe chexpert --root /data/CheXpert-v1.0 --option uncertainty=zeros
    python -m scaling.data describe --config studies/configs/covidx_bit.yaml --source medical
    python -m scaling.data prepare covidx --root /data/covidx --resolution 480 --cache /scratch/cache
    python -m scaling.data prepare nih --root /data/nih --resolution 512 --encoding png --address auto

`describe` parses the label files, checks that every listed image exists (without decoding any; pass
`--option check_files=false` to skip that), and prints per split the image and patient counts and the images
per class (for multilabel sets: the images where the class is positive); `--json` prints
`scaling.data.base.describe` as JSON. With `--config FILE --source ROLE` it describes a study's source (or
`--source target`); for a merged source, one column per member shows what each contributes on the merged labels.
`prepare` builds (or finds) the shard set of the dataset under the given
preprocessing, chunk by chunk as Ray tasks on every CPU of a local Ray (`--cpus`), or of a running cluster with
`--address` (e.g. a CPU partition ahead of the study), with a progress line (images/s, time left); a killed
build run again builds only the chunks it had not finished. Options beyond --root/--version go as repeated `--option key=value`, checked against the
dataset's constructor. Bad input ends with one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import sys
import typing
from typing import Any

import yaml

from scaling.config import DataConfig, coerce, has_own_data, load_config
from scaling.data import registry
from scaling.data.base import SPLITS, DataError, Dataset, describe
from scaling.data.merged import MergedDataset
from scaling.data.encoding import EXPECTED as ENCODINGS_EXPECTED
from scaling.data.preprocess import CROPS, STORAGES, Preprocess
from scaling.cluster import RayChunks
from scaling.data.shards import BAD_IMAGE_POLICIES, ProgressLine, prepare_shards, shard_path
from scaling.data.stage import open_source

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line."""
    def error(self, message: str) -> typing.NoReturn:
        self.exit(EXIT_BAD_INPUT, f"error: {message} (see {self.prog} --help)\n")


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0, or 2 for bad input)."""
    args = _build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (DataError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m scaling.data", description=__doc__.split("\n\n")[0],
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def dataset_command(name: str, help: str, optional: bool = False) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument("dataset", choices=registry.NAMES, metavar="DATASET", nargs="?" if optional else None,
                         help=f"one of: {', '.join(registry.NAMES)}")
        sub.add_argument("--root", help="the dataset's folder (real datasets)")
        sub.add_argument("--version", help="dataset version (e.g. COVIDx 8A, 8B, 9A, 9B)")
        sub.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                         help="a further dataset option, repeatable (e.g. uncertainty=zeros, frontal_only=false, "
                              "check_files=false)")
        return sub

    describe_cmd = dataset_command("describe", "image and patient counts per split and class", optional=True)
    describe_cmd.add_argument("--json", action="store_true", help="print scaling.data.base.describe as JSON")
    describe_cmd.add_argument("--config", help="a study config: describe one of its sources instead of DATASET")
    describe_cmd.add_argument("--source", default="medical", help="with --config: target, natural or medical "
                                                                   "(default %(default)s)")
    describe_cmd.set_defaults(run=_run_describe)

    prepare_cmd = dataset_command("prepare", "preprocess the dataset into Parquet shards in the cache")
    prepare_cmd.add_argument("--resolution", type=int, required=True, help="side length of the stored images")
    prepare_cmd.add_argument("--crop", choices=CROPS, default="center", help="center: central square first")
    prepare_cmd.add_argument("--clahe", action="store_true", help="adaptive histogram equalisation")
    prepare_cmd.add_argument("--storage", choices=STORAGES, default="uint8", help="stored pixel type")
    prepare_cmd.add_argument("--encoding", default="raw",
                             help=f"{ENCODINGS_EXPECTED}: raw pixels (small sets), PNG (large X-ray sets), JPEG or WebP "
                                  "(natural images at scale); default %(default)s")
    prepare_cmd.add_argument("--cache", default=_default_cache_dir(), metavar="DIR",
                             help="shard cache folder (default: the study config's default, %(default)s)")
    prepare_cmd.add_argument("--on-bad-image", choices=BAD_IMAGE_POLICIES, default="error",
                             help="error: stop at the first unreadable image; skip: leave it out and count it")
    prepare_cmd.add_argument("--cpus", type=_positive, help="CPUs of the local Ray started for the build "
                                                               "(default: every CPU of this machine)")
    prepare_cmd.add_argument("--address", help="join the running Ray cluster at this address (or 'auto') and "
                                               "build on all its CPUs")
    prepare_cmd.add_argument("--rows-per-shard", type=_positive, default=2048,
                             help="images per shard file, the unit of work of the build (default %(default)s)")
    prepare_cmd.set_defaults(run=_run_prepare)
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _default_cache_dir() -> str:
    return next(f.default for f in dataclasses.fields(DataConfig) if f.name == "cache_dir")


# ---------------------------------------------------------------------------------------------- options

def dataset_from_args(name: str, root: str | None, version: str | None, options: list[str]) -> Dataset:
    """The dataset `name` built from command-line options; ValueError naming the option when a key is
    unknown, a value does not parse, or a required option is missing."""
    accepted = registry.dataset_options(name)
    hints = typing.get_type_hints(registry.dataset_class(name).__init__)
    given: dict[str, Any] = {}
    pairs = [("root", root, "--root"), ("version", version, "--version")]
    for text in options:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise ValueError(f"--option {text!r}: expected KEY=VALUE")
        pairs.append((key.strip(), value, f"--option {key.strip()}"))
    for key, value, flag in pairs:
        if value is None:
            continue
        if key not in accepted:
            raise ValueError(f"{flag}: dataset {name!r} has no option {key!r}; its options are: "
                             f"{', '.join(accepted) or '(none)'}")
        if key in given:
            raise ValueError(f"{flag}: option {key!r} is given twice")
        given[key] = parse_option(hints.get(key, Any), value, flag)
    for key, param in accepted.items():
        if param.default is inspect.Parameter.empty and key not in given:
            flag = f"--{key}" if key in ("root", "version") else f"--option {key}=..."
            raise ValueError(f"dataset {name!r} needs {flag}")
    return registry.open_dataset(name, **given)


def parse_option(hint: Any, text: str, flag: str) -> Any:
    """`text` converted to the annotated type of a dataset option (scaling.config.coerce: bool, int, float, str,
    Literal); ValueError naming `flag` and what was expected. An untyped option is read as YAML."""
    return yaml.safe_load(text) if hint is Any else coerce(hint, text, flag, text=True)


# ---------------------------------------------------------------------------------------------- commands

def _run_describe(args: argparse.Namespace) -> int:
    if (args.dataset is None) == (args.config is None):
        raise ValueError("describe: give a DATASET or --config FILE --source ROLE")
    dataset = _config_source(args.config, args.source) if args.config else \
        dataset_from_args(args.dataset, args.root, args.version, args.option)
    if isinstance(dataset, MergedDataset):
        return _describe_merged(dataset, args)
    summary = describe(dataset)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    records = dataset.records()
    splits = list(summary)
    images = records["split"].value_counts()
    rows = [("images", [int(images.get(s, 0)) for s in splits]),
            ("patients", [summary[s]["patients"] for s in splits])]
    rows += [(label, [summary[s]["classes"][label] for s in splits]) for label in dataset.task.classes]
    print(_title(dataset, args))
    print(format_table(["", *splits], rows))
    if dataset.task.kind == "multilabel":
        print("(class rows: images where the finding is positive; uncertain and missing labels are not counted)")
    return 0


def _config_source(path: str, role: str) -> Dataset:
    cfg = load_config(path)
    refs = {"target": cfg.data.target, **cfg.data.sources}
    if role not in refs or not has_own_data(refs[role]):
        raise ValueError(f"--source {role}: {path} has no such source with images; its sources: "
                         f"{', '.join(r for r, ref in refs.items() if has_own_data(ref))}")
    return open_source(f"data.sources.{role}", refs[role])


def _describe_merged(dataset: MergedDataset, args: argparse.Namespace) -> int:
    """One column per member and one for the merged set: images per split, patients, positives per label."""
    parts = dataset.contributions()
    if args.json:
        print(json.dumps(parts, indent=2))
        return 0
    names = list(parts)
    rows = [(f"{split} images", [parts[n]["images"][split] for n in names]) for split in SPLITS]
    rows.append(("patients", [parts[n]["patients"] for n in names]))
    rows += [(label, [parts[n]["classes"][label] for n in names]) for label in dataset.task.classes]
    print(f"{dataset.name}: multilabel, {len(dataset.task.classes)} {dataset.labels} labels "
          "(torchxrayvision's names)")
    print(format_table(["", *names], rows))
    print("(label rows: images where the finding is positive, over all splits)")
    return 0


def _run_prepare(args: argparse.Namespace) -> int:
    dataset = dataset_from_args(args.dataset, args.root, args.version, args.option)
    preprocess = Preprocess(resolution=args.resolution, crop=args.crop, clahe=args.clahe, storage=args.storage,
                            encoding=args.encoding)
    progress = ProgressLine(shard_path(dataset, preprocess, args.cache).name, interval=0)
    with RayChunks(args.address, args.cpus) as map_chunks:
        shards = prepare_shards(dataset, preprocess, args.cache, on_bad_image=args.on_bad_image,
                                rows_per_shard=args.rows_per_shard, progress=progress, map_chunks=map_chunks)
    counts = shards.records["split"].value_counts()
    splits = [s for s in SPLITS if s in counts]
    print(_title(dataset, args))
    print(f"shards: {shards.path}")
    print(format_table(["", *splits], [("images", [int(counts[s]) for s in splits])]))
    print(f"stored: {len(shards):,} images of shape {'x'.join(map(str, shards.shape))} {args.storage} "
          f"({_size(shards.stored_bytes)} in {len(shards.files)} files); skipped bad images: {shards.skipped:,}")
    for key in shards.skipped_keys[:10]:
        print(f"  skipped: {key}")
    if shards.skipped > 10:
        print(f"  ... and {shards.skipped - 10:,} more")
    return 0


def _size(n: float) -> str:
    units = ("bytes", "KiB", "MiB", "GiB", "TiB")
    step = 0
    while n >= 1024 and step < len(units) - 1:
        n, step = n / 1024, step + 1
    return f"{n:,.0f} bytes" if step == 0 else f"{n:,.1f} {units[step]}"


def _title(dataset: Dataset, args: argparse.Namespace) -> str:
    settings = [f"root={args.root}"] if args.root else []
    settings += [f"version={args.version}"] if args.version else []
    settings += args.option
    task = dataset.task
    return (f"{dataset.name}{' (' + ', '.join(settings) + ')' if settings else ''}: {task.kind}, "
            f"{len(task.classes)} classes")


def format_table(header: list[str], rows: list[tuple[str, list[int]]]) -> str:
    """A plain-text table: row labels left-aligned, counts right-aligned with thousands separators."""
    cells = [[label, *(f"{v:,}" for v in values)] for label, values in rows]
    widths = [max(len(str(col)) for col in column) for column in zip(header, *cells)]
    lines = []
    for row in [header, *cells]:
        lines.append("  ".join([str(row[0]).ljust(widths[0])] + [str(c).rjust(w) for c, w in zip(row[1:], widths[1:])]))
    return "\n".join(line.rstrip() for line in lines)


if __name__ == "__main__":
    sys.exit(main())
