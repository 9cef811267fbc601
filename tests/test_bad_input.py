"""Bad input as a table (docs/errors.md): one row per kind of bad config, data, weights or cluster request.

Each row builds its bad input for real in tmp_path (config files, dataset trees, image and weights files, a
socket holding a port) and hands it to the entry point a user runs -- `studies/scaling_law.py`'s `main` and
`python -m ray_cluster`'s `main`, in this process because a subprocess per row would cost seconds each (the two
tests at the end run the scripts themselves). A row checks the exit code, that the message names the file, key or
value and what was expected, and that nothing was started or written before the check: no study directory for a
config error; for a data or weights error at most the study's stamp (study.json, config.yaml, an empty logs/) and
no shard in the cache; never a Ray session (RAY_TMPDIR stays empty), an MLflow server, a checkpoint, a job folder
or a Slurm script.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import yaml
from fake_trees import (CHEXPERT_TRAIN_ROWS, CHEXPERT_VALID_ROWS, COVIDX_9B_LINES, SHARED_COVIDX, write_chexpert,
                        write_covidx)
from PIL import Image

from scaling.rehearse.formats import CHEXPERT_HEADER, write_dicom, write_image_folder, write_png, write_text

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "studies" / "scaling_law.py"
CONFIGS = ROOT / "studies" / "configs"
#: what the study writes before its data stage: the stamp that a rerun with another config is checked against
STAMP = {"study.json", "config.yaml", "logs"}


@functools.cache
def _study_main():
    spec = importlib.util.spec_from_file_location("scaling_law_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@dataclass
class Case:
    """Paths of one row and the config it edits (the smoke study's, with a cache in tmp_path)."""

    tmp: Path
    raw: dict = field(default_factory=lambda: yaml.safe_load((CONFIGS / "smoke.yaml").read_text()))
    #: a socket holding a port while the row runs, and its port
    holder: socket.socket | None = None
    port: int | None = None

    @property
    def out(self) -> Path:
        return self.tmp / "study"

    @property
    def cache(self) -> Path:
        return self.tmp / "cache"

    def study(self, *overrides: str, config: Path | None = None) -> list[str]:
        """argv of studies/scaling_law.py on this case's config."""
        if config is None:
            config = self.tmp / "study.yaml"
            config.write_text(yaml.safe_dump(self.raw))
        return ["--config", str(config), "--out", str(self.out), f"data.cache_dir={self.cache}", *overrides]

    def target(self, dataset: str, **options) -> Case:
        self.raw["data"]["target"] = {"dataset": dataset, "options": {k: str(v) if isinstance(v, Path) else v
                                                                      for k, v in options.items()}}
        return self

    def medical(self, dataset: str, **options) -> Case:
        self.raw["data"]["sources"]["medical"] = {"dataset": dataset, "options": {
            k: str(v) if isinstance(v, Path) else v for k, v in options.items()}}
        return self

    def covidx(self, lines: dict[str, list[str]] = COVIDX_9B_LINES, **kw) -> Case:
        """A COVIDx 9B tree (at tmp/covidx) as the target."""
        self.target("covidx", root=write_covidx(self.tmp / "covidx", lines, **kw), version="9B")
        return self

    def remove(self, path: str) -> Case:
        (self.tmp / path).unlink()
        return self

    def published(self, weights: str, ladder: str = "cpu", sizes: tuple[str, ...] = ("w8",)) -> Case:
        """A natural source of published weights (a file per rung) that the sweep fine-tunes from."""
        self.raw["models"] = {"ladder": ladder, "sizes": list(sizes)}
        self.raw["data"]["sources"]["natural"] = {"published": [
            {"name": "mine", "images": 100000, "weights": weights}]}
        self.raw["sweep"]["sources"] = ["scratch", "natural", "medical"]
        return self


def with_lines(**changes: list[str]) -> dict[str, list[str]]:
    return {**COVIDX_9B_LINES, **changes}


def save_weights(path: Path, ladder: str, model: str) -> Path:
    import torch

    from scaling import models

    torch.save(models.create_model(ladder, model, num_classes=2).state_dict(), path)
    return path


# ---------------------------------------------------------------------------------------------- the rows


@dataclass(frozen=True)
class Row:
    kind: str
    #: builds the bad input in a Case and returns the argv of the entry point
    build: Callable[[Case], list[str]]
    code: int
    #: fragments of the message; "{tmp}" stands for the row's tmp_path
    expect: tuple[str, ...]
    #: what may exist when it stopped: "nothing" (config), "stamp" (data stage), "shards" (after the data stage)
    stops: str = "nothing"
    entry: str = "study"


def config_row(kind: str, overrides: str | tuple[str, ...], message: str) -> Row:
    """A config error caused by command-line overrides of the smoke study."""
    overrides = (overrides,) if isinstance(overrides, str) else overrides
    return Row(kind, lambda c: c.study(*overrides), 2, (message,))


def _other_study(case: Case) -> list[str]:
    from scaling.config import load_config
    from scaling.study import prepare_study_dir

    argv = case.study()
    prepare_study_dir(load_config(argv[1], ["seed=7"]), case.out)  # an earlier study with another seed
    return argv


def _without_target(case: Case) -> list[str]:
    del case.raw["data"]["target"]
    return case.study()


def _not_yaml(case: Case) -> list[str]:
    (case.tmp / "bad.yaml").write_text("name: smoke\ndata: {target: [\n")
    return case.study(config=case.tmp / "bad.yaml")


def _unpublished_tag(case: Case) -> list[str]:
    case.raw["data"]["sources"]["natural"] = {"published": [
        {"name": "in1k", "images": 1281167, "weights": "hf", "tag": "augreg_in1k"}]}
    return case.study("models.ladder=vit", "models.sizes=[tiny]", "sweep.sources=[scratch, natural]")


def _another_version(case: Case) -> list[str]:
    """The real COVIDx 8A split files under the Kaggle release's names, read as the default version 9B."""
    if not SHARED_COVIDX.is_dir():
        pytest.skip(f"the real COVIDx split files ({SHARED_COVIDX}) are absent")
    root = case.tmp / "covidx"
    for split in ("train", "test"):
        write_text(root / f"{split}.txt", (SHARED_COVIDX / f"{split}_COVIDx8A.txt").read_text())
    return case.target("covidx", root=root).study()


def _textured(path: Path, seed: int) -> Path:
    """A distinct smooth image (the trees' placeholders are all black, i.e. all the same to the leakage guard)."""
    small = np.random.default_rng(seed).integers(0, 255, (6, 6)).astype(np.uint8)
    return write_png(path, np.asarray(Image.fromarray(small).resize((40, 40), Image.BICUBIC)))


def _target_image_in_source(case: Case) -> list[str]:
    """A pre-training source holding one of the target's test images under another name."""
    case.covidx(with_lines(train=[f"p{i} p{i}.png {'positive' if i % 3 else 'negative'} rsna" for i in range(12)]))
    for seed, path in enumerate(sorted((case.tmp / "covidx").rglob("*.png"))):
        _textured(path, seed)
    source = write_covidx(case.tmp / "source", {"train": [f"s{i} s{i}.png negative rsna" for i in range(6)],
                                               "test": ["t0 t0.png negative rsna"]})
    for seed, path in enumerate(sorted(source.rglob("*.png")), start=100):
        _textured(path, seed)
    (source / "train" / "s3.png").write_bytes((case.tmp / "covidx" / "test" / "test-b2.png").read_bytes())
    case.medical("covidx", root=source, version="9B")
    return case.study("data.source_sizes=[3]")


def _corrupt_image(case: Case) -> list[str]:
    case.covidx()
    (case.tmp / "covidx" / "train" / "ARDSSevere.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    return case.study()


def _truncated_dicom(case: Case) -> list[str]:
    lines = with_lines(train=[*COVIDX_9B_LINES["train"], "d9 scan-d9.dcm negative rsna"])
    path = write_dicom(case.covidx(lines).tmp / "covidx" / "train" / "scan-d9.dcm",
                       np.full((16, 16), 900, dtype=np.uint16))
    path.write_bytes(path.read_bytes()[:-200])  # the transfer cut short inside the pixel data
    return case.study()


def _lateral_only_val(case: Case) -> list[str]:
    write_chexpert(case.tmp / "chexpert", valid=[r for r in CHEXPERT_VALID_ROWS if "lateral" in r])
    case.medical("chexpert", root=case.tmp / "chexpert")
    return case.study()


def _chexpert_header_without(column: str):
    def build(case: Case) -> list[str]:
        names = CHEXPERT_HEADER.split(",")
        drop = names.index(column)
        cut = [",".join(f for i, f in enumerate(r.split(",")) if i != drop) for r in CHEXPERT_TRAIN_ROWS]
        write_chexpert(case.tmp / "chexpert", train=cut, valid=CHEXPERT_VALID_ROWS,
                       header=",".join(n for n in names if n != column))
        case.medical("chexpert", root=case.tmp / "chexpert")
        return case.study()
    return build


def _chexpert_bad_value(case: Case) -> list[str]:
    rows = [*CHEXPERT_TRAIN_ROWS[:2], CHEXPERT_TRAIN_ROWS[3].replace(",1.0,,0.0,", ",2.0,,0.0,")]  # Edema 2.0
    write_chexpert(case.tmp / "chexpert", train=rows)
    case.medical("chexpert", root=case.tmp / "chexpert")
    return case.study()


def _empty_class_folder(case: Case) -> list[str]:
    root = write_image_folder(case.tmp / "folders", {"cat": ["a.png", "b.png"], "dog": ["notes.txt"]})
    case.medical("image-folder", root=root)
    return case.study()


def _subset_larger_than_split(case: Case) -> list[str]:
    case.medical("covidx", root=write_covidx(case.tmp / "covidx-source"), version="9B")
    return case.study("data.source_sizes=[300]")


def _weights_of_another_rung(case: Case) -> list[str]:
    save_weights(case.tmp / "w8.pt", "cpu", "w16")  # w16's weights under w8's name
    return case.published(str(case.tmp / "{model}.pt")).study()


def _weights_of_another_ladder(case: Case) -> list[str]:
    save_weights(case.tmp / "tiny.pt", "cpu", "w8")  # a cpu-ladder checkpoint for a ViT rung
    return case.published(str(case.tmp / "{model}.pt"), ladder="vit", sizes=("tiny",)).study()


def _npz_of_another_rung(case: Case) -> list[str]:
    from test_published import _bit_npz

    from scaling import models

    _bit_npz(models.create_model("bit", "R50x1", 0), case.tmp / "BiT-S-R101x1.npz", classes=1000)  # R50x1's blocks
    return case.published(str(case.tmp / "BiT-S-{model}.npz"), ladder="bit", sizes=("R101x1",)).study()


def _unreadable_weights(case: Case) -> list[str]:
    (case.tmp / "w8.pt").write_bytes(b"<html>404 Not Found</html>")  # a failed download saved as weights
    return case.published(str(case.tmp / "{model}.pt")).study()


def _missing_weights(case: Case) -> list[str]:
    case.published(str(case.tmp / "{model}.pt"))
    case.raw["data"]["sources"]["natural"]["published"][0]["url"] = "https://example.org/{model}.pt"
    return case.study()


def _held_port(case: Case) -> list[str]:
    case.holder = socket.socket()  # closed when the row has run
    case.holder.bind(("", 0))
    case.holder.listen()
    case.port = case.holder.getsockname()[1]
    return ["check-ports", "--node", "n1", f"gcs={case.port}", "dashboard=0"]


def _submit(case: Case, *args: str, config: str = "covidx_bit") -> list[str]:
    return ["submit", "--config", str(CONFIGS / f"{config}.yaml"), "--out", str(case.out), "--account", "x", *args]


ROWS = [
    # ------------------------------------------------------------------ config: exit 2, nothing written
    config_row("unknown key", "data.resolutoin=32",
               "data.resolutoin: unknown key; expected one of: target, sources, resolution"),
    config_row("wrong type", "finetune.recipe.lr=fast",
               "finetune.recipe.lr: got 'fast'; expected a number"),
    config_row("impossible range", "data.val_fraction=1.5",
               "data.val_fraction: got 1.5; expected a value < 1"),
    config_row("search range upside down", "finetune.weight_decay_range=[0.1, 0.001]",
               "finetune.weight_decay_range: got [0.1, 0.001]; expected [low, high] with low <= high"),
    config_row("value outside a fixed set", "finetune.recipe.optimizer=lamb",
               "finetune.recipe.optimizer: got 'lamb'; expected one of 'sgd', 'adamw'"),
    Row("missing required key", _without_target, 2,
        ("data.target: missing; expected a mapping",)),
    Row("config file not YAML", _not_yaml, 2, ("{tmp}/bad.yaml: not valid YAML",)),
    Row("config file missing", lambda c: c.study(config=c.tmp / "nowhere.yaml"), 2,
        ("{tmp}/nowhere.yaml: no such config file",)),
    config_row("unknown dataset", "data.target.dataset=covid",
               "data.target.dataset: got 'covid'; expected one of: synthetic-natural"),
    config_row("dataset option missing", "data.target={dataset: covidx}",
               "data.target.options.root: missing; dataset 'covidx' needs it"),
    Row("dataset option of a wrong value", lambda c: c.target("covidx", root=c.tmp, version="7C").study(), 2,
        ("data.target.options.version: got '7C'; expected one of '8A', '8B', '9A', '9B'",)),
    config_row("model not in the ladder", "models.sizes=[w8, R50x1]",
               "models.sizes[1]: got 'R50x1'; expected a rung of ladder 'cpu': w4, w6, w8"),
    config_row("subset larger than its source", "data.source_sizes=[1000]",
               "data.source_sizes[0]: got 1000; expected at most 400, the size of data.sources.medical"),
    config_row("sweep source not configured", "sweep.sources=[scratch, natural]",
               "sweep.sources asks for 'natural' pre-training but data.sources.natural is not configured"),
    config_row("micro-batch and accumulation both set",
               ("finetune.recipe.micro_batch=8", "finetune.recipe.grad_accum=2"),
               "finetune.recipe.micro_batch: got 8 with finetune.recipe.grad_accum 2; expected one of them"),
    Row("published tag timm lacks", _unpublished_tag, 2,
        ("data.sources.natural.published[0].tag: timm publishes no weights vit_tiny_patch16_224.augreg_in1k",)),
    Row("study directory of another config", _other_study, 2,
        ("{tmp}/study holds study 'smoke' run with another configuration", "choose another --out"), stops="stamp"),
    # ------------------------------------------------------------------ data: exit 3, before any shard
    Row("missing dataset root", lambda c: c.target("covidx", root=c.tmp / "gone", version="9B").study(), 3,
        ("data.target: {tmp}/gone: dataset root of covidx is not a directory",), stops="stamp"),
    Row("missing split file", lambda c: c.covidx().remove("covidx/test_COVIDx9B.txt").study(), 3,
        ("{tmp}/covidx: no test split file for COVIDx 9B; expected test_COVIDx9B.txt or test.txt",), stops="stamp"),
    Row("malformed split-file line", lambda c: c.covidx(with_lines(test=["a1 test-a1.png positive"])).study(), 3,
        ("{tmp}/covidx/test_COVIDx9B.txt:1: expected 'patient_id filename label source'",), stops="stamp"),
    Row("label outside the known set", lambda c: c.covidx(with_lines(test=[
        "a1 test-a1.png COVID-19 ricord", "b2 test-b2.png negative rsna"])).study(), 3,
        ("{tmp}/covidx/test_COVIDx9B.txt:1: label 'COVID-19' is not one of negative, positive",), stops="stamp"),
    Row("path escaping the root", lambda c: c.covidx(with_lines(test=[
        "a1 ../../etc/passwd positive ricord", "b2 test-b2.png negative rsna"]), images=False).study(), 3,
        ("{tmp}/covidx/test_COVIDx9B.txt:1: image path 'test/../../etc/passwd' is not a file under {tmp}/covidx "
         "(path escapes the dataset root)",), stops="stamp"),
    Row("image listed twice", lambda c: c.covidx(with_lines(test=[
        "a1 test-a1.png positive ricord", "a1 test-a1.png positive ricord", "b2 test-b2.png negative rsna"])
    ).study(), 3, ("{tmp}/covidx/test_COVIDx9B.txt:2: image 'test/test-a1.png' is listed twice "
                           "(also at {tmp}/covidx/test_COVIDx9B.txt:1)",), stops="stamp"),
    Row("patient in two splits", lambda c: c.covidx(with_lines(test=[
        "COVID 1 test-c1.png positive sirm", "b2 test-b2.png negative rsna"])).study(), 3,
        ("patient 'COVID 1' of covidx has images in more than one split: train "
         "({tmp}/covidx/train_COVIDx9B.txt:2), test ({tmp}/covidx/test_COVIDx9B.txt:1)",), stops="stamp"),
    Row("missing image", lambda c: c.covidx().remove("covidx/test/test-b2.png").study(), 3,
        ("{tmp}/covidx/test_COVIDx9B.txt:2: image 'test/test-b2.png' is missing under {tmp}/covidx "
         "(1 of 8 listed images are missing",), stops="stamp"),
    Row("empty split file", lambda c: c.covidx(with_lines(test=[])).study(), 3,
        ("{tmp}/covidx/test_COVIDx9B.txt: split 'test' is empty",), stops="stamp"),
    Row("split files of another version", _another_version, 3,
        ("data.target: {tmp}/covidx/train.txt:1: label 'pneumonia' is not one of negative, positive",),
        stops="stamp"),
    Row("corrupt image", _corrupt_image, 3,
        ("{tmp}/covidx/train/ARDSSevere.png: cannot decode image",), stops="stamp"),
    Row("truncated DICOM", _truncated_dicom, 3,
        ("{tmp}/covidx/train/scan-d9.dcm: cannot decode DICOM",), stops="stamp"),
    Row("CSV missing a column", _chexpert_header_without("Frontal/Lateral"), 3,
        ("data.sources.medical: {tmp}/chexpert/train.csv: missing column(s) ['Frontal/Lateral']; the header has",),
        stops="stamp"),
    Row("label value outside its coding", _chexpert_bad_value, 3,
        ("{tmp}/chexpert/train.csv:4: column 'Edema' has '2.0'; expected 1, 0, -1 or blank",), stops="stamp"),
    Row("empty split after filtering", _lateral_only_val, 3,
        ("{tmp}/chexpert/valid.csv: split 'val' is empty after keeping frontal views",), stops="stamp"),
    Row("class folder without images", _empty_class_folder, 3,
        ("{tmp}/folders/dog: class folder holds no image files",), stops="stamp"),
    Row("subset larger than its split", _subset_larger_than_split, 3,
        ("data.source_sizes: [300] larger than the about 4 training images of data.sources.medical (covidx, 5 "
         "images less its validation split)",), stops="stamp"),
    Row("too few patients for a validation split", lambda c: c.covidx().study(), 3,
        ("data.target (covidx): cannot carve a validation split out of its training split: val_fraction=0.15 over "
         "4 patient(s) (5 images) leaves validation empty; expected more patients in it, or another "
         "data.val_fraction",), stops="shards"),
    Row("few-shot larger than a class", lambda c: c.study("data.shots=[0, 200]"), 2,
        ("data.shots[1]: got 200; expected at most the images of each class in the target's training split "
         "(synthetic-covidx", "fewer than shots=200"), stops="shards"),
    Row("target subset larger than its split", lambda c: c.study("sweep.scratch_target_sizes=[5000]"), 2,
        ("sweep.scratch_target_sizes[0]: got 5000; expected at most", "the size of the target's training split"),
        stops="shards"),
    Row("target test image in a pre-training source", _target_image_in_source, 3,
        ("data.sources.medical: 1 near-duplicate(s) of the target's validation/test images (dHash within 8 bits): "
         "{tmp}/covidx/test/test-b2.png ~ {tmp}/source/train/s3.png (0 bits)", "data.leakage.policy: remove"),
        stops="shards"),
    # ------------------------------------------------------------------ weights: exit 3, before Ray
    Row("weights file missing", _missing_weights, 3,
        ("data.sources.natural published 'mine': weights file {tmp}/w8.pt of cpu/w8 does not exist; run "
         "`python -m scaling.models download --config <this study's config>`", "https://example.org/w8.pt"),
        stops="stamp"),
    Row("weights that do not fit the model", _weights_of_another_rung, 3,
        ("data.sources.natural published 'mine': checkpoint {tmp}/w8.pt does not fit ResNetV2",
         "with another shape, checkpoint vs model (e.g. stem.conv.weight (16, 3, 7, 7) vs (8, 3, 7, 7)"),
        stops="stamp"),
    Row("checkpoint from another ladder", _weights_of_another_ladder, 3,
        ("data.sources.natural published 'mine': checkpoint {tmp}/tiny.pt does not fit VisionTransformer",
         "148 missing (e.g. blocks.0.attn", "42 unexpected (e.g. norm.num_batches_tracked"), stops="stamp"),
    Row("Google .npz of another rung", _npz_of_another_rung, 3,
        ("data.sources.natural published 'mine': cannot read Google .npz checkpoint {tmp}/BiT-S-R101x1.npz: "
         "'resnet/block3/unit07/a/standardized_conv2d/kernel is not a file in the archive'",), stops="stamp"),
    Row("unreadable weights file", _unreadable_weights, 3,
        ("data.sources.natural published 'mine': cannot read checkpoint {tmp}/w8.pt",), stops="stamp"),
    # ------------------------------------------------------------------ cluster: python -m ray_cluster
    Row("port already taken", _held_port, 1,
        ("port(s) already in use on node n1: gcs {port}", "submit again with other ports: --port gcs=N"),
        entry="cluster"),
    Row("Slurm allocation without GPUs", lambda c: _submit(c, "--site", "generic", "--cpus-per-node", "8",
                                                           "--nodes", "2", "--time", "1:00:00"), 2,
        ("resources.use_gpu is true but 2 node(s) of generic has no GPUs; use a GPU partition",), entry="cluster"),
    Row("more GPU workers than the allocation holds", lambda c: _submit(
        c, "--nodes", "1", "--time", "1:00:00", "resources.num_workers=4", "sweep.max_concurrent_trials=2"), 2,
        ("resources.num_workers (4) x sweep.max_concurrent_trials (2) = 8 Train workers at once",
         "1 node(s) x 4 GPUs hold 4 such workers", "ask for 2 nodes"), entry="cluster"),
    Row("time limit beyond the partition's", lambda c: _submit(c, "--nodes", "16", "--time", "48:00:00"), 2,
        ("--time 48:00:00 exceeds the 24:00:00 limit of juwels-booster",), entry="cluster"),
    Row("unknown port name", lambda c: _submit(c, "--nodes", "1", "--time", "1:00:00", "--port", "gsc=7000"), 2,
        ("'gsc': unknown port; expected one of gcs, dashboard",), entry="cluster"),
]


def _call(main, argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse's errors
        return e.code


@pytest.mark.parametrize("row", ROWS, ids=[r.kind for r in ROWS])
def test_bad_input_is_named_before_anything_starts(row, tmp_path, monkeypatch, capsys):
    from ray_cluster.__main__ import main as cluster_main

    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "ray"))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.chdir(tmp_path)  # a default study directory or cache would land here
    handlers = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGTERM)}  # the study installs its own
    case = Case(tmp_path / "case")
    case.tmp.mkdir()
    try:
        argv = row.build(case)
        code = _call(_study_main() if row.entry == "study" else cluster_main, argv)
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)
        if case.holder:
            case.holder.close()
    err = capsys.readouterr().err
    assert code == row.code, err
    for fragment in row.expect:
        assert fragment.format(tmp=case.tmp, port=case.port) in err, err
    assert "Traceback" not in err
    _assert_nothing_started(case, row.stops)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case"]  # no ray temp dir, no runs/, no .cache/


def _assert_nothing_started(case: Case, stops: str) -> None:
    out = case.out
    if stops == "nothing":
        assert not out.exists()
    elif out.exists():
        assert {p.name for p in out.iterdir()} <= STAMP
        assert not (out / "logs").exists() or not any((out / "logs").iterdir())  # no MLflow or Ray driver log
    if stops != "shards":
        assert not case.cache.exists() or not list(case.cache.rglob("*.parquet"))


def test_weights_that_fit_pass_the_check_on_the_meta_device(tmp_path):
    """The other side of the weights rows: Google's .npz layout and a state_dict of the very rung load."""
    from test_published import _bit_npz

    from scaling import models

    models.check_weights("bit", "R50x1", _bit_npz(models.create_model("bit", "R50x1", 0), tmp_path / "a.npz", 1000))
    models.check_weights("cpu", "w8", save_weights(tmp_path / "w8.pt", "cpu", "w8"))


def test_the_table_in_docs_lists_every_row():
    text = (ROOT / "docs" / "errors.md").read_text()
    listed = [line.split("|")[2].strip() for line in text.splitlines() if line.startswith("| ") and
              line.split("|")[1].strip().isdigit()]
    assert listed == [r.kind for r in ROWS]


# ---------------------------------------------------------------------------------------------- the scripts


def test_study_script_exits_3_on_bad_data_before_anything_starts(tmp_path):
    """The rows above call the study's main in-process; here the script itself on a data row (its config exit 2:
    tests/test_study.py::test_bad_config_is_rejected_before_anything_starts)."""
    case = Case(tmp_path).target("covidx", root=tmp_path / "gone", version="9B")
    done = subprocess.run([sys.executable, str(SCRIPT), *case.study()], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "RAY_TMPDIR": str(tmp_path / "ray")})
    assert done.returncode == 3, done.stderr
    assert f"data error: cannot read the study's data:\n  data.target: {tmp_path}/gone: dataset root" in done.stderr
    _assert_nothing_started(case, "stamp")
    assert not (tmp_path / "ray").exists()


def test_cluster_check_ports_script_names_a_port_held_by_another_process(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import socket, sys, time; s = socket.socket(); "
                               "s.bind(('', 0)); s.listen(); print(s.getsockname()[1], flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        port = int(holder.stdout.readline())
        done = subprocess.run([sys.executable, "-m", "ray_cluster", "check-ports", "--node", "n1",
                               f"mlflow={port}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    finally:
        holder.kill()
        holder.wait()
    assert done.returncode == 1
    assert f"port(s) already in use on node n1: mlflow {port}" in done.stderr and "--port mlflow=N" in done.stderr
