"""Building a shard set on a real local Ray cluster (`scaling.cluster.RayChunks`), with its faults caused for real:
a Ray worker killed mid-chunk, the driver killed mid-build (SIGKILL) and run again, a bad image. After each, the
published set is byte for byte an undisturbed build's, and the chunk log shows that no chunk was built twice."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from scaling.cluster import RayChunks
from scaling.data.base import DataError
from scaling.data.preprocess import Preprocess
from scaling.data.shards import BUILDS, CHUNKS_LOG, prepare_shards, shard_path
from scaling.files import MANIFEST
from tiny_dataset import TinyDataset

pytestmark = pytest.mark.slow  # starts Ray

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
#: 6 chunks of 8 images, each image slowed down: a build lasts long enough to be hit
N, ROWS, SLOW = 48, 8, 0.15
PREPROCESS = Preprocess(16)


def digests(folder: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.iterdir())
            if f.is_file() and f.name != MANIFEST}


def chunk_log(cache: Path) -> list[int]:
    return sorted(json.loads(line)["chunk"] for line in (cache / CHUNKS_LOG).read_text().splitlines())


def ray_env() -> dict[str, str]:
    """The environment of processes whose Ray workers unpickle the tests' TinyDataset."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)])}


@pytest.fixture(scope="module")
def ray_chunks():
    """A local Ray of 2 CPUs, started the way `python -m scaling.data prepare` starts it."""
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = ray_env()["PYTHONPATH"]  # inherited by the raylet and its workers
    executor = RayChunks(num_cpus=2)
    try:
        assert executor.cpus() == 2
        yield executor
    finally:
        executor.close()
        if before is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = before


@pytest.fixture(scope="module")
def undisturbed(tmp_path_factory) -> dict[str, str]:
    """The files of the set built in one process, without faults."""
    shards = prepare_shards(TinyDataset(n=N), PREPROCESS, tmp_path_factory.mktemp("undisturbed"), rows_per_shard=ROWS)
    return digests(shards.path)


def chunk_workers() -> list[psutil.Process]:
    """Ray worker processes of this test's cluster running a chunk (Ray titles them after the task)."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if " ".join(proc.cmdline()).startswith("ray::build_chunk"):
                found.append(proc)
        except psutil.Error:
            pass
    return found


def test_a_ray_worker_killed_mid_build_costs_only_its_chunk(ray_chunks, undisturbed, tmp_path):
    killed = []

    def kill_one_worker():
        deadline = time.monotonic() + 120
        while not killed and time.monotonic() < deadline:
            workers = chunk_workers()
            if workers:
                workers[0].send_signal(signal.SIGKILL)
                killed.append(workers[0].pid)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_worker)
    killer.start()
    shards = prepare_shards(TinyDataset(n=N, slow_after=0, slow_seconds=SLOW), PREPROCESS, tmp_path,
                            rows_per_shard=ROWS, map_chunks=ray_chunks)
    killer.join()
    assert killed and not psutil.pid_exists(killed[0]), "no worker was killed"
    assert digests(shards.path) == undisturbed
    assert chunk_log(tmp_path) == list(range(N // ROWS)), "a chunk was built twice, or not at all"
    assert json.loads((tmp_path / BUILDS).read_text())["chunks_built"] == N // ROWS


DRIVER = f"""
import sys
from tiny_dataset import TinyDataset
from scaling.cluster import RayChunks
from scaling.data.preprocess import Preprocess
from scaling.data.shards import prepare_shards
with RayChunks(sys.argv[2]) as ray_chunks:  # joins the test's cluster, as a study joins its allocation's
    prepare_shards(TinyDataset(n={N}, slow_after=0, slow_seconds={SLOW * 2}), Preprocess(16), sys.argv[1],
                   rows_per_shard={ROWS}, map_chunks=ray_chunks)
"""


def test_a_driver_killed_mid_build_resumes_from_its_finished_chunks(ray_chunks, undisturbed, tmp_path):
    import ray

    address = ray.get_runtime_context().gcs_address
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(tmp_path), address], env=ray_env(),
                              stderr=subprocess.PIPE)
    final = shard_path(TinyDataset(n=N), PREPROCESS, tmp_path)
    chunks = tmp_path / f".{final.name}.chunks"
    try:
        deadline = time.monotonic() + 150
        while len(list(chunks.glob(f"chunk-*/{MANIFEST}"))) < 2:
            assert driver.poll() is None, driver.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no chunk finished"
            time.sleep(0.05)
    finally:
        driver.send_signal(signal.SIGKILL)  # Ray ends the tasks of a driver that died
        driver.wait()
    assert not final.exists()
    finished = len(list(chunks.glob(f"chunk-*/{MANIFEST}")))
    assert 2 <= finished < N // ROWS

    shards = prepare_shards(TinyDataset(n=N, slow_after=0, slow_seconds=SLOW), PREPROCESS, tmp_path,
                            rows_per_shard=ROWS, map_chunks=ray_chunks)
    assert digests(shards.path) == undisturbed
    assert chunk_log(tmp_path) == list(range(N // ROWS)), "a chunk was built twice, or not at all"
    build = json.loads((tmp_path / BUILDS).read_text())
    assert (build["chunks_reused"], build["chunks_built"]) == (finished, N // ROWS - finished)
    assert not chunks.exists() and not list(tmp_path.glob(".*.tmp-*"))


def test_a_bad_image_on_the_cluster_stops_naming_it_and_skip_counts_it(ray_chunks, tmp_path):
    bad = ("img00030",)
    with pytest.raises(DataError, match=r"^tiny: /data/tiny/img00030\.png: truncated PNG file$"):
        prepare_shards(TinyDataset(n=N, bad=bad), PREPROCESS, tmp_path / "a", rows_per_shard=ROWS,
                       map_chunks=ray_chunks)
    assert not shard_path(TinyDataset(n=N, bad=bad), PREPROCESS, tmp_path / "a").exists()
    skipped = prepare_shards(TinyDataset(n=N, bad=bad), PREPROCESS, tmp_path / "b", rows_per_shard=ROWS,
                             on_bad_image="skip", map_chunks=ray_chunks)
    alone = prepare_shards(TinyDataset(n=N, bad=bad), PREPROCESS, tmp_path / "c", rows_per_shard=ROWS,
                           on_bad_image="skip")
    assert skipped.skipped_keys == bad and len(skipped) == N - 1
    assert digests(skipped.path) == digests(alone.path)
