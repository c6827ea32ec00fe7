"""Methods that train from cached backbone states instead of running the frozen backbone every step.

A `CachedMethod` says what it keeps of the backbone's forward pass (`keep`: a `cache.Keep`), and the modality
encoder then reads those rows instead of raw inputs:

    featurize  raw inputs -> the layer cache (built once per item, crossrec_peft/cache) -> rows "cache.<field>"
    collate    the batch's rows (memory-mapped reads)
    encode     rows -> item embedding [B, D]: the cached output (`frozen`), a side network over the pooled
               layer states (`side`), the top k layers over the token states (`top`)

Nothing here knows a backbone kind: the cache goes through the backbone-level interface
(`backbones.base.LayeredBackbone`, `forward`, `identity`, `featurize`, `collate`).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from ..cache import CacheSettings, Keep, cached_rows
from .base import Method

PREFIX = "cache."


def is_cached(inputs: Mapping[str, Any]) -> bool:
    """Whether featurized or collated inputs are cache rows (rather than the backbone's raw inputs)."""
    return any(k.startswith(PREFIX) for k in inputs)


class CachedMethod(Method):
    """Base of methods that read the layer cache. Subclasses define `keep` and `encode`; `module` returns
    the trainable network that lives beside the backbone (None when the method trains backbone weights)."""

    def keep(self, backbone: nn.Module) -> Keep | None:
        """What to cache for this backbone; None: do not cache (the backbone runs as usual)."""
        raise NotImplementedError

    def module(self, backbone: nn.Module) -> nn.Module | None:
        return None

    def uses_cache(self, context: Any) -> bool:
        """Whether featurize reads the cache for this context (always, for methods that need the states)."""
        return True

    def cached_features(self, backbone: nn.Module, raw: dict[str, Any], context: Any, *, progress: bool = True) -> dict[str, Any]:
        keep = self.keep(backbone)
        if keep is None or not self.uses_cache(context):
            return raw
        settings = getattr(context, "layer_cache", None) or CacheSettings(root=None, progress=False)
        rows = cached_rows(backbone, keep, raw, settings, desc=f"layer cache ({getattr(backbone, 'modality', '')})")
        return {PREFIX + name: value for name, value in rows.items()}

    def collate(self, features: Mapping[str, Any], index: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {k: rows[index] for k, rows in features.items()}
        out["present"] = out.pop(PREFIX + "present").bool()
        mask = out.get(PREFIX + "mask")
        if mask is not None:  # token states: trim the padding no item of the batch uses
            mask = mask.long()
            width = max(int(mask.sum(dim=1).max()), 1)
            out[PREFIX + "mask"] = mask[:, :width]
            out[PREFIX + "tokens"] = out[PREFIX + "tokens"][:, :width]
        return out

    def encode(self, backbone: nn.Module, module: nn.Module | None, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Item embeddings [B, D] of present items from their cache rows."""
        raise NotImplementedError
