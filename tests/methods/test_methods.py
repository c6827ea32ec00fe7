"""The (method x backbone x quantize) table: what trains, that a step changes exactly that and nothing else,
and export -> reload gives identical outputs. Backbones: tiny random BERT, the bundled MiniLM, and the tiny
open_clip image and text towers; quantized cases through bitsandbytes on CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from crossrec_peft import recipes
from crossrec_peft.backbones.base import FeatureContext
from crossrec_peft.config import load_config
from crossrec_peft.data.batching import Collator
from crossrec_peft.model import build_model
from crossrec_peft.objectives import InBatchSoftmax, RetrievalOptions
from crossrec_peft.package import export_package, load_package

N = 12
ITEMS = {
    "title": [f"{c} {n} number {i}" for i, (c, n) in enumerate(zip(["red", "blue", "green"] * 4, ["lamp", "desk", "pen", "mug"] * 3))],
    "category": ["home", "office", "office", "kitchen"] * 3,
    "image": [f"img/{i}.png" for i in range(N)],
}

# Which backbone parameters each method trains (predicate on the parameter name under the backbone).
TRAINS = {
    "lora": lambda n: "lora_" in n,
    "ia3": lambda n: "ia3_" in n,
    "frozen": lambda n: False,
    "full": lambda n: True,
    "bottleneck-houlsby": lambda n: ".adapter." in n,
    "bottleneck-pfeiffer": lambda n: ".adapter." in n,
}
# Backbone -> (modality fields, backbone config, layers, number of parameter tensors each method adapts).
# The counts guard against a library change that silently adapts nothing:
#   BERT LoRA: query and value, A and B each (4 per layer); IA3: key, value and both "output.dense" (4).
#   open_clip LoRA: attn (in_proj A, B) + attn's out_proj (A, B) + c_fc + c_proj (8 per block); IA3: c_fc, c_proj (2).
#   Bottleneck: down and up, weight and bias each (4 per adapter): Houlsby 2 adapters a layer, Pfeiffer 1.
BACKBONES = {
    "tiny-bert": (["title", "category"], lambda tiny: {"name": f"hf:{tiny}", "max_length": 12}, 2, {"lora": 4, "ia3": 4}),
    "minilm": (["title", "category"], lambda tiny: {"name": "minilm", "max_length": 12}, 6, {"lora": 4, "ia3": 4}),
    "clip-image": (["image"], lambda tiny: {"name": "openclip:crossrec-tiny-vit", "tower": "image"}, 2, {"lora": 8, "ia3": 2}),
    "clip-text": (["title"], lambda tiny: {"name": "openclip:crossrec-tiny-vit", "tower": "text"}, 2, {"lora": 8, "ia3": 2}),
}
BOTTLENECK_ADAPTERS = {"bottleneck-houlsby": 2, "bottleneck-pfeiffer": 1}


def cases():
    out = []
    for backbone in BACKBONES:
        for method in TRAINS:
            if backbone == "minilm" and method in ("full", "frozen"):
                continue  # covered on the tiny models; MiniLM cases exist for the real architecture's counts
            out.append(pytest.param(method, backbone, "none", id=f"{method}-{backbone}"))
    for backbone in ("tiny-bert", "clip-image"):
        for quantize in ("int8", "nf4"):
            for method in ("lora", "ia3", "bottleneck-houlsby", "frozen"):  # full fine-tuning of frozen int weights: no
                out.append(pytest.param(method, backbone, quantize, id=f"{method}-{backbone}-{quantize}"))
    return out


CASES = cases()


def method_name(method: str) -> str:
    return method.split("-")[0]


def config(tiny_bert, method: str, backbone: str, quantize: str = "none"):
    fields, make_backbone, _, _ = BACKBONES[backbone]
    spec = make_backbone(tiny_bert)
    if quantize != "none":
        spec["quantize"] = quantize
    method_spec = {"name": method_name(method)}
    if method.startswith("bottleneck"):
        method_spec.update(kind=method.split("-")[1], size=8)
    raw = OmegaConf.to_container(load_config(recipes.path("ecommerce"), ["model.head_rank=4"]))
    raw["model"]["modalities"] = {"m": {"fields": fields, "backbone": spec, "method": method_spec}}
    raw["model"]["fusion"] = {"name": "mean"}
    return load_config(raw)


def batch_for(model, root):
    features = model.featurize(ITEMS, FeatureContext(item_ids=[str(i) for i in range(N)], root=root))
    windows = [np.array([0, 1, 2, 3]), np.array([4, 5, 6]), np.array([7, 8]), np.array([9, 10, 11])]
    return features, Collator(features, model.collate_items)(windows)


@pytest.mark.parametrize("method, backbone, quantize", CASES)
def test_method_trains_only_its_parameters(tiny_bert, image_root, method, backbone, quantize):
    model = build_model(config(tiny_bert, method, backbone, quantize).model)
    names = {n: p for n, p in model.named_parameters()}
    prefix = "modalities.m.backbone."
    for name, p in names.items():
        if name.startswith(prefix):
            assert p.requires_grad == TRAINS[method](name), name
        else:
            assert p.requires_grad, name  # heads and temperature always train
    adapted = [n for n in names if n.startswith(prefix) and TRAINS[method](n)]
    _, _, layers, per_layer = BACKBONES[backbone]
    if method in per_layer:
        assert len(adapted) == layers * per_layer[method], adapted
    if method in BOTTLENECK_ADAPTERS:
        assert len(model.modalities["m"].method.adapted) == layers * BOTTLENECK_ADAPTERS[method]
        assert len(adapted) == layers * BOTTLENECK_ADAPTERS[method] * 4, adapted

    _, batch = batch_for(model, image_root)
    before = {n: p.detach().clone() for n, p in names.items()}
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    loss, _ = InBatchSoftmax(RetrievalOptions())(model(batch), batch)
    loss.backward()
    trainable = [n for n, p in names.items() if p.requires_grad]
    assert all(names[n].grad is not None for n in trainable), [n for n in trainable if names[n].grad is None]
    optimizer.step()
    changed = {n for n, p in names.items() if not torch.equal(p, before[n])}
    assert changed <= set(trainable)
    backbone_changed = [n for n in changed if n.startswith(prefix)]
    assert bool(backbone_changed) == (method != "frozen")


@pytest.mark.parametrize("method, backbone, quantize", CASES)
def test_export_then_reload_gives_identical_outputs(tiny_bert, image_root, tmp_path, method, backbone, quantize):
    cfg = config(tiny_bert, method, backbone, quantize)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    _, batch = batch_for(model, image_root)
    with torch.no_grad():  # move every trainable tensor off its initial value
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    model.eval()
    package = export_package(model, cfg, tmp_path / "pkg")
    reloaded, manifest = load_package(package)
    assert manifest["modalities"]["m"]["method"]["name"] == method_name(method)
    if method.startswith("bottleneck"):  # the adapters were rebuilt on the fresh backbone, not dropped
        assert reloaded.modalities["m"].method.adapted == model.modalities["m"].method.adapted
    with torch.no_grad():
        a, b = model(batch), reloaded(batch)
    assert torch.equal(a["users"], b["users"]) and torch.equal(a["items"], b["items"])
    assert torch.equal(a["logit_scale"], b["logit_scale"])
