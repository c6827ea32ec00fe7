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
    "side": {"name": "side", "layers": "all", "bottleneck": 8, "gate": "vector"},
    "top-lora": {"name": "top", "k": 1, "tune": "lora", "r": 4},
    "top-full": {"name": "top", "k": 1, "tune": "full"},
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
                 scale: float = 0.2, max_length: int = 16, hybrid=None) -> Path:
    from crossrec_peft.model import build_model
    from crossrec_peft.package import export_package

    cfg = text_config(tiny_bert, domain, method, data=data, max_length=max_length)
    torch.manual_seed(seed)
    model = perturb(build_model(cfg.model), scale)
    model.eval()
    summary = {"source": str(data)} if data else {}
    return export_package(model, cfg, directory / domain, data_summary=summary, hybrid=hybrid)


def hybrid_choice(num_items: int, weight: float, *, seed: int = 0, bought: int | None = None, borrow: int = 0,
                  borrow_weight: float = 0.0, decay: float = 1.0):
    """A HybridChoice as a run would make it (crossrec_peft/hybrid.py): neighbours fitted on random sequences
    over the catalog items i0 .. i{bought-1} (all by default), 4 per item, with `weight` as validation's pick,
    and the items never bought borrowing `borrow_weight` x their `borrow` nearest items' term, the history items
    weighted by recency `decay`."""
    import numpy as np

    from crossrec_peft.hybrid import HybridChoice, Neighbours

    rng = np.random.default_rng(seed)
    sequences = [rng.integers(0, bought or num_items, size=4) for _ in range(30)]
    neighbours = Neighbours.fit(sequences, [f"i{i}" for i in range(num_items)], 4)
    choice = HybridChoice(neighbours, weight, {0.0: {"ndcg@10": 0.1}, weight: {"ndcg@10": 0.2}})
    if borrow:
        choice.borrow, choice.borrow_weight = borrow, borrow_weight
        choice.borrow_validation = {0.0: {"ndcg@10": 0.2}, borrow_weight: {"ndcg@10": 0.3}}
    if decay < 1:
        choice.decay, choice.decay_validation = decay, {1.0: choice.chosen, decay: {"ndcg@10": 0.4}}
    return choice


def with_borrowing(own, vectors, scored, k: int, weight: float):
    """The hybrid's term with borrowing written out item by item (the reference for hybrid.Borrowing): every
    item not `scored` adds weight x the term of its k nearest scored items by cosine, shared in proportion to
    their positive similarities."""
    import torch

    unit = torch.nn.functional.normalize(vectors.float(), dim=-1)
    pool = scored.nonzero().view(-1)
    out = own.clone()
    for j in (~scored).nonzero().view(-1).tolist():
        top = torch.topk(unit[pool] @ unit[j], min(k, len(pool)))
        share = top.values.clamp(min=0)
        share = share / share.sum() if share.sum() > 0 else share
        out[:, j] += weight * (own[:, pool[top.indices]] * share).sum(1)
    return out


def write_manifest(directory: Path, manifest: dict) -> None:
    """Write an edited crossrec.json as an export would (its package_sha256 recomputed): a consistent
    package whose content differs, for tests of the checks behind the manifest's own hash."""
    import json

    from crossrec_peft.manifest import canonical_sha256
    from crossrec_peft.package import MANIFEST

    if "package_sha256" in manifest:
        manifest["package_sha256"] = canonical_sha256(manifest)
    (Path(directory) / MANIFEST).write_text(json.dumps(manifest))


def recommender_with(packages: dict):
    """One Recommender with every package of `packages` loaded: the mixed-domain setup of the routing tests."""
    from crossrec_peft.recommender import Recommender

    rec = Recommender(device="cpu")
    for package in packages.values():
        rec.load_adapter(package)
    return rec


_ALONE: dict = {}


@torch.no_grad()
def alone_scores(package: Path, data: Path, history: list[str], candidates: list[str], fields=("title", "category")) -> torch.Tensor:
    """Scores from a domain's package loaded on its own, through the model's own towers: the reference every
    row of a mixed-domain batch must equal."""
    from crossrec_peft.backbones.base import FeatureContext
    from crossrec_peft.index import load_catalog
    from crossrec_peft.package import load_package

    if package not in _ALONE:
        _ALONE[package] = load_package(package)[0]
    model = _ALONE[package]
    catalog = load_catalog(data)
    ids = history + candidates
    features = model.featurize(catalog.columns(list(fields), catalog.lookup(ids)), FeatureContext(item_ids=ids, root=data))
    content = model.encode_content(model.collate_items(features, torch.arange(len(ids))))
    user = model.user_vectors(content[: len(history)].unsqueeze(0), torch.ones(1, len(history), dtype=torch.bool))[0]
    return model.item_vectors(content[len(history) :]) @ user
