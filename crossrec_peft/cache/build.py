"""Fill a layer cache: run the frozen backbone once over the items it does not hold yet, in batches, one
shard at a time, with a progress bar (items/s); then hand out the catalog's rows, memory-mapped.

Shards are cut from the ordered list of missing items, so a build resumed after a kill encodes the same
batches as an uninterrupted one and gives identical rows (tests/cache/test_build.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .keys import backbone_settings, directory_name, item_keys
from .layers import Keep
from .store import FORMAT_VERSION, CachedRows, MemoryRows, ShardStore

log = logging.getLogger(__name__)
SHARD_ITEMS = 2048


@dataclass
class CacheSettings:
    """Where and how layer states are cached; `root` None keeps them in memory for this process only."""

    root: Path | None
    dtype: str = "float16"
    batch_size: int = 64
    progress: bool = True
    # Called after each completed shard with (shards done, items done): tests stop a build midway with it.
    on_shard: Callable[[int, int], None] | None = None


def layer_root(cache_root: Path) -> Path:
    return Path(cache_root) / "layers"


def store_for(backbone: Any, keep: Keep, features: Mapping[str, Any], settings: CacheSettings) -> ShardStore:
    assert settings.root is not None
    fields = keep.fields(backbone, features, settings.dtype)
    meta = {
        "format": FORMAT_VERSION,
        "backbone": backbone_settings(backbone),
        "keep": keep.describe(),
        "dtype": settings.dtype,
    }
    return ShardStore(layer_root(settings.root) / directory_name(backbone, keep.name), meta, fields)


@torch.no_grad()
def _encode(backbone: Any, keep: Keep, features: Mapping[str, Any], index: torch.Tensor, fields: dict) -> dict[str, np.ndarray]:
    """Kept values of catalog rows `index` (absent items: zeros and present=0), as numpy rows."""
    device = _device(backbone)
    inputs = dict(backbone.collate(features, index))
    present = inputs.pop("present", None)
    present = torch.ones(len(index), dtype=torch.bool) if present is None else present.bool().cpu()
    out = {name: np.zeros((len(index), *shape), dtype=dtype) for name, (shape, dtype) in fields.items()}
    out["present"][:] = present.numpy().astype("uint8")
    if bool(present.any()):
        rows = {k: (v[present.to(v.device)] if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
        rows = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in rows.items()}
        values = keep.encode(backbone, rows)
        where = present.numpy()
        for name, value in values.items():
            shape = fields[name][0]
            value = value.detach().float().cpu()
            if value.dim() >= 2 and len(shape) >= 1 and value.shape[1] < shape[0]:  # token states trimmed by collate
                pad = [0, 0] * (value.dim() - 2) + [0, shape[0] - value.shape[1]]
                value = F.pad(value, pad)
            out[name][where] = value.numpy().astype(fields[name][1])
    return out


def _device(backbone: Any) -> torch.device:
    param = next(iter(backbone.parameters()), None)
    return param.device if param is not None else torch.device("cpu")


def cached_rows(backbone: Any, keep: Keep, features: Mapping[str, Any], settings: CacheSettings, *, desc: str = "layer cache") -> dict[str, Any]:
    """field -> rows over the catalog (CachedRows from disk, or MemoryRows when settings.root is None)."""
    count = _count(features)
    modes = [(m, m.training) for m in backbone.modules()]  # restored as they were (a frozen inner model stays in eval)
    backbone.eval()
    try:
        if settings.root is None:
            fields = keep.fields(backbone, features, settings.dtype)
            parts = [
                _encode(backbone, keep, features, torch.arange(s, min(s + settings.batch_size, count)), fields)
                for s in range(0, count, settings.batch_size)
            ]
            return {name: MemoryRows(torch.from_numpy(np.concatenate([p[name] for p in parts]))) for name in fields}
        keys = item_keys(backbone, features, count)
        store = store_for(backbone, keep, features, settings)
        store.check_writable()
        store.open()
        store.check_writable()  # open() may have removed a cache built for other settings
        build(backbone, keep, features, keys, store, settings, desc=desc)
        located = store.locations()
        where = np.array([located[k] for k in keys], dtype=np.int64).reshape(count, 2)
        return {name: CachedRows(store, name, where) for name in store.fields}
    finally:
        for module, mode in modes:
            module.training = mode


def build(backbone: Any, keep: Keep, features: Mapping[str, Any], keys: list[str], store: ShardStore, settings: CacheSettings, *, desc: str) -> int:
    """Encode the items whose keys the store lacks; returns how many were encoded."""
    known = store.locations()
    first: dict[str, int] = {}
    for row, key in enumerate(keys):
        if key not in known and key not in first:
            first[key] = row
    if not first:
        return 0
    missing = list(first.items())
    # Items of similar length share a batch (longest first): a batch is padded to its longest item, so in catalog
    # order most batches of variable-length titles run at the longest width. Shards map keys to rows, so the
    # order items are stored in is free.
    lengths = getattr(backbone, "sequence_lengths", None)
    if callable(lengths):
        size = lengths(features).tolist()
        missing.sort(key=lambda key_row: -size[key_row[1]])
    needed = store.check_space(len(missing))
    # Keys are content hashes: items with equal content (two products with the same picture) share one entry.
    cached = sum(key in known for key in keys)
    others = [f"{cached} already cached"] if cached else []
    if len(keys) - cached - len(missing):
        others.append(f"{len(keys) - cached - len(missing)} share the content of another")
    log.warning(
        "layer cache %s: encoding %d of %d items (%.1f MiB on disk)%s", store.directory, len(missing), len(keys),
        needed / 2**20, f"; {', '.join(others)}" if others else "",
    )
    bar = tqdm(total=len(missing), desc=desc, unit="item", disable=not settings.progress, leave=False)
    done = 0
    try:
        for start in range(0, len(missing), SHARD_ITEMS):
            chunk = missing[start : start + SHARD_ITEMS]
            rows = [r for _, r in chunk]
            parts = []
            for b in range(0, len(rows), settings.batch_size):
                index = torch.tensor(rows[b : b + settings.batch_size], dtype=torch.long)
                parts.append(_encode(backbone, keep, features, index, store.fields))
                bar.update(len(index))
            store.append([k for k, _ in chunk], {name: np.concatenate([p[name] for p in parts]) for name in store.fields})
            done += len(chunk)
            if settings.on_shard is not None:
                settings.on_shard(len(store.shards), done)
    finally:
        bar.close()
    return done


def _count(features: Mapping[str, Any]) -> int:
    for value in features.values():
        if isinstance(value, (torch.Tensor, list, tuple)):
            return len(value)
    raise ValueError("featurized inputs hold no per-item values")


def default_cache_root(configured: str | None = None) -> Path:
    from ..data.source import cache_root

    return cache_root(configured)


def describe(root: Path) -> list[dict[str, Any]]:
    """One entry per directory under `root`/layers: its settings, items, shards and size (for `cache info`).
    `cache` says whether it is a layer cache at all (holds an index.json, the marker `ShardStore` writes);
    `problem` says why one cannot be read (no index.json, invalid JSON, an index of the wrong layout)."""
    import json

    from .store import INDEX, index_problem

    out = []
    base = layer_root(root)
    if not base.is_dir():
        return out
    for directory in sorted(p for p in base.iterdir() if p.is_dir()):
        index_path = directory / INDEX
        entry: dict[str, Any] = {"path": str(directory), "name": directory.name, "cache": index_path.is_file()}
        try:
            index = json.loads(index_path.read_text())
            problem = index_problem(index)
        except (OSError, ValueError) as exc:
            index, problem = None, ("no index.json, not a layer cache" if not entry["cache"] else f"unreadable index.json ({exc})")
        if problem:
            if entry["cache"] and not problem.startswith("unreadable"):
                problem = f"unreadable index.json ({problem})"
            entry.update(items=0, shards=0, bytes=_dir_bytes(directory), problem=problem)
            out.append(entry)
            continue
        shards = index.get("shards", [])
        settings = index.get("settings", {})
        backbone = settings.get("backbone") if isinstance(settings.get("backbone"), dict) else {}
        identity = backbone.get("identity") if isinstance(backbone.get("identity"), dict) else {}
        entry.update(
            format=index.get("format"),
            backbone=identity.get("id"),
            keep=settings.get("keep") if isinstance(settings.get("keep"), dict) else None,
            dtype=settings.get("dtype"),
            items=sum(len(s["items"]) for s in shards),
            shards=len(shards),
            bytes=_dir_bytes(directory),
        )
        out.append(entry)
    return out


def _dir_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
