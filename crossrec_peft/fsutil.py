"""File-system helpers shared by everything that writes a directory or a file atomically (a temporary one
beside it, then a rename) and checks what it reads back (sha256 of files)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

from .errors import OutputError

# Temporary names beside a target keep this much of its name: the target's own name may be up to the file
# system's 255 bytes, and the prefix and random suffix must still fit.
_STEM = 64


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


def unwritable(path: Path, exc: OSError, what: str) -> OutputError:
    """OutputError for an OSError met writing `what` ('the directory', 'into') at `path`, with the reason."""
    reason = exc.strerror or type(exc).__name__
    return OutputError(f"Cannot write {what} '{path}': {reason}.")


def check_can_create(target: Path) -> None:
    """OutputError unless directory `target` exists or could be made: no existing parent of it is a file and
    the file system takes its name. Nothing is written: for a command to fail at once, before its work."""
    target = Path(target)
    try:  # a name the file system refuses (too long) fails its first stat
        at = target
        while not at.is_dir():
            if at.exists() or at.is_symlink():
                what = "a file of that name exists" if at == target else f"'{at}' is a file, not a directory"
                raise OutputError(f"Cannot create '{target}': {what}.")
            if at.parent == at:
                break
            at = at.parent
    except OSError as exc:
        raise unwritable(target, exc, "the directory") from None


def _make_parents(directory: Path) -> list[Path]:
    """Create `directory` and its missing parents (`check_can_create` passed); returns the ones created,
    deepest last. OutputError when one cannot be made."""
    missing = []
    at = directory
    while not at.is_dir() and at.parent != at:
        missing.append(at)
        at = at.parent
    made: list[Path] = []
    for path in reversed(missing):
        try:
            path.mkdir()
        except OSError as exc:
            _remove_made(made)
            raise unwritable(path, exc, "the directory") from None
        made.append(path)
    return made


def _remove_made(made: list[Path]) -> None:
    """Remove directories `_make_parents` created, deepest first, where they are still empty."""
    for path in reversed(made):
        try:
            path.rmdir()
        except OSError:
            return


@contextmanager
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """A temporary directory beside `target` to fill; when the block ends without an error it takes
    `target`'s place, with the usual umask-based modes (an earlier directory there is removed only once the
    new one is in place). When the block raises, nothing is left behind: not the temporary directory, not
    the parent directories made for it, and an earlier `target` is untouched. A symlink at `target` is
    followed: the directory it points to is replaced and the link kept. OutputError names a path that
    cannot be written (a parent that is a file, no permission, a name too long)."""
    target = Path(target)
    check_can_create(target)
    if target.is_symlink():
        target = target.resolve()
    made = _make_parents(target.parent)
    stem = target.name[:_STEM]
    try:
        work = Path(tempfile.mkdtemp(prefix=f".{stem}.tmp-", dir=target.parent))
    except OSError as exc:
        _remove_made(made)
        raise unwritable(target.parent, exc, "into") from None
    try:
        yield work
        make_public(work)
        try:
            if target.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{stem}.old-", dir=target.parent))
                old.rmdir()
                target.rename(old)
                try:
                    work.rename(target)
                except OSError:
                    old.rename(target)  # the earlier directory back where it was
                    raise
                shutil.rmtree(old, ignore_errors=True)
            else:
                work.rename(target)
        except OSError as exc:
            raise unwritable(target, exc, "the directory") from None
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        _remove_made(made)
        raise


@contextmanager
def atomic_file(target: str | Path) -> Iterator[Path]:
    """A temporary file beside `target` to write; when the block ends without an error it is renamed onto
    `target`, so a reader (or a run resumed after a kill) sees the old file or the new one, never half of one.
    It gets the usual umask-based mode (mkstemp makes it private, 0600). When the block raises, the temporary
    file is removed and `target` is untouched. The parent directory must exist."""
    target = Path(target)
    fd, name = tempfile.mkstemp(prefix=f".{target.name[:_STEM]}.tmp-", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        tmp.chmod(0o666 & ~current_umask())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
