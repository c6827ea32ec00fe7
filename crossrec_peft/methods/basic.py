"""The two reference points every PEFT method is compared with: no tuning and full fine-tuning."""

from __future__ import annotations

from torch import nn

from ..registry import methods
from .base import Method


@methods.register("frozen")
class Frozen(Method):
    """No tuning of the backbone: only the towers' heads train (the frozen baseline)."""

    def attach(self, backbone: nn.Module) -> None:
        backbone.requires_grad_(False)


@methods.register("full")
class Full(Method):
    """Full fine-tuning of every backbone weight (the upper reference; exports the whole backbone)."""

    def attach(self, backbone: nn.Module) -> None:
        backbone.requires_grad_(True)
