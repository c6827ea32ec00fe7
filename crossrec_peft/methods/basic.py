"""The two reference points every PEFT method is compared with: no tuning and full fine-tuning."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch
from torch import nn

from ..cache import Keep, Output
from ..errors import PackageError
from ..registry import methods
from .base import Method, Storage
from .cached import PREFIX, CachedMethod

if TYPE_CHECKING:
    from ..model.routing import SharedBackbone


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

    def share(self, shared: "SharedBackbone", domain: str, directory: Path, state: Mapping[str, torch.Tensor]) -> None:
        """Nothing to attach: the domain's rows run through the bare backbone."""
        if state:
            raise PackageError(f"{directory}: method 'frozen' trains no backbone tensor, but the package has {', '.join(list(state)[:3])}.")


@methods.register("full")
class Full(Method):
    """Full fine-tuning of every backbone weight (the upper reference; exports the whole backbone)."""

    storage = Storage.TOWER

    def own_backbone_reason(self) -> str | None:
        return "full fine-tuning trains every backbone weight, so the tuned tower is the domain's own"

    def attach(self, backbone: nn.Module) -> None:
        backbone.requires_grad_(True)
