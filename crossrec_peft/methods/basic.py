"""The two reference points every PEFT method is compared with: no tuning and full fine-tuning."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from ..cache import Keep, Output
from ..registry import methods
from .base import Method
from .cached import PREFIX, CachedMethod


@dataclass
class FrozenOptions:
    # Read the backbone's item embeddings from the layer cache (one backbone pass per item, ever) where the
    # run has one; false: run the frozen backbone on every batch, as a tuned method would.
    cache: bool = True


@methods.register("frozen", options=FrozenOptions)
class Frozen(CachedMethod):
    """No tuning of the backbone: only the towers' heads train (the frozen baseline)."""

    def __init__(self, options: Any = None):
        super().__init__(options if options is not None else FrozenOptions())

    def attach(self, backbone: nn.Module) -> None:
        backbone.requires_grad_(False)

    def keep(self, backbone: nn.Module) -> Keep | None:
        return Output() if self.options.cache else None

    def uses_cache(self, context: Any) -> bool:
        # Without a cache directory (a Recommender encoding request items) the backbone simply runs.
        return getattr(context, "layer_cache", None) is not None

    def encode(self, backbone: nn.Module, module: nn.Module | None, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return inputs[PREFIX + "output"]


@methods.register("full")
class Full(Method):
    """Full fine-tuning of every backbone weight (the upper reference; exports the whole backbone)."""

    def attach(self, backbone: nn.Module) -> None:
        backbone.requires_grad_(True)
