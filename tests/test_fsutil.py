"""fsutil: save_safetensors (a file safetensors reads back, the same bytes in every process), and
atomic_directory and atomic_file (a directory or a file replaced whole or not at all, nothing left behind by a
failure)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from crossrec_peft.errors import OutputError
from crossrec_peft.fsutil import atomic_directory, atomic_file, current_umask, save_safetensors, sha256

TENSORS = {"b.weight": torch.arange(12, dtype=torch.float32).reshape(3, 4), "a": torch.arange(5), "h": torch.ones(7, dtype=torch.float16)}

CASES = {
    "no metadata": None,
    "one key": {"format": "pt"},
    # Several keys are what safetensors lists in a per-process hash-map order; quotes, non-ASCII and a newline
    # in the values must survive the rewritten header.
    "several keys": {"format": "pt", "item_ids": '["é", "a\\"b", "x\\ny"]', "per_item": "100", "zeta": "1", "alpha": "2"},
}

SAVE_IN_CHILD = """
import sys, torch
from crossrec_peft.fsutil import save_safetensors
meta = {"format": "pt", "item_ids": '["é"]', "per_item": "100", "zeta": "1", "alpha": "2", "mid": "3"}
save_safetensors({"x": torch.arange(6, dtype=torch.float32)}, sys.argv[1], metadata=meta)
"""


@pytest.mark.parametrize("metadata", CASES.values(), ids=CASES.keys())
def test_reads_back_and_matches_the_library_byte_for_byte_up_to_key_order(tmp_path, metadata):
    path = tmp_path / "t.safetensors"
    save_safetensors(TENSORS, path, metadata=metadata)
    loaded = load_file(path)
    assert loaded.keys() == TENSORS.keys()
    for name, tensor in TENSORS.items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor)
    with safe_open(str(path), framework="pt") as fh:
        assert fh.metadata() == metadata
    # The same size as the library's own file: only the order of the metadata keys differs.
    save_file(TENSORS, str(tmp_path / "lib.safetensors"), metadata=metadata)
    assert path.stat().st_size == (tmp_path / "lib.safetensors").stat().st_size
    if metadata is None or len(metadata) == 1:
        assert path.read_bytes() == (tmp_path / "lib.safetensors").read_bytes()


def test_the_same_bytes_in_every_process(tmp_path):
    # The hash map's order is seeded per process, so the check runs the save in several processes.
    digests = set()
    for i in range(4):
        out = tmp_path / f"{i}.safetensors"
        subprocess.run([sys.executable, "-c", SAVE_IN_CHILD, str(out)], check=True)
        digests.add(sha256(out))
    assert len(digests) == 1


def _tree(root: Path) -> dict[str, str]:
    """Every path under `root` (hidden ones included) and its file's text, '<dir>' or '-> link'."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = f"-> {os.readlink(p)}" if p.is_symlink() else "<dir>" if p.is_dir() else p.read_text()
    return out


def _fill(work: Path, text: str) -> None:
    (work / "a.txt").write_text(text)
    (work / "sub").mkdir()
    (work / "sub" / "b.txt").write_text(text)


@pytest.mark.parametrize(
    "target, before",
    [
        ("out", {}),  # a new directory
        ("deep/er/out", {}),  # missing parents made
        ("out", {"out/old.txt": "earlier"}),  # an earlier directory replaced whole (old.txt gone)
        ("L" * 250, {}),  # a name near the file system's limit: temporary names beside it must still fit
    ],
)
def test_atomic_directory_writes_the_whole_directory(tmp_path, target, before):
    for rel, text in before.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    with atomic_directory(tmp_path / target) as work:
        assert work.parent == (tmp_path / target).parent and work.name.startswith(".")
        _fill(work, "new")
    assert _tree(tmp_path / target) == {"a.txt": "new", "sub": "<dir>", "sub/b.txt": "new"}
    # Nothing else beside it: no temporary or old directory left.
    assert sorted(p.name for p in (tmp_path / target).parent.iterdir()) == [Path(target).name]
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / target).stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's private 0700
    assert (tmp_path / target / "a.txt").stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("earlier", [False, True])
def test_atomic_directory_failure_leaves_everything_as_it_was(tmp_path, earlier):
    target = tmp_path / "new" / "parents" / "out"
    if earlier:
        target.mkdir(parents=True)
        (target / "keep.txt").write_text("earlier")
    before = _tree(tmp_path)
    with pytest.raises(RuntimeError, match="half-way"):
        with atomic_directory(target) as work:
            _fill(work, "half")
            raise RuntimeError("half-way")
    assert _tree(tmp_path) == before  # no temporary directory, no parents made for it, the earlier one intact


def test_atomic_directory_follows_a_symlink(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "old.txt").write_text("earlier")
    (tmp_path / "link").symlink_to(real)
    with atomic_directory(tmp_path / "link") as work:
        _fill(work, "new")
    assert (tmp_path / "link").is_symlink() and _tree(real) == {"a.txt": "new", "sub": "<dir>", "sub/b.txt": "new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]


@pytest.mark.parametrize(
    "make, target, message",
    [
        (lambda root: (root / "f").write_text("x"), "f/sub/out", "Cannot create '.*f/sub/out': '.*f' is a file"),
        (lambda root: (root / "f").write_text("x"), "f", "a file of that name exists"),
        # /proc refuses new entries even to root, where permission bits would not stop a write.
        (lambda root: None, "/proc/self/crossrec-test/out", "Cannot write the directory '/proc/self/crossrec-test'"),
        (lambda root: None, "x" * 300, "Cannot write the directory .*File name too long"),
    ],
)
def test_atomic_directory_names_a_path_it_cannot_write(tmp_path, make, target, message):
    if target.startswith("/proc") and not Path("/proc/self").is_dir():
        pytest.skip("no /proc on this system")
    make(tmp_path)
    before = _tree(tmp_path)
    with pytest.raises(OutputError, match=message):
        with atomic_directory(tmp_path / target) as work:
            _fill(work, "new")
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("earlier", [None, "the earlier file"], ids=["new", "replaced"])
@pytest.mark.parametrize("fails", [False, True], ids=["written", "failed"])
def test_atomic_file_replaces_whole_or_not_at_all(tmp_path, earlier, fails):
    target = tmp_path / "report.json"
    if earlier is not None:
        target.write_text(earlier)
    try:
        with atomic_file(target) as tmp:
            assert tmp.parent == tmp_path and tmp != target
            tmp.write_text("half")
            assert target.read_text() == earlier if earlier is not None else not target.exists()  # not yet in place
            if fails:
                raise KeyboardInterrupt  # a kill mid-write
            tmp.write_text("the new file")
    except KeyboardInterrupt:
        assert fails
    if fails:
        assert (target.read_text() if target.exists() else None) == earlier
    else:
        assert target.read_text() == "the new file"
        assert target.stat().st_mode & 0o777 == 0o666 & ~current_umask()  # not mkstemp's private 0600
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if fails and earlier is None else ["report.json"])
