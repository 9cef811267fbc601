"""`python -m scaling.data describe|prepare`, run as a user would: in a subprocess."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fake_trees import SHARED_COVIDX, covidx_from_real_files, write_chexpert, write_covidx, write_nih

from scaling.data.base import describe
from scaling.data.covidx import Covidx
from scaling.data.shards import ShardSet


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scaling.data", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def table(stdout: str) -> dict[str, list[str]]:
    """Rows of the printed table by their first cell (the title line and notes have no table shape)."""
    return {line.split()[0]: line.split()[1:] for line in stdout.splitlines()[1:] if line and not line[0] in "(sd"}


def test_describe_prints_a_table_per_split_and_class(tmp_path):
    root = write_covidx(tmp_path)
    done = run("describe", "covidx", "--root", root, "--version", "9B")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"covidx (root={root}, version=9B): binary, 2 classes"
    assert lines[1].split() == ["train", "test"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    assert rows == {"images": ["5", "3"], "patients": ["4", "3"], "negative": ["2", "2"], "positive": ["3", "1"]}


def test_describe_json_is_scaling_data_base_describe(tmp_path):
    root = write_chexpert(tmp_path)
    done = run("describe", "chexpert", "--root", root, "--option", "uncertainty=ones", "--option",
               "frontal_only=false", "--json")
    assert done.returncode == 0, done.stderr
    from scaling.data.chexpert import CheXpert

    expected = describe(CheXpert(root=str(root), uncertainty="ones", frontal_only=False))
    assert json.loads(done.stdout) == expected
    assert expected["train"]["classes"]["Lung Opacity"] == 2 and expected["train"]["classes"]["Edema"] == 2


def test_multilabel_table_explains_what_class_rows_count(tmp_path):
    done = run("describe", "nih", "--root", write_nih(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "images where the finding is positive" in done.stdout.splitlines()[-1]
    assert done.stdout.splitlines()[2].split() == ["images", "3", "2"]


@pytest.mark.parametrize("args,message", [
    (["--option", "colour=red"], "error: --option colour: dataset 'covidx' has no option 'colour'; its options are: "
                                 "root, version, check_files"),
    (["--option", "check_files=perhaps"], "error: --option check_files: got 'perhaps'; expected true or false"),
    (["--version", "10C"], "error: --version: got '10C'; expected one of 8A, 8B, 9A, 9B"),
    (["--option", "version"], "error: --option 'version': expected KEY=VALUE"),
    (["--option", "version=8B", "--version", "9B"], "error: --option version: option 'version' is given twice"),
], ids=["unknown-key", "bad-bool", "bad-version", "no-equals", "twice"])
def test_bad_options_end_in_one_line_and_exit_code_2(tmp_path, args, message):
    done = run("describe", "covidx", "--root", write_covidx(tmp_path), *args)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.splitlines() == [message]


def test_bad_data_ends_in_one_line_naming_file_and_line(tmp_path):
    root = write_covidx(tmp_path / "a")
    (root / "train" / "ARDSSevere.png").unlink()
    done = run("describe", "covidx", "--root", root)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        f"error: {root}/train_COVIDx9B.txt:1: image 'train/ARDSSevere.png' is missing under {root} (1 of 8 listed "
        f"images are missing; option check_files=false describes the labels without looking for images)"]
    assert run("describe", "covidx", "--root", root, "--option", "check_files=false").returncode == 0

    missing = run("describe", "covidx")
    assert (missing.returncode, missing.stderr) == (2, "error: dataset 'covidx' needs --root\n")
    nowhere = run("describe", "chexpert", "--root", tmp_path / "nowhere")
    assert nowhere.returncode == 2 and nowhere.stderr.startswith("error: ") and len(nowhere.stderr.splitlines()) == 1
    unknown = run("describe", "cifar")
    assert unknown.returncode == 2 and len(unknown.stderr.splitlines()) == 1 and "invalid choice" in unknown.stderr


def test_prepare_materialises_shards_and_prints_where_and_how_many(tmp_path):
    root = write_covidx(tmp_path / "covidx")
    cache = tmp_path / "cache"
    done = run("prepare", "covidx", "--root", root, "--resolution", "8", "--crop", "none", "--cache", cache)
    assert done.returncode == 0, done.stderr
    where = next(line for line in done.stdout.splitlines() if line.startswith("shards: "))[len("shards: "):]
    shards = ShardSet.open(where)
    assert where.startswith(str(cache / "covidx-")) and len(shards) == 8 and shards.shape == (8, 8)
    assert table(done.stdout)["images"] == ["5", "3"]
    assert "skipped bad images: 0" in done.stdout


def test_prepare_bad_image_fails_by_default_and_is_counted_with_skip(tmp_path):
    root = write_covidx(tmp_path / "covidx")
    (root / "test" / "test-a1.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    failed = run("prepare", "covidx", "--root", root, "--resolution", "8", "--cache", tmp_path / "c1")
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    assert len(failed.stderr.splitlines()) == 1 and f"{root}/test/test-a1.png: cannot decode image" in failed.stderr
    skipped = run("prepare", "covidx", "--root", root, "--resolution", "8", "--cache", tmp_path / "c2",
                  "--on-bad-image", "skip", "--storage", "uint16", "--clahe")
    assert skipped.returncode == 0, skipped.stderr
    assert table(skipped.stdout)["images"] == ["5", "2"]
    assert "skipped bad images: 1" in skipped.stdout and "  skipped: test/test-a1.png" in skipped.stdout


def test_describe_covidx_on_a_tree_from_the_real_9b_split_files(tmp_path):
    if not SHARED_COVIDX.is_dir():
        pytest.skip(f"{SHARED_COVIDX} is absent")
    root = covidx_from_real_files(tmp_path / "covidx")
    try:
        done = run("describe", "covidx", "--root", root, "--version", "9B", "--json")
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout)
        assert summary["test"] == {"classes": {"negative": 200, "positive": 200}, "patients": 378}
        assert summary["train"] == {"classes": {"negative": 13992, "positive": 16490}, "patients": 16648}
        assert summary == describe(Covidx(root=str(root)))
    finally:
        shutil.rmtree(root)  # 30,882 files: not worth keeping among pytest's retained temp folders


@pytest.mark.slow
def test_prepare_builds_on_ray_with_a_progress_line_as_one_process_would(tmp_path):
    import hashlib

    from scaling.data.__main__ import dataset_from_args
    from scaling.data.preprocess import Preprocess
    from scaling.data.shards import prepare_shards

    options = ["size=300", "image_size=48"]
    done = run("prepare", "synthetic-medical", *(a for o in options for a in ("--option", o)), "--resolution", "32",
               "--rows-per-shard", "64", "--cpus", "2", "--cache", tmp_path / "ray")
    assert done.returncode == 0, done.stderr
    progress = [line for line in done.stderr.splitlines() if line.startswith("shards synthetic-medical-")]
    assert progress and progress[-1].split(": ")[1].startswith("300/300 images, ") and "images/s" in progress[-1]
    where = Path(next(line for line in done.stdout.splitlines() if line.startswith("shards: "))[len("shards: "):])
    alone = prepare_shards(dataset_from_args("synthetic-medical", None, None, options), Preprocess(32),
                           tmp_path / "alone", rows_per_shard=64)
    assert len(ShardSet.open(where).files) == 5
    assert {f.name: hashlib.sha256(f.read_bytes()).digest() for f in where.iterdir() if f.suffix != ".json"} == \
        {f.name: hashlib.sha256(f.read_bytes()).digest() for f in alone.path.iterdir() if f.suffix != ".json"}
