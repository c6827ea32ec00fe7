"""The interface every PEFT method implements.

A method is attached to one modality's backbone and decides which of its parameters train. Methods built on
peft (`peft_based = True`) keep their weights in peft's own files (adapter_config.json +
adapter_model.safetensors); every other trainable parameter is exported by the package writer into
crossrec_weights.safetensors, so a method that only flips `requires_grad` or inserts modules needs no export
code of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn


class Method:
    peft_based = False

    def __init__(self, options: Any = None):
        self.options = options

    def attach(self, backbone: nn.Module) -> None:
        """Make the backbone trainable the way this method trains it (in place)."""
        raise NotImplementedError

    def load(self, backbone: nn.Module, directory: Path, *, trainable: bool = False) -> None:
        """Rebuild the method's structure on a fresh backbone before exported weights are loaded into it.

        Non-peft methods rebuild by attaching; their weights come from crossrec_weights.safetensors.
        """
        self.attach(backbone)


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = total = 0
    for p in module.parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total
