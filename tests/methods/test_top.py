"""`top`: with equal weights its output equals the uncached forward (1e-5), a step runs only the top k
blocks and trains only them, and export -> reload gives identical scores (LoRA ones as a peft package)."""

from __future__ import annotations

import json

import pytest
import torch

from crossrec_peft.data.batching import Collator
from crossrec_peft.errors import ConfigError
from crossrec_peft.model import build_model
from crossrec_peft.objectives import InBatchSoftmax, RetrievalOptions
from crossrec_peft.package import export_package, load_package
from tests.methods.cached_setup import ITEMS, N, WINDOWS, config, context, count_calls, model_and_batch, raw_embeddings

CASES = [
    pytest.param({"name": "top", "k": 1, "tune": "full"}, id="k1-full"),
    pytest.param({"name": "top", "k": 2, "tune": "full"}, id="k2-full"),
    pytest.param({"name": "top", "k": 1, "tune": "lora", "r": 4}, id="k1-lora"),
    pytest.param({"name": "top", "k": 2, "tune": "lora", "r": 4}, id="k2-lora"),
]
LAYERS = 2  # the tiny BERT


def perturb(model) -> None:
    """Move every trainable tensor off its start (LoRA's B is zero there), so equality means something."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))


@pytest.mark.parametrize("method", CASES)
def test_top_equals_the_uncached_forward(tiny_bert, tmp_path, method):
    model, features, _ = model_and_batch(tiny_bert, method, tmp_path, dtype="float32")
    perturb(model)
    model.eval()
    with torch.no_grad():
        cached, present = model.modalities["m"](model.collate_items(features, torch.arange(N))["m"])
    assert present.all()
    uncached = raw_embeddings(model)
    torch.testing.assert_close(cached, uncached, atol=1e-5, rtol=1e-5)
    assert (cached - uncached).abs().max() < 1e-5


@pytest.mark.parametrize("method", CASES)
def test_a_step_runs_and_trains_only_the_top_layers(tiny_bert, tmp_path, method):
    model, _, batch = model_and_batch(tiny_bert, method, tmp_path)
    backbone = model.modalities["m"].backbone
    blocks = backbone._blocks()
    start = LAYERS - method["k"]
    bottom_calls = count_calls(list(blocks[:start]) + [backbone.base_model.embeddings])
    top_calls = count_calls(blocks[start:])
    names = dict(backbone.named_parameters())
    before = {n: p.detach().clone() for n, p in names.items()}
    model.train()
    loss, _ = InBatchSoftmax(RetrievalOptions())(model(batch), batch)
    loss.backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5).step()
    assert bottom_calls == [0] and top_calls[0] == method["k"]
    top = tuple(f"encoder.layer.{i}." for i in range(start, LAYERS))
    lora = method["tune"] == "lora"
    for name, p in names.items():
        in_top = any(t in name for t in top)
        trains = in_top and ("lora_" in name if lora else True)
        assert p.requires_grad == trains, name
        assert (p.grad is not None) == trains, name
        if not trains:
            assert torch.equal(p, before[name]), name
    # Every trained tensor moved (LoRA's A only gets a gradient once B is off zero: B is what moves first).
    moved = {n for n, p in names.items() if not torch.equal(p, before[n])}
    expected = {n for n, p in names.items() if p.requires_grad and not (lora and "lora_A" in n)}
    assert moved == expected


@pytest.mark.parametrize("method", CASES)
def test_export_then_reload_gives_identical_scores(tiny_bert, tmp_path, method):
    model, _, batch = model_and_batch(tiny_bert, method, tmp_path / "cache")
    perturb(model)
    model.eval()
    package = export_package(model, config(tiny_bert, method), tmp_path / "pkg")
    reloaded, manifest = load_package(package)
    if method["tune"] == "lora":  # a peft package with LoRA on the top layers only
        peft_config = json.loads((package / "adapter_config.json").read_text())
        assert peft_config["layers_to_transform"] == list(range(LAYERS - method["k"], LAYERS))
        assert (package / "adapter_model.safetensors").is_file()
    again = reloaded.featurize(ITEMS, context(tmp_path / "cache"))
    with torch.no_grad():
        a, b = model(batch), reloaded(Collator(again, reloaded.collate_items)(WINDOWS))
    assert torch.equal(a["users"], b["users"]) and torch.equal(a["items"], b["items"])


@pytest.mark.parametrize("option, message", [({"k": 3}, "has 2 layers"), ({"k": 0}, "at least 1"), ({"tune": "ia3"}, "tune must be")])
def test_bad_options_are_named(tiny_bert, option, message):
    with pytest.raises(ConfigError, match=message):
        build_model(config(tiny_bert, {"name": "top", **option}).model)
