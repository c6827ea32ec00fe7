"""`crossrec-peft serve` as a user runs it: a subprocess on a free local port that loads a package, answers
over HTTP, and exits 0 on SIGTERM; bad flags exit 2 with one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from crossrec_peft.cli import main
from tests._packages import make_package
from tests.conftest import small_layout
from tests.serve.live import free_port, wait_ready

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def package(tiny_bert, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-cli")
    data = small_layout(root / "data", num_items=16)
    return make_package(tiny_bert, root / "pk", "shop", "lora", seed=1, data=data), data


def test_serve_answers_and_exits_0_on_sigterm(package, tmp_path):
    directory, data = package
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "crossrec_peft", "serve", str(directory), "--data", f"shop={data}", "--port", str(port), "--device", "cpu"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_ready(proc, port)
        r = httpx.post(f"http://127.0.0.1:{port}/v1/recommend", json={"domain": "shop", "history": ["i1", "i2"], "k": 3, "explain": True})
        assert r.status_code == 200 and len(r.json()["items"]) == 3 and r.json()["items"][0]["explanation"]["method"] == "exact"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "1 domain(s) (shop) loaded in" in err and "catalog indexes of shop ready in" in err
    assert not list(tmp_path.iterdir()), "serving writes nothing into the working directory"


@pytest.mark.parametrize("flags, message", [
    (["--data", "shop"], "--data takes DOMAIN=DIR"),
    (["--data", "shp=/tmp"], "Did you mean 'shop'?"),
    (["--max-batch", "0"], "max-batch must be positive"),
    (["--port", "70000"], "--port must be from 1 to 65535"),
    (["--admin-token", "short"], "at least 8 characters"),
])
def test_bad_flags_exit_2(package, capsys, flags, message):
    directory, _ = package
    assert main(["serve", str(directory), "--device", "cpu", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
