"""`top`: the bottom L-k layers frozen and cached, the top k layers tuned (after MicroLens, Ni et al., 2023).

The layer cache keeps the token states entering layer L-k (and their mask); each step runs only the top k
layers on them, with the same block calls the backbone's own forward makes, so with equal weights the
result equals the uncached forward (tests/methods/test_top.py checks 1e-5). The top layers train fully
(`tune: full`, their weights exported in crossrec_weights.safetensors) or with LoRA on them only
(`tune: lora`, a peft package whose LoraConfig has layers_to_transform = the top k layers).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Mapping, Optional

import torch
from torch import nn

from ..cache import Keep, Tokens
from ..cache.layers import needs
from ..errors import ConfigError, PackageError
from ..registry import methods
from .base import Storage
from .cached import PREFIX, CachedMethod
from .peft_methods import PeftMethod

if TYPE_CHECKING:
    from ..model.routing import SharedBackbone

TUNES = ("full", "lora")


@dataclass
class TopOptions:
    k: int = 2  # how many of the top layers train
    tune: str = "lora"  # full | lora
    # LoRA settings (tune: lora), as in the lora method.
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: Optional[List[str]] = None  # null: the architecture's defaults

    def check(self) -> str | None:
        if self.k < 1:
            return f"k must be at least 1, got {self.k}."
        if self.tune not in TUNES:
            return f"tune must be one of {', '.join(TUNES)}, got '{self.tune}'."
        if self.r <= 0:
            return f"r must be positive, got {self.r}."
        return None


@methods.register("top", options=TopOptions)
class Top(CachedMethod):
    """Cached lower layers, top k layers tuned fully or with LoRA: each step runs only k layers."""

    def __init__(self, options: Any = None):
        super().__init__(options if options is not None else TopOptions())

    @property
    def storage(self) -> Storage:  # type: ignore[override]
        return Storage.PEFT if self.options.tune == "lora" else Storage.WEIGHTS

    def exported_state(self, backbone: nn.Module) -> dict[str, torch.Tensor]:
        return {} if self.options.tune == "lora" else super().exported_state(backbone)

    def save(self, backbone: nn.Module, directory: Path) -> None:
        if self.options.tune == "lora":  # peft's files, as for `lora`
            PeftMethod.save(self, backbone, directory)  # type: ignore[arg-type]

    def load_files(self, backbone: nn.Module, directory: Path) -> None:
        if self.options.tune == "lora":
            PeftMethod.load_files(self, backbone, directory)  # type: ignore[arg-type]

    def share(self, shared: "SharedBackbone", domain: str, directory: Path, state: Mapping[str, torch.Tensor]) -> None:
        """`tune: lora`: a named peft adapter of the shared backbone, as `lora` (the uncached forward is exact).
        `tune: full` never shares (own_backbone_reason)."""
        if state:
            raise PackageError(f"{directory}: top with LoRA keeps its weights in peft's files, but the package has backbone tensors {', '.join(list(state)[:3])}.")
        shared.add_named_peft(domain, directory)

    def start(self, backbone: nn.Module) -> int:
        needs(backbone, "top", "tokens_entering", "forward_from", "token_count")
        layers = len(backbone.layer_widths()) - 1
        if self.options.k > layers:
            raise ConfigError(f"method top: k={self.options.k}, but backbone '{backbone.model_id}' has {layers} layers.")
        return layers - self.options.k

    def _lora_config(self, backbone: nn.Module):
        from peft import LoraConfig

        o = self.options
        targets = PeftMethod._targets(self, backbone, o.target_modules, "lora_targets")  # type: ignore[arg-type]
        start = self.start(backbone)
        return LoraConfig(
            r=o.r, lora_alpha=o.alpha, lora_dropout=o.dropout, target_modules=targets,
            layers_to_transform=list(range(start, start + o.k)), layers_pattern="layer",
        )

    def attach(self, backbone: nn.Module) -> None:
        start = self.start(backbone)
        backbone.requires_grad_(False)
        if self.options.tune == "full":
            for block in backbone._blocks()[start:]:
                block.requires_grad_(True)
            return
        from peft import get_peft_model

        try:
            backbone.model = get_peft_model(backbone.model, self._lora_config(backbone))
        except ValueError as exc:
            raise ConfigError(f"Cannot attach top (LoRA) to '{backbone.model_id}': {exc}") from None

    def load(self, backbone: nn.Module, directory: Path, *, trainable: bool = False) -> None:
        if self.options.tune == "full":
            # The top layers' weights are in crossrec_weights.safetensors; the loader freezes them after.
            self.attach(backbone)
            return
        from peft import PeftModel

        self.start(backbone)
        backbone.model = PeftModel.from_pretrained(backbone.model, str(directory), is_trainable=trainable)

    def keep(self, backbone: nn.Module) -> Keep:
        return Tokens(self.start(backbone))

    def uses_cache(self, context: Any) -> bool:
        # LoRA on the top layers is an ordinary peft adapter whose uncached forward is exact: without a cache
        # directory (a Recommender encoding request items) it runs as a LoRA domain on a shared backbone.
        return self.options.tune == "full" or getattr(context, "layer_cache", None) is not None

    def own_backbone_reason(self) -> str | None:
        if self.options.tune == "full":
            return "top with tune: full changes the top layers' weights themselves"
        return None

    def encode(self, backbone: nn.Module, module: nn.Module | None, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return backbone.forward_from(self.start(backbone), inputs[PREFIX + "tokens"], inputs[PREFIX + "mask"])
