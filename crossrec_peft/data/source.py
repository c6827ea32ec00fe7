"""Where a run's data comes from: a user's directory in the standard layout, or a cached demo catalog."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig

from ..fsutil import atomic_directory
from .domains import demo_directory, get_domain
from .layout import RecData, load_layout


def cache_root(configured: str | None) -> Path:
    if configured:
        return Path(configured).expanduser()
    env = os.environ.get("CROSSREC_PEFT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "crossrec-peft"


def ensure_demo(cfg: DictConfig) -> Path:
    """The domain's demo catalog for these sizes and seed, generated once and reused."""
    domain = get_domain(cfg.domain)
    target = demo_directory(
        domain, cache_root(cfg.data.cache_dir) / "demo",
        num_items=cfg.data.num_items, num_users=cfg.data.num_users, seed=cfg.seed,
    )
    if not (target / "interactions.parquet").is_file():
        # Generated beside the target and renamed, so an interrupted run never leaves half a catalog.
        with atomic_directory(target) as tmp:
            domain.generate(tmp, num_items=cfg.data.num_items, num_users=cfg.data.num_users, seed=cfg.seed)
    return target


def model_fields(cfg: DictConfig) -> list[str]:
    """Every item field some modality reads, in config order."""
    fields: list[str] = []
    for mod in cfg.model.modalities.values():
        fields.extend(f for f in mod.fields if f not in fields)
    return fields


def load_data(cfg: DictConfig) -> RecData:
    directory = Path(cfg.data.path).expanduser() if cfg.data.path else ensure_demo(cfg)
    return load_layout(directory, model_fields(cfg), min_interactions=cfg.data.min_interactions)
