"""LoRA and IA3 through peft. Default target modules come from the backbone's ArchSpec table."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from torch import nn

from ..errors import ConfigError
from ..registry import methods
from .base import Method


class PeftMethod(Method):
    """Wraps the backbone's transformer in a peft.PeftModel; peft owns the adapter's files."""

    peft_based = True

    def peft_config(self, backbone: nn.Module):
        raise NotImplementedError

    def _targets(self, backbone: nn.Module, configured: Optional[List[str]], field: str) -> list[str]:
        if configured:
            return list(configured)
        arch = getattr(backbone, "arch", None)
        defaults = getattr(arch, field, None) if arch is not None else None
        if not defaults:
            raise ConfigError(
                f"No default target modules for backbone '{getattr(backbone, 'model_id', '?')}' "
                f"(model type '{getattr(backbone, 'model_type', '?')}'): set target_modules in the method's options."
            )
        return list(defaults)

    def attach(self, backbone: nn.Module) -> None:
        from peft import get_peft_model, prepare_model_for_kbit_training

        if getattr(backbone, "quantized", False) and hasattr(backbone.model, "is_loaded_in_8bit"):
            # peft's k-bit preparation for a quantized Hugging Face model: fp32 norms, frozen base.
            backbone.model = prepare_model_for_kbit_training(backbone.model, use_gradient_checkpointing=False)
        try:
            backbone.model = get_peft_model(backbone.model, self.peft_config(backbone))
        except ValueError as exc:  # peft's message when no module matches the targets
            raise ConfigError(f"Cannot attach {type(self).__name__} to '{backbone.model_id}': {exc}") from None

    def _layers(self, backbone: nn.Module, layers: Optional[List[int]]) -> dict:
        """peft's layers_to_transform/layers_pattern for the `layers` option (for a CNN: its stages), with
        the architecture's layers_pattern (the module-path component followed by the index)."""
        if layers is None:
            return {}
        pattern = getattr(getattr(backbone, "arch", None), "layers_pattern", None)
        return {"layers_to_transform": list(layers), **({"layers_pattern": pattern} if pattern else {})}

    def load(self, backbone: nn.Module, directory: Path, *, trainable: bool = False) -> None:
        from peft import PeftModel

        # peft loads adapters frozen unless asked; continued tuning asks.
        backbone.model = PeftModel.from_pretrained(backbone.model, str(directory), is_trainable=trainable)


@dataclass
class LoraOptions:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: Optional[List[str]] = None  # null: the backbone architecture's defaults
    bias: str = "none"
    # null: every layer. Otherwise the layer indices to adapt (for a timm CNN: stages, e.g. [5, 6], the last two).
    layers: Optional[List[int]] = None

    def check(self) -> str | None:
        if self.layers is not None and (not self.layers or any(i < 0 for i in self.layers)):
            return f"layers must be null (every layer) or a non-empty list of layer indices >= 0, got {self.layers}."
        if self.r <= 0:
            return f"r must be positive, got {self.r}."
        if not 0 <= self.dropout < 1:
            return f"dropout must be in [0, 1), got {self.dropout}."
        if self.bias not in ("none", "all", "lora_only"):
            return f"bias must be none, all or lora_only, got '{self.bias}'."
        return None


@methods.register("lora", options=LoraOptions)
class Lora(PeftMethod):
    """LoRA (Hu et al., 2021) through peft: low-rank updates of the attention projections (a CNN's 1x1 convs)."""

    def peft_config(self, backbone: nn.Module):
        from peft import LoraConfig

        o: LoraOptions = self.options
        return LoraConfig(
            r=o.r,
            lora_alpha=o.alpha,
            lora_dropout=o.dropout,
            bias=o.bias,
            target_modules=self._targets(backbone, o.target_modules, "lora_targets"),
            **self._layers(backbone, o.layers),
        )


@dataclass
class IA3Options:
    target_modules: Optional[List[str]] = None
    feedforward_modules: Optional[List[str]] = None


@methods.register("ia3", options=IA3Options)
class IA3(PeftMethod):
    """IA3 (Liu et al., 2022) through peft: learned rescaling of keys, values and feed-forward activations."""

    def peft_config(self, backbone: nn.Module):
        from peft import IA3Config

        o: IA3Options = self.options
        targets = self._targets(backbone, o.target_modules, "ia3_targets")
        if o.feedforward_modules is not None:
            feedforward = list(o.feedforward_modules)
        elif o.target_modules:
            feedforward = []
        else:
            feedforward = self._targets(backbone, None, "ia3_feedforward")
        return IA3Config(target_modules=targets, feedforward_modules=feedforward)
