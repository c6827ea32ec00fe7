"""The two reference points every PEFT method is compared with: no tuning and full fine-tuning."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import torch
from torch import nn

from ..errors import PackageError
from ..registry import methods
from .base import Method, Storage

if TYPE_CHECKING:
    from ..model.routing import SharedBackbone


@methods.register("frozen")
class Frozen(Method):
    """No tuning of the backbone: only the towers' heads train (the frozen baseline)."""

    def attach(self, backbone: nn.Module) -> None:
        backbone.requires_grad_(False)

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
