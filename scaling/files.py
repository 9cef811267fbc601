"""Publishing files so that readers never see them half-written, knowing later that they are still intact, and
locking a cache entry so that one process builds it.

A directory is published by syncing its files to disk, writing a manifest last (with the sha256 of every file),
then one rename into place: a directory without its manifest is, by this rule, unfinished, and one whose files
no longer match their recorded sha256 has been corrupted since (`verify`). A single file is published the same
way without a manifest (`publishing`, `publish_file`). A write that fills the file system is reported as
`NoSpace`, naming the path and the space needed, and leaves nothing at the final path. Used by the shard cache,
the checkpoint store, the local jobs' checkpoints, the leakage guard's hashes and the results table.

Locking (one build per entry across processes and nodes, `LockFiles`): the caches live on a parallel file system
and their users run on different nodes. ``flock``/``fcntl`` locks are not coherent across nodes on Lustre unless it
is mounted with ``-o flock`` (``localflock`` silently locks per node), and are unreliable on some NFS setups, so a
lock is a file created with ``O_CREAT | O_EXCL`` (atomic on NFSv3+, GPFS and Lustre) holding the owner's host, pid
and a token. A thread of the owner refreshes its mtime every `heartbeat_s`. A waiter takes the lock over when the
owner is provably dead (same host name, pid gone) or its heartbeat is older than `stale_s` (another node died or
hangs); node clocks are assumed to agree to well within `stale_s`. Correctness must not rest on the lock: a
takeover race can at worst build an entry twice, so a build publishes by rename and the second rename fails on
the finished entry. The lock only keeps expensive builds from repeating.
"""
from __future__ import annotations

import errno
import functools
import hashlib
import json
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

MANIFEST = "manifest.json"
#: the manifest's key for {relative path: sha256 hex} of every published file
CHECKSUMS = "sha256"
HOST = socket.gethostname()

_log = logging.getLogger(__name__)


class NoSpace(OSError):
    """The file system filled up (or a quota was reached) while publishing `path`."""

    def __init__(self, path: Path, needed: int, *, at_least: bool = False):
        total = _usage(path)
        where = f"the file system holding it ({_size(total)} in all) is full" if total else "its file system is full"
        super().__init__(errno.ENOSPC, f"no space left writing {path}: it needs {'at least ' if at_least else ''}"
                                       f"{_size(needed)} and {where}; free some space (or point the study "
                                       f"or cache elsewhere) and run the same command again")
        self.path, self.needed, self.at_least = path, needed, at_least

    def __reduce__(self):  # rebuilt from its fields when sent between processes (a Ray task's error)
        return functools.partial(NoSpace, at_least=self.at_least), (self.path, self.needed)

    def __str__(self) -> str:
        return self.strerror


def _usage(path: Path) -> int:
    for folder in (path, *path.parents):
        if folder.exists():
            return shutil.disk_usage(folder).total
    return 0


def _size(n: int) -> str:
    return f"{n} bytes" if n < 1 << 20 else f"{n / (1 << 20):,.1f} MiB"


def _full(err: BaseException, path: Path) -> bool:
    """Whether `err`, raised while writing under `path`, came from a full file system. Writers that hide the
    errno (torch.save's C++ writer raises a bare RuntimeError) are judged by the file system having no block
    left for unprivileged writers."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    for folder in (path, *path.parents):
        if folder.exists():
            return os.statvfs(folder).f_bavail == 0
    return False


@contextmanager
def space_for(path: Path, needed: Callable[[], tuple[int, bool]]) -> Iterator[None]:
    """Turns an error of a full file system inside the block into `NoSpace(path, ...)`; `needed()` gives
    (bytes, whether that is only a lower bound), asked when the error happens (before any clean-up)."""
    try:
        yield
    except NoSpace:
        raise
    except Exception as err:
        if not _full(err, path):
            raise
        size, at_least = needed()
        raise NoSpace(path, size, at_least=at_least) from err


def written(path: Path) -> int:
    """Bytes of the files under `path` (a lower bound on what a failed write needed)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def fsync(path: Path) -> None:
    """Flush a file or a directory entry to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()  # hashlib.file_digest needs Python 3.11; the package supports 3.10
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def publish(tmp: Path, final: Path, manifest: dict) -> bool:
    """Sync everything under `tmp`, write its manifest (with the sha256 of every file added), and rename it to
    `final`. Returns False, leaving `tmp` to the caller, when `final` already exists (another writer published
    first). A full file system raises `NoSpace` naming `final`."""
    with space_for(final, lambda: (written(tmp) + 4096, True)):
        sums = {}
        for dirpath, _, filenames in os.walk(tmp, topdown=False):
            for name in filenames:
                fsync(Path(dirpath, name))
                sums[str(Path(dirpath, name).relative_to(tmp))] = sha256(Path(dirpath, name))
            fsync(Path(dirpath))
        with open(tmp / MANIFEST, "w") as f:
            json.dump({**manifest, CHECKSUMS: dict(sorted(sums.items()))}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        fsync(tmp)
    try:
        os.rename(tmp, final)
    except OSError:
        if not final.exists():
            raise
        return False
    fsync(final.parent)
    return True


def verify(final: Path) -> str:
    """'' when the published directory `final` is intact, else what is wrong (its manifest missing or
    unreadable, a file missing, or a file whose sha256 differs from the one recorded when it was published).
    Directories published before checksums were recorded pass."""
    try:
        sums = json.loads((final / MANIFEST).read_text()).get(CHECKSUMS, {})
    except FileNotFoundError:
        return f"{final / MANIFEST} is missing"
    except (OSError, ValueError, AttributeError) as err:
        return f"{final / MANIFEST} is unreadable ({err})"
    for name, digest in sums.items():
        try:
            actual = sha256(final / name)
        except FileNotFoundError:
            return f"{final / name} is missing"
        if actual != digest:
            return f"{final / name} has sha256 {actual[:12]}..., recorded {digest[:12]}... when it was published"
    return ""


@contextmanager
def publishing(path: Path, needed: Callable[[], tuple[int, bool]] | None = None) -> Iterator[Path]:
    """A temporary sibling of `path` for the block to write; when the block ends it is synced and renamed over
    `path`, so a reader sees the old file or the new one, never a part. A failed block leaves `path` as it was;
    a full file system raises `NoSpace` with `needed()` (default: what the block had written, a lower bound)."""
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with space_for(path, needed or (lambda: (tmp.stat().st_size if tmp.exists() else 0, True))):
            yield tmp
            fsync(tmp)
        os.rename(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync(path.parent)


def publish_file(path: Path, data: bytes) -> Path:
    """Write `data` to `path` atomically (see `publishing`)."""
    with publishing(path, lambda: (len(data), False)) as tmp:
        tmp.write_bytes(data)
    return path


# ---------------------------------------------------------------------------------------------- locking

def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return True  # unknown owner: only its heartbeat can tell
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    return True


class LockFiles:
    """Exclusive locks by name, each the file `directory / name` (see the module docstring)."""

    def __init__(self, directory: str | Path, *, heartbeat_s: float = 10.0, stale_s: float = 120.0,
                 poll_s: float = 1.0):
        if not stale_s > 2 * heartbeat_s > 0:
            raise ValueError(f"stale_s ({stale_s}) must exceed two heartbeats ({heartbeat_s} s each)")
        self.directory = Path(directory)
        self.heartbeat_s, self.stale_s, self.poll_s = heartbeat_s, stale_s, poll_s

    def path(self, name: str) -> Path:
        return self.directory / name

    def owner(self, name: str) -> dict:
        """The owner record of lock `name` (host, pid, token, since); {} when it is free or its creator has not
        written it yet."""
        return _read_owner(self.path(name))

    @contextmanager
    def attempt(self, name: str, on_takeover: Callable[[dict], None] | None = None) -> Iterator[str | None]:
        """Yields this owner's token while holding lock `name`, or None when another owner holds it (after
        taking over a stale lock, so that the next attempt can succeed; `on_takeover(owner)` then clears what
        the old owner left)."""
        path = self.path(name)
        token = uuid.uuid4().hex
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            self._break_if_stale(path, on_takeover)
            yield None
            return
        record = json.dumps({"host": HOST, "pid": os.getpid(), "token": token,
                             "since": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        try:
            with space_for(path, lambda: (len(record), False)), os.fdopen(fd, "w") as f:
                f.write(record)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            path.unlink(missing_ok=True)  # an ownerless lock would block every waiter for stale_s
            raise
        stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(path, token, stop), daemon=True,
                                name=f"lock-{name[:16]}")
        beat.start()
        try:
            yield token
        finally:
            stop.set()
            beat.join()
            if _read_owner(path).get("token") == token:
                path.unlink(missing_ok=True)

    @contextmanager
    def hold(self, name: str, on_takeover: Callable[[dict], None] | None = None) -> Iterator[str]:
        """Holds lock `name` for the block, waiting (a try every `poll_s`) while another owner holds it."""
        while True:
            with self.attempt(name, on_takeover) as token:
                if token is not None:
                    yield token
                    return
            time.sleep(self.poll_s)

    def _heartbeat(self, path: Path, token: str, stop: threading.Event) -> None:
        while not stop.wait(self.heartbeat_s):
            if _read_owner(path).get("token") != token:
                return  # taken over: leave the new owner's heartbeat alone
            try:
                os.utime(path)
            except FileNotFoundError:
                return

    def _break_if_stale(self, path: Path, on_takeover: Callable[[dict], None] | None) -> None:
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return
        owner = _read_owner(path)
        dead = owner.get("host") == HOST and not _alive(owner.get("pid"))
        if not dead and age <= self.stale_s:
            return
        # Move the lock aside under a unique name, then check that it is the one judged stale: between that
        # judgement and the rename another waiter may have broken it and taken a fresh lock.
        grave = path.with_name(f"{path.name}.{uuid.uuid4().hex}.stale")
        try:
            os.rename(path, grave)
        except FileNotFoundError:
            return
        moved = _read_owner(grave)
        if moved.get("token") != owner.get("token"):
            try:
                os.link(grave, path)  # put the fresh lock back, unless yet another owner has appeared
            except FileExistsError:
                pass
        else:
            _log.warning("took over the lock %s from %s (%s)", path, owner or "an unknown owner",
                         "dead" if dead else f"no heartbeat for {age:.0f} s")
            if on_takeover is not None:
                on_takeover(owner)
        grave.unlink(missing_ok=True)


def _read_owner(path: Path) -> dict:
    """The owner record of a lock file; {} when the file is gone or its creator has not written it yet."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
