"""File-system helpers shared by everything that writes a directory atomically (tempdir + rename) and checks
what it reads back (sha256 of files)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Mapping


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


def save_safetensors(tensors: Mapping, path: str | Path, metadata: Mapping[str, str] | None = None) -> None:
    """safetensors.torch.save_file with the same bytes for the same tensors and metadata, in every process.

    safetensors keeps the metadata in a Rust hash map, which lists its keys in a per-process random order: two
    runs that saved equal tensors and equal metadata wrote different files, so a package's sha256 (its id) was
    not reproducible. The header is the format's documented JSON (8-byte little-endian length, the JSON,
    space padding to 8 bytes, then the data, whose offsets are relative to the data): the metadata keys are
    sorted and the header written again; the tensor entries and the data keep the library's own layout."""
    from safetensors.torch import save, save_file

    if not metadata or len(metadata) < 2:  # one key has one order: the library's file, written as it streams
        save_file(dict(tensors), str(path), metadata=dict(metadata) if metadata else None)
        return
    raw = save(dict(tensors), metadata=dict(metadata))  # the whole file in memory: tables and indexes, not towers
    length = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + length])
    header = {"__metadata__": dict(sorted(header.pop("__metadata__").items())), **header}
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as fh:
        fh.write(len(text).to_bytes(8, "little"))
        fh.write(text)
        fh.write(memoryview(raw)[8 + length :])
