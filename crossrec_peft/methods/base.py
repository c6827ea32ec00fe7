"""The contract every PEFT method implements: everything the core needs to train, export, load and serve it.

A method is attached to one modality's backbone and decides which of its parameters train. The core never
asks a method's name; it asks the method:

- `attach(backbone)`: make the backbone trainable the way this method trains it (in place), for training.
- `load(backbone, directory, trainable=...)`: rebuild the method's structure on a fresh backbone before its
  exported weights are assigned (default: attach again; peft methods read their own files).
- `storage` and `exported_state(backbone)`: where its weights go in a package and which tensors they are.
  `Storage.PEFT`: peft's files (adapter_config.json + adapter_model.safetensors) written by `save`;
  `Storage.WEIGHTS`: the backbone's trained tensors in crossrec_weights.safetensors;
  `Storage.TOWER`: the whole backbone in <modality>_tower.safetensors (not an adapter: sized apart).
- `own_backbone_reason()` and `share(shared, domain, directory, state)`: how this domain's weights sit on a
  `SharedBackbone` (model/routing.py) that other domains use too, mixed-domain batches included. A method
  that cannot share returns the reason, and the `Recommender` gives its domain its own backbone copy and says
  why. The default `share` is generic: the domain gets a *view* of the shared backbone (its own module tree
  over the same frozen tensors), the method loads onto the view with `load`, and the domain's rows run
  through the view. Methods whose layers can route rows inside one pass (LoRA through peft's adapter names,
  IA3 and bottleneck through routed hooks) override `share` with that.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

import torch
from torch import nn

if TYPE_CHECKING:
    from ..model.routing import SharedBackbone


class Storage(str, enum.Enum):
    """Where a method's trained weights live in an adapter package (docs/package-format.md)."""

    PEFT = "peft"  # peft's own files in the modality's peft directory
    WEIGHTS = "weights"  # trained backbone tensors in crossrec_weights.safetensors
    TOWER = "tower"  # the whole backbone, in <modality>_tower.safetensors


class Method(ABC):
    storage: ClassVar[Storage] = Storage.WEIGHTS

    def __init__(self, options: Any = None):
        self.options = options

    @property
    def name(self) -> str:
        """The registered name (for messages only; the core never switches on it)."""
        return getattr(type(self), "registered_name", type(self).__name__)

    @abstractmethod
    def attach(self, backbone: nn.Module) -> None:
        """Make the backbone trainable the way this method trains it (in place)."""

    def load(self, backbone: nn.Module, directory: Path, *, trainable: bool = False) -> None:
        """Rebuild the method's structure on a fresh backbone before its exported weights are assigned.

        Methods stored as WEIGHTS or TOWER rebuild by attaching; their tensors come from the package's
        safetensors files through `exported_state`'s names."""
        self.attach(backbone)

    def exported_state(self, backbone: nn.Module) -> dict[str, torch.Tensor]:
        """The backbone tensors this method exports into the package's own files (names relative to the
        backbone): every trainable one. A PEFT-stored method exports none here; `save` writes peft's files."""
        return {name: p for name, p in backbone.named_parameters() if p.requires_grad}

    def save(self, backbone: nn.Module, directory: Path) -> None:
        """Write files of the method's own format into `directory` (only `Storage.PEFT` methods have any)."""

    def load_files(self, backbone: nn.Module, directory: Path) -> None:
        """Copy the weights of the method's own files in `directory` into an attached backbone (continued
        tuning from a package). Methods without own files have nothing to do: their tensors are assigned
        with the package's weights."""

    def own_backbone_reason(self) -> str | None:
        """Why a domain tuned with this method cannot share its backbone with other domains; None if it can."""
        return None

    def share(self, shared: "SharedBackbone", domain: str, directory: Path, state: Mapping[str, torch.Tensor]) -> None:
        """Put `domain`'s weights onto `shared` so that its rows are encoded with them and every other
        domain's rows are not. `directory` holds the method's own files (peft's), `state` its exported
        tensors (names relative to the backbone). Default: a view of the shared backbone (same frozen
        tensors, own module tree) that this method loads onto; the domain's rows run through the view."""
        shared.add_view(domain, self, directory, state)


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = total = 0
    for p in module.parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total


def transformer(backbone: nn.Module) -> nn.Module:
    """The transformer inside a backbone (what peft wraps, and what adapter paths are relative to): its
    `base_model` (the transformer without a peft wrapper) when it has one, else its `model`, else itself."""
    root = getattr(backbone, "base_model", None)
    if root is None:
        root = getattr(backbone, "model", backbone)
    return root


def describe_backbone(backbone: nn.Module) -> str:
    return f"backbone '{getattr(backbone, 'model_id', type(backbone).__name__)}' (model type '{getattr(backbone, 'model_type', '?')}')"
