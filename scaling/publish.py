"""Publishing a directory so that readers never see it half-written: its files synced to disk, a manifest
written last, then one rename into place. A directory without its manifest is, by this rule, unfinished.
Used by the shard cache and the checkpoint store."""
from __future__ import annotations

import json
import os
from pathlib import Path

MANIFEST = "manifest.json"


def fsync(path: Path) -> None:
    """Flush a file or a directory entry to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: Path, final: Path, manifest: dict) -> bool:
    """Sync everything under `tmp`, write its manifest, and rename it to `final`. Returns False, leaving `tmp`
    to the caller, when `final` already exists (another writer published first)."""
    for dirpath, _, filenames in os.walk(tmp, topdown=False):
        for name in filenames:
            fsync(Path(dirpath, name))
        fsync(Path(dirpath))
    with open(tmp / MANIFEST, "w") as f:
        json.dump(manifest, f, indent=1)
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
