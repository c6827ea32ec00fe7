"""Regressions from the serving audit: a failed POST /v1/domains leaves the shared backbone (and the next domain
loaded onto it) as a clean load has it; item objects with fields of the wrong kind or without text, and empty
bodies, are 400s naming the field; `serve` refuses a port in use, an unknown --host and non-finite numbers with
one `error:` paragraph (exit 2) before building any index, and loads NAME=PACKAGE as `recommend` does."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import httpx
import pytest
import torch
from safetensors.torch import load_file, save_file

from crossrec_peft import Recommender
from crossrec_peft.cli import main
from crossrec_peft.errors import ConfigError
from crossrec_peft.serve import create_app
from crossrec_peft.serve.settings import Settings
from tests._packages import make_package, write_manifest
from tests.conftest import small_layout
from tests.serve.live import free_port, serving, wait_ready

TOKEN = "s3cret-token"
ROOT = Path(__file__).resolve().parents[2]
HISTORY = ["i1", "i2"]


@pytest.fixture(scope="module")
def packages(tiny_bert, tmp_path_factory):
    root = tmp_path_factory.mktemp("audit")
    data = small_layout(root / "data", num_items=16)
    shop = make_package(tiny_bert, root / "pk", "shop", "lora", seed=1, data=data)
    # The same package with peft weights that do not fit: its load fails inside peft, after peft has put its
    # layers into the backbone. Re-sealed, so that the package's own checks pass.
    spoiled = shutil.copytree(shop, root / "spoiled" / "shop")
    weights = next(spoiled.rglob("adapter_model.safetensors"))
    tensors = load_file(str(weights))
    tensors[sorted(tensors)[0]] = torch.zeros(3, 3)
    save_file(tensors, str(weights), metadata={"format": "pt"})
    manifest = json.loads((spoiled / "crossrec.json").read_text())
    manifest["files"][str(weights.relative_to(spoiled))] = hashlib.sha256(weights.read_bytes()).hexdigest()
    write_manifest(spoiled, manifest)
    return {
        "shop": shop, "spoiled": spoiled, "data": data,
        "bank": make_package(tiny_bert, root / "pk", "bank", "bottleneck", seed=2, data=data),
    }


@pytest.fixture(scope="module")
def clean(packages):
    """What "shop" recommends when it is loaded alone onto a fresh backbone."""
    rec = Recommender(device="cpu")
    rec.load_adapter(packages["shop"])
    return rec.recommend(HISTORY, k=5)


def admin(server, body):
    return httpx.post(f"{server.url}/v1/domains", json=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120)


@pytest.mark.parametrize("failing", [
    lambda p: {"package": str(p["shop"]), "name": "mt", "data": str(p["data"] / "missing")},  # after the adapter was added
    lambda p: {"package": str(p["spoiled"]), "name": "mt"},  # inside peft
], ids=["bad-catalog", "peft-weights-do-not-fit"])
def test_a_failed_load_leaves_the_backbone_as_it_was(packages, clean, failing):
    rec = Recommender(device="cpu")
    rec.load_adapter(packages["bank"])
    backbones = dict(rec._backbones)
    with serving(create_app(rec, Settings(admin_token=TOKEN))) as server:
        before = httpx.get(f"{server.url}/v1/domains").json()
        r = admin(server, failing(packages))
        assert r.status_code == 400, r.text
        assert httpx.get(f"{server.url}/v1/domains").json() == before
        assert rec._backbones == backbones
        with warnings.catch_warnings(record=True) as caught:  # the load runs in the worker thread; warnings are global
            warnings.simplefilter("always")
            r = admin(server, {"package": str(packages["shop"]), "name": "mt"})
        assert r.status_code == 201, r.text
        assert [str(w.message) for w in caught if "adapter keys" in str(w.message) or "peft_config" in str(w.message)] == []
        got = httpx.post(f"{server.url}/v1/recommend", json={"domain": "mt", "history": HISTORY, "k": 5}, timeout=60).json()
    assert [i["item_id"] for i in got["items"]] == [i for i, _ in clean]
    assert [i["score"] for i in got["items"]] == pytest.approx([s for _, s in clean], abs=1e-6)


@pytest.fixture(scope="module")
def server(packages):
    rec = Recommender(device="cpu")
    rec.load_adapter(packages["shop"])
    with serving(create_app(rec, Settings())) as live:
        yield live


NO_TEXT = "needs non-empty text in at least one of 'title', 'category'"
NOT_TEXT = "must be a string (or null), got"


@pytest.mark.parametrize("path, body, field, message", [
    ("/v1/recommend", {"history": [{}]}, "history[0].title", f"missing; an item given by its fields {NO_TEXT}"),
    ("/v1/recommend", {"history": [{"title": None}]}, "history[0].title", "null; an item"),
    ("/v1/recommend", {"history": ["i1", {"title": "  ", "category": None}]}, "history[1].title", "empty; an item"),
    ("/v1/recommend", {"history": [{"titel": "red lamp"}]}, "history[0].title", "The item has 'titel', which domain 'shop' does not read."),
    ("/v1/recommend", {"history": [{"title": 5}]}, "history[0].title", f"{NOT_TEXT} a number (5)"),
    ("/v1/recommend", {"history": [{"title": ["a", "b"]}]}, "history[0].title", f'{NOT_TEXT} a list (["a", "b"])'),
    ("/v1/recommend", {"history": [{"title": {"a": 1}}]}, "history[0].title", f'{NOT_TEXT} an object ({{"a": 1}})'),
    ("/v1/recommend", {"history": [{"title": "lamp", "category": True}]}, "history[0].category", f"{NOT_TEXT} true/false"),
    ("/v1/items/encode", {"items": [{}]}, "items[0].title", NO_TEXT),
    ("/v1/items/encode", {"items": [{"title": "lamp"}, {"title": 7}]}, "items[1].title", f"{NOT_TEXT} a number (7)"),
    ("/v1/score", {"histories": [["i1"], [{"title": None}]], "candidates": ["i2"]}, "histories[1][0].title", NO_TEXT),
    ("/v1/score", {"histories": [["i1"]], "candidates": [{"title": 7}]}, "candidates[0].title", NOT_TEXT),
])
def test_item_objects_are_checked_and_name_the_field(server, path, body, field, message):
    r = httpx.post(f"{server.url}{path}", json={"domain": "shop", **body}, timeout=60)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["type"], error["field"]) == ("invalid_item", field)
    assert error["message"].startswith(f"{field}: ") and message in error["message"]


def test_good_item_objects_still_answer(server):
    r = httpx.post(f"{server.url}/v1/recommend", json={"domain": "shop", "history": [{"title": "a red lamp", "category": None}], "k": 2})
    assert r.status_code == 200 and len(r.json()["items"]) == 2


@pytest.mark.parametrize("path", ["/v1/recommend", "/v1/score", "/v1/items/encode", "/v1/domains"])
def test_an_empty_body_says_so(server, path):
    r = httpx.post(f"{server.url}{path}", content=b"", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"] == {"type": "invalid_value", "field": None,
                                 "message": "The body is empty: it must be a JSON object of the request's fields."}


@pytest.fixture
def busy_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.mark.parametrize("flags, message", [
    (lambda port: ["--port", str(port)], "--port {port}: address 127.0.0.1:{port} is already in use"),
    (lambda port: ["--host", "nohost.invalid"], "--host 'nohost.invalid': not a known host name or address"),
    (lambda port: ["--host", "192.0.2.1"], "--host '192.0.2.1': not an address of this machine"),  # TEST-NET-1: nobody's
], ids=["port-in-use", "unknown-host", "foreign-address"])
def test_serve_refuses_an_address_it_cannot_listen_on(packages, capsys, busy_port, flags, message):
    assert main(["serve", str(packages["shop"]), "--device", "cpu", *flags(busy_port)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message.format(port=busy_port) in err
    assert "loaded in" not in err  # refused before the server starts building catalog indexes


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_serve_refuses_non_finite_wait(packages, capsys, busy_port, value):
    # "=": argparse would take -inf for an option. The busy port makes a serve that accepted the value stop
    # (with another code) instead of serving forever.
    with pytest.raises(SystemExit) as exit:
        main(["serve", str(packages["shop"]), "--device", "cpu", f"--max-wait-ms={value}", "--port", str(busy_port)])
    assert exit.value.code == 2
    assert f"argument --max-wait-ms: must be a positive number, got {value}" in capsys.readouterr().err


@pytest.mark.parametrize("setting", ["max_batch", "max_wait_ms", "max_k", "max_history", "max_rows", "max_body_bytes"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_settings_refuse_non_finite_numbers(setting, value):
    with pytest.raises(ConfigError, match=f"serve: --{setting.replace('_', '-')} must be a finite number, got {value}"):
        Settings(**{setting: value})


def test_serve_loads_name_equals_package_as_the_advice_says(packages, capsys, tmp_path):
    shop = str(packages["shop"])
    assert main(["serve", shop, shop, "--device", "cpu"]) == 2
    advice = capsys.readouterr().err
    assert f"NAME={shop} on the command line" in advice
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "crossrec_peft", "serve", shop, f"other={shop}", "--data", f"other={packages['data']}",
         "--port", str(port), "--device", "cpu", "--threads", "1"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_ready(proc, port)
        domains = httpx.get(f"http://127.0.0.1:{port}/v1/domains").json()["domains"]
        r = httpx.post(f"http://127.0.0.1:{port}/v1/recommend", json={"domain": "other", "history": HISTORY, "k": 3}, timeout=60)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert [d["name"] for d in domains] == ["shop", "other"] and all(d["package"] == shop for d in domains)
    assert r.status_code == 200 and len(r.json()["items"]) == 3
