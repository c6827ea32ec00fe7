"""The (method x backbone) table: what trains, that a step changes exactly that, and export -> reload."""

from __future__ import annotations

import pytest
import torch

from crossrec_peft import recipes
from crossrec_peft.config import load_config
from crossrec_peft.data.batching import Collator
from crossrec_peft.model import build_model
from crossrec_peft.objectives import InBatchSoftmax, RetrievalOptions
from crossrec_peft.package import export_package, load_package

TEXTS = {"title": [f"{c} {n} number {i}" for i, (c, n) in enumerate(zip(["red", "blue", "green"] * 4, ["lamp", "desk", "pen", "mug"] * 3))],
         "category": ["home", "office", "office", "kitchen"] * 3}

# Which backbone parameters each method trains (predicate on the parameter name under the backbone).
TRAINS = {
    "lora": lambda n: "lora_" in n,
    "ia3": lambda n: "ia3_" in n,
    "frozen": lambda n: False,
    "full": lambda n: True,
}
BACKBONES = ["tiny-bert", "minilm"]
CASES = [(m, b) for m in TRAINS for b in BACKBONES if not (b == "minilm" and m in ("full", "frozen"))]


def config(tiny_bert, method: str, backbone: str):
    name = f"hf:{tiny_bert}" if backbone == "tiny-bert" else "minilm"
    overrides = [f"model.modalities.text.backbone.name={name}", "model.modalities.text.backbone.max_length=12",
                 "model.head_rank=4", f"model.modalities.text.method={method}"]
    return load_config(recipes.path("ecommerce"), overrides)


def batch_for(model):
    features = model.featurize(TEXTS)
    collate = Collator(features, model.collate_items)
    import numpy as np

    examples = [(np.array([0, 1, 2]), 3), (np.array([4, 5]), 6), (np.array([7]), 8), (np.array([9, 10]), 11)]
    return features, collate(examples)


@pytest.mark.parametrize("method, backbone", CASES)
def test_method_trains_only_its_parameters(tiny_bert, method, backbone):
    cfg = config(tiny_bert, method, backbone)
    model = build_model(cfg.model)
    names = {n: p for n, p in model.named_parameters()}
    prefix = "modalities.text.backbone."
    for name, p in names.items():
        if name.startswith(prefix):
            assert p.requires_grad == TRAINS[method](name), name
        else:
            assert p.requires_grad, name  # heads and temperature always train
    adapted = [n for n in names if n.startswith(prefix) and TRAINS[method](n)]
    if method in ("lora", "ia3"):
        # Guard against a peft or transformers change that silently adapts nothing: 2 layers x 2 (q, v) for
        # tiny BERT LoRA, 6 x 2 for MiniLM (A and B each); IA3 scales key and value and the inputs of both
        # "output.dense" projections (attention output and feed-forward output), as peft's BERT default does.
        layers = 2 if backbone == "tiny-bert" else 6
        per_layer = {"lora": 2 * 2, "ia3": 4}[method]
        assert len(adapted) == layers * per_layer, adapted

    _, batch = batch_for(model)
    before = {n: p.detach().clone() for n, p in names.items()}
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    loss, _ = InBatchSoftmax(RetrievalOptions())(model(batch), batch)
    loss.backward()
    trainable = [n for n, p in names.items() if p.requires_grad]
    assert all(names[n].grad is not None for n in trainable), "a trainable tensor got no gradient"
    optimizer.step()
    changed = {n for n, p in names.items() if not torch.equal(p, before[n])}
    assert changed <= set(trainable)
    backbone_changed = [n for n in changed if n.startswith(prefix)]
    assert bool(backbone_changed) == (method != "frozen")


@pytest.mark.parametrize("method, backbone", CASES)
def test_export_then_reload_gives_identical_outputs(tiny_bert, tmp_path, method, backbone):
    cfg = config(tiny_bert, method, backbone)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    features, batch = batch_for(model)
    with torch.no_grad():  # move every trainable tensor off its initial value
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    model.eval()
    package = export_package(model, cfg, tmp_path / "pkg")
    reloaded, manifest = load_package(package)
    assert manifest["modalities"]["text"]["method"]["name"] == method
    with torch.no_grad():
        a, b = model(batch), reloaded(batch)
    assert torch.equal(a["users"], b["users"]) and torch.equal(a["items"], b["items"])
    assert torch.equal(a["logit_scale"], b["logit_scale"])
