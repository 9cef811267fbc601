"""Content-addressed store of pre-trained checkpoints, shared by every job of a study (and by later studies).

An entry is a directory ``ROOT/<key>/`` holding the files its build wrote plus ``manifest.json`` (the key's
parts, file sizes and sha256, when and where it was built), so a human can see what a hash holds. The key is the sha256 of
the canonical JSON of its parts: model, source data + preprocessing hash, subset size, seed, recipe.

Commit protocol (a killed build leaves nothing that looks finished): the build writes into
``ROOT/.tmp/<key>.<token>/``; then every file and directory there is fsynced, the manifest is written and
fsynced last, the directory is renamed to ``ROOT/<key>`` (atomic within one file system) and the root fsynced.
An entry exists exactly when ``ROOT/<key>/manifest.json`` does. A full file system during the build or the
commit raises `scaling.files.NoSpace` naming the entry and what had been written, and stores nothing.

Corruption (bytes flipped or a file truncated after the commit): `intact` re-reads an entry against the sha256
recorded at commit; the driver asks it before each pre-training wave, and `get_or_create` before reusing an
entry. A corrupted entry is moved aside to ``ROOT/.corrupt/<key>.<time>/`` (kept for inspection) with a warning
naming the file, and counts as missing, so its pre-training job runs again. Discarding beats reporting because a
key fully determines its build (seeded), and the job's own last checkpoint usually survives under the study's
jobs/, so the re-run is often just the export; failing instead would stop a week-long study for a file it can
remake. Fine-tuning workers then load entries checked by the driver moments before.

Locking: one build per key across processes and nodes, by a lock file ``ROOT/.locks/<key>.lock`` that works on
parallel file systems (`scaling.files.LockFiles`); a waiter that takes over a dead or hung owner's lock discards
that owner's half-written build.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

from scaling.files import HOST, MANIFEST, LockFiles, publish, space_for, verify, written

#: where a build writes the model's state_dict, by convention (`CheckpointStore.load` reads it)
WEIGHTS_FILE = "model.pt"

_log = logging.getLogger(__name__)


def key_for(**parts: Any) -> str:
    """sha256 (hex) of the canonical JSON of `parts` (sorted keys, no whitespace). Parts must be JSON values;
    normalise types first, since 1 and 1.0 give different keys."""
    if not parts:
        raise ValueError("a checkpoint key needs at least one part")
    try:
        text = json.dumps(parts, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"checkpoint key parts must be JSON values (str, int, finite float, bool, None, lists, "
                         f"dicts with str keys): {e}") from e
    return hashlib.sha256(text.encode()).hexdigest()


class CheckpointStore:
    """Checkpoints under `root`, each built at most once per key (see the module docstring)."""

    def __init__(self, root: str | Path, *, heartbeat_s: float = 10.0, stale_s: float = 120.0, poll_s: float = 1.0):
        self.root = Path(root)
        self.locks = LockFiles(self.root / ".locks", heartbeat_s=heartbeat_s, stale_s=stale_s, poll_s=poll_s)
        for sub in (".tmp", ".locks"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        """Directory of entry `key` (it may not exist yet)."""
        if not re.fullmatch(r"[0-9a-f]{64}", key):
            raise ValueError(f"not a checkpoint key (64 lowercase hex digits, see key_for): {key!r}")
        return self.root / key

    def exists(self, key: str) -> bool:
        """Whether entry `key` is finished (see `intact` for whether its files are still as committed)."""
        return (self.path(key) / MANIFEST).is_file()

    def intact(self, key: str) -> bool:
        """Whether entry `key` is finished and its files still match their sha256. A corrupted entry is moved
        aside (see the module docstring), under the key's lock so that a fresh entry is never the one moved."""
        if not self.exists(key):
            return False
        if not verify(self.path(key)):
            return True
        with self._lock(key) as token:
            if token is None:
                return False  # its owner is rebuilding it
            problem = verify(self.path(key)) if self.exists(key) else ""
            if problem:
                aside = self.root / ".corrupt" / f"{key}.{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}"
                aside.parent.mkdir(exist_ok=True)
                os.rename(self.path(key), aside)
                _log.warning("checkpoint %s is corrupted (%s); moved aside to %s, its job will run again",
                             key, problem, aside)
        return False

    def manifest(self, key: str) -> dict:
        """The manifest of finished entry `key`: key, parts, files (relative path -> bytes), created, host, build_s."""
        return json.loads((self.path(key) / MANIFEST).read_text())

    def load(self, key: str, name: str = WEIGHTS_FILE) -> Any:
        """File `name` of finished entry `key`, read by ``torch.load(..., weights_only=True)`` onto the CPU."""
        import torch  # only loading needs torch; lock waiters and builders' parents do not

        if not self.exists(key):
            raise FileNotFoundError(f"no finished checkpoint {key} in {self.root}")
        problem = verify(self.path(key))
        if problem:
            raise ValueError(f"checkpoint {key} is corrupted: {problem}")
        return torch.load(self.path(key) / name, map_location="cpu", weights_only=True)

    def get_or_create(self, parts: Mapping[str, Any], build: Callable[[Path], None],
                      timeout_s: float | None = None) -> Path:
        """The entry for `parts`, calling ``build(tmp_dir)`` to write its files unless it exists or is being built
        elsewhere, in which case this waits (up to `timeout_s`, then TimeoutError) and returns the finished entry.
        If `build` raises, nothing is stored and the error propagates; the next request builds again."""
        key = key_for(**parts)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        announced = False
        self.intact(key)  # a corrupted entry is moved aside and built again
        while not self.exists(key):
            with self._lock(key) as token:
                if token is not None:
                    if not self.exists(key):  # it may have been finished between our check and our lock
                        self._build(key, dict(parts), build, token)
                    break
            if not announced:
                _log.info("waiting for %s, built by %s", key, self.locks.owner(_lock_name(key)))
                announced = True
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout_s} s for checkpoint {key} in {self.root}, built by "
                                   f"{self.locks.owner(_lock_name(key)) or 'a process that has not said who'}")
            time.sleep(self.locks.poll_s)
        return self.path(key)

    # -- building -------------------------------------------------------------------------------------------------

    def _tmp_dir(self, key: str, token: str) -> Path:
        return self.root / ".tmp" / f"{key}.{token}"

    def _build(self, key: str, parts: dict, build: Callable[[Path], None], token: str) -> None:
        tmp = self._tmp_dir(key, token)
        tmp.mkdir()
        try:
            start = time.monotonic()
            with space_for(self.path(key), lambda: (written(tmp), True)):
                build(tmp)
            if (tmp / MANIFEST).exists():
                raise ValueError(f"the build wrote {MANIFEST}, a file name the checkpoint store reserves")
            files = {str(f.relative_to(tmp)): f.stat().st_size for f in sorted(tmp.rglob("*")) if f.is_file()}
            manifest = {"key": key, "parts": parts, "files": files,
                        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "host": HOST,
                        "pid": os.getpid(), "build_s": round(time.monotonic() - start, 3)}
            if not publish(tmp, self.path(key), manifest):
                if not self.exists(key):
                    raise FileExistsError(f"{self.path(key)} exists but holds no finished checkpoint")
                _log.warning("checkpoint %s was built twice (a lock was taken over); keeping the first", key)
                shutil.rmtree(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    # -- locking --------------------------------------------------------------------------------------------------

    def _lock(self, key: str) -> AbstractContextManager[str | None]:
        """This owner's token while holding the lock of `key`, or None when another owner holds it; taking over
        a stale lock discards its owner's half-written build."""
        def discard_build(owner: dict) -> None:
            if owner.get("token"):
                shutil.rmtree(self._tmp_dir(key, owner["token"]), ignore_errors=True)

        return self.locks.attempt(_lock_name(key), on_takeover=discard_build)


def _lock_name(key: str) -> str:
    return f"{key}.lock"
