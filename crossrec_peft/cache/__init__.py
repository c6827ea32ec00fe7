"""The layer-state cache: a frozen backbone runs once per item, and cached methods (`frozen`, `side`,
`top`) train and evaluate from what it kept (docs/methods.md, "Cached methods")."""

from .build import CacheSettings, cached_rows, default_cache_root, describe, layer_root
from .layers import Keep, Output, Pooled, Tokens
from .store import FORMAT_VERSION, CachedRows, MemoryRows, ShardStore

__all__ = [
    "CacheSettings", "cached_rows", "default_cache_root", "describe", "layer_root",
    "Keep", "Output", "Pooled", "Tokens", "FORMAT_VERSION", "CachedRows", "MemoryRows", "ShardStore",
]
