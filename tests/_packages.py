"""Adapter packages for tests, made in a second: a text-only model on the tiny BERT, its trainable tensors
randomly perturbed (so that every domain's adapter really changes the scores), exported like a run does."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf

METHODS = {
    "lora": {"name": "lora", "r": 4},
    "lora8": {"name": "lora", "r": 8, "alpha": 8},
    "ia3": {"name": "ia3"},
    "bottleneck": {"name": "bottleneck", "kind": "houlsby", "size": 8},
    "frozen": {"name": "frozen"},
    "lora_bias": {"name": "lora", "r": 4, "bias": "all"},  # trains the base layers' biases: cannot share
}


def perturb(model: torch.nn.Module, scale: float) -> torch.nn.Module:
    """Move every trainable tensor off its initial value (LoRA's B starts at zero, so an untrained adapter
    would change nothing), with the global torch seed."""
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(scale * torch.randn_like(p))
    return model


def text_config(tiny_bert: Path, domain: str, method: str, *, data: Path | None = None, fields=("title", "category"),
                max_length: int = 16):
    from crossrec_peft import recipes
    from crossrec_peft.config import load_config

    raw = OmegaConf.to_container(load_config(recipes.path("ecommerce")))
    raw["name"] = domain
    raw["domain"] = "ecommerce"
    raw["data"]["path"] = str(data) if data else None
    raw["model"]["modalities"] = {
        "text": {
            "fields": list(fields),
            "backbone": {"name": f"hf:{tiny_bert}", "max_length": max_length},
            "method": METHODS[method],
        }
    }
    raw["model"]["fusion"] = {"name": "mean"}
    raw["model"]["head_rank"] = 4
    cfg = load_config(raw)
    cfg.domain = domain  # the package's domain name (any string; the data generator is not used)
    return cfg


def make_package(tiny_bert: Path, directory: Path, domain: str, method: str, *, seed: int = 0, data: Path | None = None,
                 scale: float = 0.2, max_length: int = 16) -> Path:
    from crossrec_peft.model import build_model
    from crossrec_peft.package import export_package

    cfg = text_config(tiny_bert, domain, method, data=data, max_length=max_length)
    torch.manual_seed(seed)
    model = perturb(build_model(cfg.model), scale)
    model.eval()
    summary = {"source": str(data)} if data else {}
    return export_package(model, cfg, directory / domain, data_summary=summary)
