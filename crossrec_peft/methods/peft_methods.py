"""LoRA and IA3 through peft. Default target modules come from the backbone's ArchSpec table.

`PeftMethod` is the base for any method built on a peft tuner: a subclass supplies `peft_config(backbone)`
and gets training, peft's own files in the package, loading, continued tuning and sharing a backbone with
other domains (through a view, the generic `Method.share`). LoRA shares as a named adapter of one PeftModel
(peft routes mixed batches by `adapter_names`); IA3 through routed hooks (peft's IA3 layers cannot route rows).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, List, Mapping, Optional

import torch
from torch import nn

from ..errors import ConfigError, PackageError, named
from ..registry import methods
from .base import Method, Storage

if TYPE_CHECKING:
    from ..model.routing import SharedBackbone

PEFT_WEIGHTS = "adapter_model.safetensors"


def adapter_tensors(peft_model: Any, adapter: str) -> list[str]:
    """The names peft saves `adapter` of `peft_model` under (as in its adapter_model.safetensors); none when
    `peft_model` holds no such peft adapter."""
    from peft import PeftModel, get_peft_model_state_dict

    if not isinstance(peft_model, PeftModel) or adapter not in peft_model.peft_config:
        return []
    return list(get_peft_model_state_dict(peft_model, adapter_name=adapter, save_embedding_layers=False))


def check_peft_tensors(path: Path, expected: Iterable[str]) -> None:
    """Refuse the peft weight file at `path` when it lacks any of the tensors `expected` (those of the adapter
    its config describes): peft only warns and leaves them at their initial values, and routed IA3 hooks
    would never be put on their modules, either way silently changing the scores."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:  # opened by verify_files already: only its names are read
        present = set(fh.keys())
    missing = [name for name in expected if name not in present]
    if missing:
        raise PackageError(
            f"{path}: {len(missing)} tensor(s) of the peft adapter are missing: {named(missing, 5)}. They would keep "
            "their initial values, so the package is refused; re-export it."
        )


class PeftMethod(Method):
    """Wraps the backbone's transformer in a peft.PeftModel; peft owns the adapter's files."""

    storage = Storage.PEFT

    def peft_config(self, backbone: nn.Module):
        """The peft config (LoraConfig, LoHaConfig, ...) this method attaches to `backbone`."""
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

    def exported_state(self, backbone: nn.Module) -> dict[str, torch.Tensor]:
        return {}  # peft's own files hold the weights (`save`)

    def save(self, backbone: nn.Module, directory: Path) -> None:
        """peft's adapter_config.json + adapter_model.safetensors, recording the backbone's portable id."""
        peft_config = backbone.model.peft_config["default"]
        local = peft_config.base_model_name_or_path
        # peft records the path the base was loaded from (a site-packages path for the bundled MiniLM);
        # the package records the portable id instead.
        peft_config.base_model_name_or_path = backbone.model_id
        try:
            # The embeddings are frozen: never let peft look the base model up on the Hub to check.
            backbone.model.save_pretrained(str(directory), safe_serialization=True, save_embedding_layers=False)
        finally:
            peft_config.base_model_name_or_path = local

    def load_files(self, backbone: nn.Module, directory: Path) -> None:
        """Copy the weights of peft's files in `directory` into the attached (trainable) adapter."""
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        check_peft_tensors(directory / PEFT_WEIGHTS, adapter_tensors(backbone.model, "default"))
        weights = load_file(str(directory / PEFT_WEIGHTS))
        result = set_peft_model_state_dict(backbone.model, weights)
        if result.unexpected_keys:
            raise PackageError(f"{directory / PEFT_WEIGHTS}: tensors the model does not have: {', '.join(result.unexpected_keys[:5])}.")


def _scale(x: torch.Tensor, scale: torch.Tensor, dim: int) -> torch.Tensor:
    """peft's IA3 product: `x` times `scale` over dimension `dim` (a Linear's last, a convolution's channels)."""
    dim = dim % x.dim()
    shape = (1,) * dim + (x.shape[dim],) + (1,) * (x.dim() - dim - 1)
    return (x.to(scale.dtype) * scale.view(shape)).to(x.dtype)


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

    def own_backbone_reason(self) -> str | None:
        if self.options is not None and self.options.bias != "none":
            return (f"LoRA with bias '{self.options.bias}' trains the backbone's own bias vectors, which peft keeps in "
                    "the base layers; other domains on a shared backbone would see them")
        return None

    def share(self, shared: "SharedBackbone", domain: str, directory: Path, state: Mapping[str, torch.Tensor]) -> None:
        """A named adapter of the shared backbone's PeftModel: peft routes each row to its domain's LoRA."""
        if state:
            raise PackageError(f"{directory}: LoRA keeps its weights in peft's files, but the package has backbone tensors {', '.join(list(state)[:3])}.")
        shared.add_named_peft(domain, directory)


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

    def share(self, shared: "SharedBackbone", domain: str, directory: Path, state: Mapping[str, torch.Tensor]) -> None:
        """Routed hooks: each IA3 vector scales its module's input (feed-forward modules, by peft's own rule)
        or output, on this domain's rows only; the vectors are peft's, read from its files."""
        from peft import IA3Config
        from peft.tuners.ia3 import IA3Model
        from peft.tuners.tuners_utils import check_target_module_exists
        from safetensors.torch import load_file

        if state:
            raise PackageError(f"{directory}: IA3 keeps its weights in peft's files, but the package has backbone tensors {', '.join(list(state)[:3])}.")
        config = IA3Config.from_pretrained(str(directory))
        # No PeftModel is built here, so the tensors the config calls for are found by peft's own matching rule
        # (the one its IA3 layers are injected by): a module without its vector would silently stay unscaled.
        weights = directory / PEFT_WEIGHTS
        check_peft_tensors(weights, [f"base_model.model.{inner}.ia3_l" for inner, _ in shared.transformer_modules()
                                      if bool(check_target_module_exists(config, inner))])
        for key, value in load_file(str(weights)).items():
            if not key.endswith(".ia3_l"):
                raise PackageError(f"{weights}: unexpected IA3 tensor '{key}'.")
            inner = key[: -len(".ia3_l")].removeprefix("base_model.model.")  # peft's name: a path in the transformer
            module = shared.transformer_module(inner, str(weights))
            on_input = IA3Model._check_target_module_feedforward(config, inner)
            conv = isinstance(module, nn.modules.conv._ConvNd)  # IA3 scales a convolution's channels (dim 1)
            features = getattr(module, ("in_" if on_input else "out_") + ("channels" if conv else "features"), None)
            if features is not None and value.numel() != features:
                raise PackageError(
                    f"{weights}: IA3 vector for '{inner}' has {value.numel()} entries, the module of backbone "
                    f"'{shared.identity.get('id')}' has {features} {'inputs' if on_input else 'outputs'}."
                )
            scale = nn.Parameter(value.flatten().float(), requires_grad=False)
            shared.keep(domain, scale)
            route = shared.route_input if on_input else shared.route_output
            route(domain, module, lambda x, s=scale, dim=1 if conv else -1: _scale(x, s, dim))
