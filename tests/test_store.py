"""The checkpoint store: keys, reuse, one build under a real race of processes, crash safety, stale locks."""
from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from scaling.train.store import MANIFEST, CheckpointStore, key_for

PARTS = {"model": "cpu/w8", "source": "medical:ab12", "subset": 2000, "seed": 0, "recipe": {"steps": 500}}
KEY = key_for(**PARTS)

# A requester in its own process: logs "enter"/"build" lines with times, builds slowly, prints the entry's path.
REQUESTER = r"""
import os, sys, time
from scaling.train.store import CheckpointStore
root, log, hold = sys.argv[1], sys.argv[2], float(sys.argv[3])

def note(what):
    with open(log, "a") as f:
        f.write(f"{what} {os.getpid()} {time.time()}\n")

def build(tmp):
    note("build")
    (tmp / "model.pt").write_bytes(b"half-written")
    time.sleep(hold)
    (tmp / "model.pt").write_bytes(b"weights")

note("enter")
store = CheckpointStore(root, heartbeat_s=0.2, stale_s=60, poll_s=0.05)
print(store.get_or_create(%r, build, timeout_s=60))
""" % (PARTS,)


def _requester(root: Path, log: Path, hold: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", REQUESTER, str(root), str(log), str(hold)],
                            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1])


def _lines(log: Path, what: str) -> list[list[str]]:
    return [ln.split() for ln in log.read_text().splitlines() if ln.startswith(what)] if log.exists() else []


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for sub in (".tmp", ".locks") for p in (root / sub).iterdir())


def _writer(content: bytes = b"weights", calls: list | None = None):
    def build(tmp: Path) -> None:
        if calls is not None:
            calls.append(tmp)
        (tmp / "sub").mkdir()
        (tmp / "model.pt").write_bytes(content)
        (tmp / "sub" / "extra.json").write_text("{}")
    return build


def test_key_is_canonical_and_checked(tmp_path):
    assert key_for(**PARTS) == key_for(**dict(reversed(list(PARTS.items()))))
    assert key_for(**PARTS) != key_for(**(PARTS | {"seed": 1}))
    assert len(KEY) == 64
    with pytest.raises(ValueError, match="JSON values"):
        key_for(source=Path("/data"))
    with pytest.raises(ValueError, match="JSON values"):
        key_for(lr=float("nan"))
    with pytest.raises(ValueError, match="64 lowercase hex"):
        CheckpointStore(tmp_path).path("../../etc")


def test_second_request_reuses_the_entry(tmp_path):
    store = CheckpointStore(tmp_path)
    calls: list = []
    path = store.get_or_create(PARTS, _writer(calls=calls))
    assert path == store.path(KEY) and store.exists(KEY) and len(calls) == 1
    assert (path / "model.pt").read_bytes() == b"weights"
    manifest = store.manifest(KEY)
    assert manifest["key"] == KEY and manifest["parts"] == PARTS
    assert manifest["files"] == {"model.pt": 7, "sub/extra.json": 2}
    assert CheckpointStore(tmp_path).get_or_create(PARTS, _writer(calls=calls)) == path
    assert len(calls) == 1
    assert _leftovers(tmp_path) == []


def test_failed_build_stores_nothing_and_is_retried(tmp_path):
    store = CheckpointStore(tmp_path)

    def broken(tmp: Path) -> None:
        (tmp / "model.pt").write_bytes(b"half")
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        store.get_or_create(PARTS, broken)
    assert not store.exists(KEY) and not store.path(KEY).exists() and _leftovers(tmp_path) == []
    store.get_or_create(PARTS, _writer())
    assert store.exists(KEY)


def test_build_may_not_write_the_manifest(tmp_path):
    with pytest.raises(ValueError, match="reserves"):
        CheckpointStore(tmp_path).get_or_create(PARTS, lambda tmp: (tmp / MANIFEST).write_text("{}"))


def test_two_processes_race_and_build_once(tmp_path):
    root, log = tmp_path / "store", tmp_path / "log"
    procs = [_requester(root, log, hold=3.0) for _ in range(2)]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs[0] == outs[1] == str(root / KEY)
    builds = _lines(log, "build")
    assert len(builds) == 1
    # the race was real: both requested before the one build could have finished
    assert all(float(enter[2]) < float(builds[0][2]) + 3.0 for enter in _lines(log, "enter"))
    assert (root / KEY / "model.pt").read_bytes() == b"weights"
    assert _leftovers(root) == []


def test_killed_build_leaves_nothing_finished_and_is_rebuilt(tmp_path):
    root, log = tmp_path / "store", tmp_path / "log"
    proc = _requester(root, log, hold=60)
    deadline = time.monotonic() + 30
    while not _lines(log, "build") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _lines(log, "build"), "the requester never started building"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)

    store = CheckpointStore(root, stale_s=600, heartbeat_s=1, poll_s=0.05)
    assert not store.exists(KEY) and not store.path(KEY).exists()
    assert len(_leftovers(root)) == 2  # the half-written build and the dead owner's lock, both out of sight
    calls: list = []
    start = time.monotonic()
    store.get_or_create(PARTS, _writer(calls=calls), timeout_s=30)
    assert len(calls) == 1 and store.exists(KEY)
    assert time.monotonic() - start < 10  # a dead owner on this host is seen at once, not after stale_s
    assert _leftovers(root) == []


def _foreign_lock(root: Path, age_s: float) -> None:
    lock = root / ".locks" / f"{KEY}.lock"
    lock.write_text(json.dumps({"host": "jwb0999i.elsewhere", "pid": 4242, "token": "f" * 32}))
    (root / ".tmp" / f"{KEY}.{'f' * 32}").mkdir()  # that owner's half-finished build
    then = time.time() - age_s
    os.utime(lock, (then, then))


def test_stale_lock_of_another_node_is_taken_over(tmp_path):
    store = CheckpointStore(tmp_path, heartbeat_s=0.1, stale_s=1.0, poll_s=0.05)
    _foreign_lock(tmp_path, age_s=30)
    calls: list = []
    store.get_or_create(PARTS, _writer(calls=calls), timeout_s=10)
    assert len(calls) == 1 and _leftovers(tmp_path) == []


def test_live_lock_of_another_node_is_waited_for(tmp_path):
    store = CheckpointStore(tmp_path, heartbeat_s=1.0, stale_s=30, poll_s=0.05)
    _foreign_lock(tmp_path, age_s=0)
    with pytest.raises(TimeoutError, match="jwb0999i.elsewhere"):
        store.get_or_create(PARTS, _writer(), timeout_s=0.5)
    assert not store.exists(KEY)


def test_heartbeat_keeps_a_long_build_from_looking_stale(tmp_path):
    """stale_s is far shorter than the build: only the owner's heartbeat stops a second requester's takeover."""
    calls: list = []

    def slow(tmp: Path) -> None:
        calls.append(tmp)
        time.sleep(1.5)
        (tmp / "model.pt").write_bytes(b"weights")

    stores = [CheckpointStore(tmp_path, heartbeat_s=0.1, stale_s=0.4, poll_s=0.05) for _ in range(2)]
    first = threading.Thread(target=stores[0].get_or_create, args=(PARTS, slow))
    first.start()
    while not calls:
        time.sleep(0.01)
    stores[1].get_or_create(PARTS, slow, timeout_s=20)
    first.join()
    assert len(calls) == 1 and _leftovers(tmp_path) == []


def test_load_is_weights_only(tmp_path):
    store = CheckpointStore(tmp_path)

    def build(tmp: Path) -> None:
        torch.save({"w": torch.arange(3.0)}, tmp / "model.pt")
        torch.save({"w": Fraction(1, 3)}, tmp / "pickled.pt")  # arbitrary objects need full unpickling

    store.get_or_create(PARTS, build)
    assert torch.equal(store.load(KEY)["w"], torch.arange(3.0))
    with pytest.raises(pickle.UnpicklingError):
        store.load(KEY, "pickled.pt")
    with pytest.raises(FileNotFoundError):
        store.load(key_for(other=1))
