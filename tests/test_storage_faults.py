"""Storage faults, each caused for real: shards and checkpoints corrupted on disk (a byte flipped, a file
truncated), a really full file system (a small tmpfs, mounted here) while shards, a checkpoint or the results
table are written, and two studies sharing one shard cache and one checkpoint store at the same time. After
each, what a rerun leaves equals what an undisturbed run leaves."""
from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pandas as pd
import pytest
import torch

from scaling.data.base import DataError
from scaling.data.preprocess import Preprocess
from scaling.data.shards import BUILDS, ShardSet, prepare_shards, shard_path
from scaling.files import MANIFEST, NoSpace, publish
from scaling.analysis.results import write_table
from scaling.train.session import LocalSession
from scaling.train.store import WEIGHTS_FILE, CheckpointStore, key_for
from tiny_dataset import TinyDataset

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
PARTS = {"model": "w8", "data": "tiny", "seed": 0}


def digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` but its manifest (which records when it was made)."""
    return {str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(folder.rglob("*")) if f.is_file() and f.name != MANIFEST}


def corrupt(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "flip":  # same size: only a checksum can tell
        data[len(data) // 2] ^= 0xFF
    else:
        del data[len(data) // 2:]
    path.write_bytes(bytes(data))


def weights(tmp: Path) -> None:
    """A build of the store: seeded weights of about 1 MiB."""
    torch.manual_seed(0)
    torch.save({"w": torch.randn(512, 512)}, tmp / WEIGHTS_FILE)


# ------------------------------------------------------------------------------------------- corruption


@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_a_corrupted_shard_is_detected_and_rebuilt_as_before(tmp_path, caplog, how):
    shards = prepare_shards(TinyDataset(n=40), Preprocess(16), tmp_path, rows_per_shard=16)
    before = digests(shards.path)
    victim = shards.path / shards.files[1]
    corrupt(victim, how)
    if how == "truncate":  # what a worker opening the set sees: an error naming the file, not a crash in pyarrow
        with pytest.raises(DataError, match=f"{shards.path}.*{victim.name} has"):
            ShardSet.open(shards.path)
    dataset = TinyDataset(n=40)
    with caplog.at_level(logging.WARNING, "scaling.data.shards"):
        rebuilt = prepare_shards(dataset, Preprocess(16), tmp_path, rows_per_shard=16)
    assert dataset.loads == 40, "the corrupted set was reused"
    assert str(shards.path) in caplog.text and victim.name in caplog.text
    assert digests(rebuilt.path) == before
    assert [json.loads(line)["set"] for line in (tmp_path / BUILDS).read_text().splitlines()] == \
        [shards.path.name] * 2


@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_a_corrupted_checkpoint_is_moved_aside_and_built_again_as_before(tmp_path, caplog, how):
    store = CheckpointStore(tmp_path)
    calls = []
    path = store.get_or_create(PARTS, lambda tmp: (calls.append(1), weights(tmp)))
    before = digests(path)
    corrupt(path / WEIGHTS_FILE, how)
    with pytest.raises(ValueError, match=f"{path / WEIGHTS_FILE} has sha256"):
        store.load(key_for(**PARTS))  # reported with its path, not unpickled
    with caplog.at_level(logging.WARNING, "scaling.train.store"):
        assert not store.intact(key_for(**PARTS))
    assert f"{path / WEIGHTS_FILE}" in caplog.text and not store.exists(key_for(**PARTS))
    aside = list((tmp_path / ".corrupt").iterdir())
    assert len(aside) == 1 and aside[0].name.startswith(key_for(**PARTS)) and aside[0].name in caplog.text
    store.get_or_create(PARTS, lambda tmp: (calls.append(1), weights(tmp)))
    assert len(calls) == 2 and digests(path) == before and store.intact(key_for(**PARTS))


def test_a_local_job_resumes_from_its_newest_intact_checkpoint(tmp_path):
    for step in (10, 20):
        tmp = tmp_path / f".tmp-{step}"
        tmp.mkdir()
        torch.save({"step": step}, tmp / WEIGHTS_FILE)
        assert publish(tmp, tmp_path / f"checkpoint_{step:09d}", {"step": step})
    corrupt(tmp_path / f"checkpoint_{20:09d}" / WEIGHTS_FILE, "flip")
    with pytest.warns(UserWarning, match=f"checkpoint_{20:09d}.*{WEIGHTS_FILE} has sha256"):
        latest = LocalSession(tmp_path, tune=False).latest()
    assert Path(latest.path).name == f"checkpoint_{10:09d}"
    assert not (tmp_path / f"checkpoint_{20:09d}").exists(), "step 20 would be taken as written when reached again"


# ------------------------------------------------------------------------------------------- full file system


class SmallFS:
    def __init__(self, path: Path):
        self.path = path

    def grow(self, size: str = "64m") -> None:
        """Free space: the same mount, remounted larger, keeping its files."""
        subprocess.run(["mount", "-o", f"remount,size={size}", str(self.path)], check=True)

    def fill(self) -> Path:
        """Take every free byte with a filler file."""
        filler = self.path / "filler"
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        return filler


@pytest.fixture
def small_fs(tmp_path):
    """A 256 KiB tmpfs, really mounted (CI runs as root; elsewhere this skips), unmounted afterwards."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    yield SmallFS(mount)
    gc.collect()  # writers of a failed write, still open in a traceback's frames
    subprocess.run(["umount", str(mount)], check=True)


def _leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.is_file() and not p.name.endswith(".lock"))


def test_a_full_disk_while_building_shards_names_the_set_and_a_rerun_matches(small_fs, tmp_path):
    dataset, preprocess = TinyDataset(n=300, height=48, width=48), Preprocess(48)  # 675 KiB of noisy pixels
    cache = small_fs.path / "cache"
    with pytest.raises(NoSpace, match=rf"writing {shard_path(dataset, preprocess, cache)}: it needs 691200 bytes") \
            as err:
        prepare_shards(dataset, preprocess, cache)
    assert "full" in str(err.value)
    assert _leftovers(cache) == [], "a half-written set was left behind"
    small_fs.grow()
    shards = prepare_shards(dataset, preprocess, cache)
    reference = prepare_shards(TinyDataset(n=300, height=48, width=48), preprocess, tmp_path / "reference")
    assert digests(shards.path) == digests(reference.path)


def test_a_full_disk_during_a_chunk_keeps_the_finished_chunks_and_a_rerun_builds_only_the_rest(small_fs, tmp_path):
    dataset, preprocess = TinyDataset(n=300, height=48, width=48), Preprocess(48)  # 675 KiB; 147 KiB a chunk
    cache = small_fs.path / "cache"
    final = shard_path(dataset, preprocess, cache)
    with pytest.raises(NoSpace, match=rf"writing {final}: it needs 691200 bytes"):
        prepare_shards(dataset, preprocess, cache, rows_per_shard=64)
    finished = sorted(p.name for p in (cache / f".{final.name}.chunks").glob("chunk-*"))
    assert finished and finished == [f"chunk-{i:05d}" for i in range(len(finished))]
    assert not final.exists() and not list(cache.glob(".*.tmp-*"))
    small_fs.grow()
    again = TinyDataset(n=300, height=48, width=48)
    shards = prepare_shards(again, preprocess, cache, rows_per_shard=64)
    assert again.loads == 300 - 64 * len(finished)
    reference = prepare_shards(TinyDataset(n=300, height=48, width=48), preprocess, tmp_path / "reference",
                               rows_per_shard=64)
    assert digests(shards.path) == digests(reference.path)


def test_a_full_disk_while_storing_a_checkpoint_stores_nothing_and_a_rerun_matches(small_fs, tmp_path):
    store = CheckpointStore(small_fs.path / "store")
    key = key_for(**PARTS)
    with pytest.raises(NoSpace, match=rf"writing {store.path(key)}: it needs at least \d+") as err:
        store.get_or_create(PARTS, weights)  # torch.save hides the errno: known by the full file system
    assert "full" in str(err.value)
    assert not store.exists(key) and _leftovers(store.root) == []
    del err  # its traceback holds torch's writer, whose file keeps the mount busy
    small_fs.grow()
    path = store.get_or_create(PARTS, weights)
    assert digests(path) == digests(CheckpointStore(tmp_path).get_or_create(PARTS, weights))


def test_a_full_disk_while_writing_the_results_table_keeps_the_previous_one(small_fs):
    old = pd.DataFrame({"trial": ["a", "b"], "test_roc_auc": [0.7, 0.8]})
    new = pd.DataFrame({"trial": ["a", "b", "c"], "test_roc_auc": [0.7, 0.8, 0.9]})
    write_table(old, small_fs.path)
    filler = small_fs.fill()
    with pytest.raises(NoSpace, match=rf"writing {small_fs.path / 'results.parquet'}: it needs \d+ bytes"):
        write_table(new, small_fs.path)
    pd.testing.assert_frame_equal(pd.read_parquet(small_fs.path / "results.parquet"), old)
    pd.testing.assert_frame_equal(pd.read_csv(small_fs.path / "results.csv"), old)
    assert sorted(p.name for p in small_fs.path.iterdir()) == ["filler", "results.csv", "results.parquet"]
    filler.unlink()
    write_table(new, small_fs.path)
    pd.testing.assert_frame_equal(pd.read_parquet(small_fs.path / "results.parquet"), new)
    pd.testing.assert_frame_equal(pd.read_csv(small_fs.path / "results.csv"), new)


# ------------------------------------------------------------------------------------------- two studies at once

# One "study": its data stage through the command line, then its pre-training checkpoint through the store,
# fitted to the shards it prepared (numpy: a child without torch starts in seconds). Prints when it started, its
# shard set and its checkpoint's sha256.
STUDY = r"""
import hashlib, json, sys, time
started = time.time()
import numpy as np
from scaling.data.__main__ import dataset_from_args, main
from scaling.data.preprocess import Preprocess
from scaling.data.shards import ShardSet, shard_path
from scaling.train.store import CheckpointStore

cache, store_root, log = sys.argv[1:4]
options = ["size=600", "image_size=32"]
assert main(["prepare", "synthetic-medical", *(a for o in options for a in ("--option", o)), "--resolution", "32",
             "--cache", cache]) == 0
shards = ShardSet.open(shard_path(dataset_from_args("synthetic-medical", None, None, options), Preprocess(32), cache))

def build(tmp):
    with open(log, "a") as f:
        f.write(f"build {time.time()}\n")
    pixels = shards.read(range(len(shards))).reshape(len(shards), -1) / 255
    labels = np.nan_to_num(np.stack(shards.records["y"]))
    weights = np.linalg.lstsq(pixels, labels, rcond=None)[0]  # the "pre-training"
    time.sleep(1)  # long enough for the other study to be waiting on it
    np.save(tmp / "model.npy", weights)

entry = CheckpointStore(store_root, poll_s=0.1).get_or_create({"model": "linear", "data": shards.path.name}, build)
print(json.dumps({"started": started, "shards": str(shards.path),
                  "sha256": hashlib.sha256((entry / "model.npy").read_bytes()).hexdigest()}))
"""


def _studies(n: int, cache: Path, store: Path, log: Path) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", STUDY, str(cache), str(store), str(log)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(n)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * n, [err for _, err in outs]
    return [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]


def test_two_studies_at_once_build_each_shard_set_and_checkpoint_once(tmp_path):
    cache, store, log = tmp_path / "cache", tmp_path / "store", tmp_path / "builds.log"
    both = _studies(2, cache, store, log)
    shard_builds = [json.loads(line) for line in (cache / BUILDS).read_text().splitlines()]
    assert len(shard_builds) == 1 and shard_builds[0]["published"]
    assert max(s["started"] for s in both) < (cache / BUILDS).stat().st_mtime, "the studies did not overlap"
    assert len(log.read_text().splitlines()) == 1, "the checkpoint was built twice"
    assert both[0]["shards"] == both[1]["shards"] and both[0]["sha256"] == both[1]["sha256"]
    alone = _studies(1, tmp_path / "cache-alone", tmp_path / "store-alone", tmp_path / "alone.log")[0]
    assert alone["sha256"] == both[0]["sha256"]
    assert digests(Path(alone["shards"])) == digests(Path(both[0]["shards"]))


# ------------------------------------------------------------------------------------------- in a study


@pytest.mark.slow
def test_a_study_rerun_rebuilds_a_corrupted_pretraining_checkpoint_and_ends_as_before(smoke_study, tmp_path):
    """A copy of the smoke study (its own outputs stay untouched) with its pre-training checkpoint corrupted:
    the rerun moves the entry aside, runs that pre-training job again (from the job's own last checkpoint) and
    ends with the same checkpoint, the same results table (but for wall-clock columns) and the same MLflow runs."""
    out, first = smoke_study
    assert first.returncode == 0, first.stderr[-3000:]
    copy = tmp_path / out.name
    shutil.copytree(out, copy, symlinks=True)
    entries = [p for p in (copy / "checkpoints").iterdir() if (p / MANIFEST).is_file()]
    assert len(entries) == 1
    corrupt(entries[0] / WEIGHTS_FILE, "flip")
    rerun = subprocess.run([sys.executable, str(ROOT / "studies" / "scaling_law.py"), "--config",
                            str(ROOT / "studies" / "configs" / "smoke.yaml"), "--out", str(copy),
                            f"data.cache_dir={out.parent / 'cache'}", "resources.num_workers=1"],
                           cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "is corrupted" in rerun.stderr and str(entries[0] / WEIGHTS_FILE) in rerun.stderr
    assert digests(entries[0]) == digests(out / "checkpoints" / entries[0].name)
    assert len(list((copy / "checkpoints" / ".corrupt").iterdir())) == 1
    timeless = [c for c in pd.read_parquet(out / "results.parquet").columns if not c.endswith("_seconds")]
    pd.testing.assert_frame_equal(pd.read_parquet(copy / "results.parquet", columns=timeless),
                                  pd.read_parquet(out / "results.parquet", columns=timeless))
    runs = [{k: v for k, v in json.loads((d / "mlflow_runs.json").read_text()).items() if k in ("parent_run_id", "runs")}
            for d in (copy, out)]
    assert runs[0] == runs[1] and _run_count(copy) == _run_count(out), "an MLflow run was lost or duplicated"


def _run_count(study_dir: Path) -> int:
    with closing(sqlite3.connect(study_dir / "mlflow.db")) as db:
        return db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
