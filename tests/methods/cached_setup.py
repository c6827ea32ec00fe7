"""A one-modality model on the tiny BERT with a given method, its catalog read through a layer cache in
tmp_path, and a training batch: what the side and top tests share."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from crossrec_peft import recipes
from crossrec_peft.backbones.base import FeatureContext
from crossrec_peft.cache import CacheSettings
from crossrec_peft.config import load_config
from crossrec_peft.data.batching import Collator
from crossrec_peft.model import build_model

N = 12
ITEMS = {
    "title": [f"{c} {n} number {i}" for i, (c, n) in enumerate(zip(["red", "blue", "green"] * 4, ["lamp", "desk", "pen", "mug"] * 3))],
    "category": ["home", "office", "office", "kitchen"] * 3,
}
WINDOWS = [np.array([0, 1, 2, 3]), np.array([4, 5, 6]), np.array([7, 8]), np.array([9, 10, 11])]


def config(tiny_bert: Path, method: dict):
    raw = OmegaConf.to_container(load_config(recipes.path("ecommerce"), ["model.head_rank=4"]))
    raw["model"]["modalities"] = {
        "m": {"fields": ["title", "category"], "backbone": {"name": f"hf:{tiny_bert}", "max_length": 12}, "method": dict(method)}
    }
    raw["model"]["fusion"] = {"name": "mean"}
    return load_config(raw)


def context(cache: Path | None, dtype: str = "float16") -> FeatureContext:
    settings = CacheSettings(root=cache, dtype=dtype, progress=False) if cache is not None else None
    return FeatureContext(item_ids=[str(i) for i in range(N)], layer_cache=settings)


def model_and_batch(tiny_bert: Path, method: dict, cache: Path | None, dtype: str = "float16"):
    torch.manual_seed(0)
    model = build_model(config(tiny_bert, method).model)
    features = model.featurize(ITEMS, context(cache, dtype))
    return model, features, Collator(features, model.collate_items)(WINDOWS)


def raw_embeddings(model, modality: str = "m") -> torch.Tensor:
    """The uncached forward: the backbone (with whatever the method put in it) on the raw inputs."""
    enc = model.modalities[modality]
    raw = enc.backbone.featurize([ITEMS[f] for f in enc.fields], FeatureContext(item_ids=[str(i) for i in range(N)]))
    with torch.no_grad():
        return enc.backbone(**enc.backbone.collate(raw, torch.arange(N)))


def count_calls(modules) -> list[int]:
    """A counter bumped by every forward call of any of `modules`."""
    calls = [0]
    for m in modules:
        m.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls
