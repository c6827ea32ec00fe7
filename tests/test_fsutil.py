"""fsutil.save_safetensors: a file safetensors reads back, the same bytes in every process."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from crossrec_peft.fsutil import save_safetensors, sha256

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
