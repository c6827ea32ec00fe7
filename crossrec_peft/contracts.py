"""The interfaces of the pluggable components, in code: what the core calls on a backbone, an objective, a
fusion and a user encoder. (A PEFT method's contract is the `Method` ABC in methods/base.py.)

Each registry (registry.py) is created with its contract; a plugin is checked against it when it registers
(methods a class lacks) and when it is created (every member, attributes set in ``__init__`` included), and
a missing member is a ConfigError naming it. The core then calls the members directly, without probing.
This module imports nothing of the package, so any module may import it.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

import torch


@runtime_checkable
class Backbone(Protocol):
    """A frozen encoder of one modality (docs/backbones.md). Methods may also read, when present: `model`
    (what peft wraps), `base_model`, `arch` (an ArchSpec of default targets), `adapter_width`, `quantized`,
    `model_id`, `model_type`."""

    modality: str  # "text", "image", "ids", ...
    hidden_size: int  # size of the vector `forward` returns per item
    pretrained_weights: bool  # False for towers trained from scratch: no zero-shot baseline from them

    def featurize(self, columns: Sequence[Sequence[Any]], context: Any) -> dict[str, Any]:
        """Model inputs for every catalog item (one column per field the modality reads)."""

    def collate(self, features: dict[str, Any], index: torch.Tensor) -> dict[str, torch.Tensor]:
        """The inputs of the items at `index` (may add a bool `present` for items lacking the modality)."""

    def identity(self) -> dict:
        """What a package records to check it is loaded onto the same backbone (id, revision, sha256, ...)."""

    def __call__(self, **inputs: torch.Tensor) -> torch.Tensor:
        """[B, hidden_size] for a collated batch."""


@runtime_checkable
class Objective(Protocol):
    """A training objective (docs/objectives.md); `objectives.base.Objective` implements every member."""

    task: str  # names the objective's heads and its entries in logs
    batch_needs: Any  # data.batching.BatchNeeds: what batches carry beyond the windows

    def prepare(self, model: torch.nn.Module, context: Any) -> None:
        """Check the data and add heads before training (ConfigError for data it cannot learn from)."""

    def held_out_metrics(self, model: torch.nn.Module, content: torch.Tensor, data: Any, split: Any, max_history: int) -> dict[str, Any]:
        """Metrics of what it predicts besides a ranking, on the test cases ({} when none)."""

    def __call__(self, outputs: dict, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """(loss, logged values) for one batch."""


@runtime_checkable
class Fusion(Protocol):
    """Combines the modalities' embeddings of an item (docs/fusion.md)."""

    out_dim: int

    def __call__(self, embeddings: Mapping[str, torch.Tensor], present: Mapping[str, torch.Tensor]) -> torch.Tensor: ...


@runtime_checkable
class UserEncoder(Protocol):
    """A history of item vectors -> one user vector (docs/user-encoders.md). It may also define
    `prefixes(history, mask)` to encode every prefix in one pass (training on every position)."""

    out_dim: int

    def __call__(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor: ...


def members(contract: type) -> list[str]:
    """The names a contract requires: its annotated attributes and its methods (``__call__`` included)."""
    names: list[str] = []
    for klass in reversed(contract.__mro__):
        if klass in (object, Protocol) or klass.__name__ in ("Generic", "Protocol"):
            continue
        for name in getattr(klass, "__annotations__", {}):
            if name not in names:
                names.append(name)
        for name, value in vars(klass).items():
            if callable(value) and (not name.startswith("_") or name == "__call__") and name not in names:
                names.append(name)
    return names


def missing(obj: Any, contract: type, *, methods_only: bool = False) -> list[str]:
    """Members of `contract` that `obj` (an instance, or a class when `methods_only`) lacks."""
    required = members(contract)
    if methods_only:
        required = [m for m in required if callable(getattr(contract, m, None))]
    return [m for m in required if not hasattr(obj, m)]
