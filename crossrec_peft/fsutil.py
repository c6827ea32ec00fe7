"""File-system helpers shared by everything that writes a directory atomically (tempdir + rename) and checks
what it reads back (sha256 of files)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def make_public(directory: Path) -> None:
    """mkdtemp makes a private (0700) directory; give it and its contents the usual umask-based modes
    before it is renamed into place."""
    umask = current_umask()
    for path in [directory, *directory.rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def update_digest(digest, path: Path) -> None:
    """Feed a file into a running hash, in 1 MiB chunks (weights files need not fit in memory twice)."""
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)


def sha256(path: Path) -> str:
    """The hex sha256 of a file."""
    digest = hashlib.sha256()
    update_digest(digest, path)
    return digest.hexdigest()
