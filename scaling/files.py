"""Publishing files so that readers never see them half-written, and knowing later that they are still intact.

A directory is published by syncing its files to disk, writing a manifest last (with the sha256 of every file),
then one rename into place: a directory without its manifest is, by this rule, unfinished, and one whose files
no longer match their recorded sha256 has been corrupted since (`verify`). A single file is published the same
way without a manifest (`publish_file`). A write that fills the file system is reported as `NoSpace`, naming the
path and the space needed, and leaves nothing at the final path. Used by the shard cache, the checkpoint store,
the local jobs' checkpoints and the results table.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

MANIFEST = "manifest.json"
#: the manifest's key for {relative path: sha256 hex} of every published file
CHECKSUMS = "sha256"


class NoSpace(OSError):
    """The file system filled up (or a quota was reached) while publishing `path`."""

    def __init__(self, path: Path, needed: int, *, at_least: bool = False):
        total = _usage(path)
        where = f"the file system holding it ({_size(total)} in all) is full" if total else "its file system is full"
        super().__init__(errno.ENOSPC, f"no space left writing {path}: it needs {'at least ' if at_least else ''}"
                                       f"{_size(needed)} and {where}; free some space (or point the study "
                                       f"or cache elsewhere) and run the same command again")
        self.path, self.needed = path, needed

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


def publish_file(path: Path, data: bytes) -> Path:
    """Write `data` to `path` atomically: a temporary sibling, synced, then renamed over `path`, so a reader
    sees the old file or the new one, never a part. A full file system raises `NoSpace` and leaves `path` as
    it was."""
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with space_for(path, lambda: (len(data), False)):
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        os.rename(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync(path.parent)
    return path
