"""Image towers from timm: ``timm:<arch>`` for any timm image model (architectures as data: timm's registry).

Weights come from a local ``.safetensors`` file (``pretrained: <file>``) or nowhere (random initialisation with a
fixed seed, trained from scratch); crossrec-peft never asks timm to download anything. The classifier is
dropped: the tower returns timm's globally pooled features (``pooling``: avg, max, avgmax, catavgmax).
Preprocessing is timm's own data config for the architecture (resize, centre crop, mean/std), optionally at a
smaller ``image_size`` than the native one, which convolutional towers accept and CPUs appreciate.

BatchNorm statistics are frozen (eval mode) whenever the BatchNorm's own weights are frozen, i.e. for every
method except `full`: an adapter trained on a batch of 32 demo images must not overwrite ImageNet statistics.

bitsandbytes has no convolution layers, so ``quantize`` other than none is refused with that reason.
"""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from ..fsutil import update_digest
from ..registry import backbones
from .base import FeatureContext
from .clip import RANDOM_INIT_SEED, _state_sha256, check_images, pixel_batch
from .spec import ArchSpec, arch_spec

POOLINGS = ("avg", "max", "avgmax", "catavgmax")


@dataclass
class TimmOptions:
    # A local .safetensors state dict for the architecture (timm's naming; a classifier in it is ignored).
    # null: random initialisation (seeded), trained from scratch.
    pretrained: Optional[str] = None
    pooling: str = "avg"  # timm's global pool: avg | max | avgmax | catavgmax
    # Square input size in pixels; null: the architecture's native size (224 for EfficientNet-Lite0).
    image_size: Optional[int] = None
    quantize: str = "none"  # only none: see check()

    def check(self) -> str | None:
        if self.quantize != "none":
            return (f"quantize={self.quantize} is not available for timm image towers: bitsandbytes has no "
                    "convolution layers, so a convolutional tower cannot be quantized. Set quantize=none.")
        if self.pooling not in POOLINGS:
            return f"pooling must be one of {', '.join(POOLINGS)}, got '{self.pooling}'."
        if self.image_size is not None and not 16 <= self.image_size <= 1024:
            return f"image_size must be between 16 and 1024 pixels (or null for the native size), got {self.image_size}."
        if self.pretrained and Path(self.pretrained).suffix != ".safetensors":
            return f"pretrained file '{self.pretrained}' is not a .safetensors file; crossrec-peft never unpickles weights."
        return None


def list_architectures() -> list[str]:
    import timm

    return list(timm.list_models())


def check_architecture(arch: str) -> None:
    names = list_architectures()
    if arch not in names:
        close = difflib.get_close_matches(arch, names, n=5, cutoff=0.5)
        hint = f" Closest timm names: {', '.join(close)}." if close else ""
        raise ConfigError(f"Unknown timm architecture '{arch}'.{hint} List them with timm.list_models().")


def load_safetensors_into(model: nn.Module, path: Path, label: str) -> None:
    """Load a safetensors state dict into `model`, naming the first tensor that does not fit (with both
    shapes), a missing tensor or an extra one. A classifier in the file (timm's `pretrained_cfg["classifier"]`)
    is ignored: the tower has none."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise ConfigError(f"{label}: pretrained weights file '{path}' does not exist.")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise ConfigError(f"{label}: '{path}' is not a readable safetensors file ({exc}).") from None
    head = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or "\0"
    heads = (head,) if isinstance(head, str) else tuple(head)
    state = {k: v for k, v in state.items() if not any(k == h or k.startswith(f"{h}.") for h in heads)}
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key not in state:
            if key.endswith("num_batches_tracked"):
                continue
            raise ConfigError(f"{label}: '{path}' has no tensor '{key}' (shape {tuple(tensor.shape)}), which the architecture needs.")
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise ConfigError(
                f"{label}: tensor '{key}' in '{path}' has shape {tuple(state[key].shape)}, but the architecture "
                f"expects {tuple(tensor.shape)}: the file holds weights of another architecture or size."
            )
    extra = [k for k in state if k not in expected]
    if extra:
        raise ConfigError(f"{label}: '{path}' holds tensor '{extra[0]}' ({len(extra)} in all), which the architecture does not have.")
    model.load_state_dict(state, strict=False)


class TimmBackbone(nn.Module):
    """A frozen timm image model without its classifier; `forward(pixel_values)` returns pooled features."""

    modality = "image"
    tower = "image"

    def __init__(self, arch: str, options: TimmOptions, *, model_id: str | None = None, weights: Path | None = None,
                 weights_label: str | None = None):
        super().__init__()
        import timm

        check_architecture(arch)
        self.model_id = model_id or f"timm:{arch}"
        weights = weights or (Path(options.pretrained).expanduser() if options.pretrained else None)
        try:
            with torch.random.fork_rng():
                # A random tower's starting point is its initialisation: seeded, so an adapter trained on it
                # reloads onto the same base (checked through the identity's hash).
                torch.manual_seed(RANDOM_INIT_SEED)
                model = timm.create_model(arch, pretrained=False, num_classes=0, global_pool=options.pooling)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ConfigError(f"Cannot build timm architecture '{arch}' with pooling={options.pooling}: {str(exc).splitlines()[0]}") from None
        if weights is not None:
            load_safetensors_into(model, weights, self.model_id)
        model.requires_grad_(False)
        model.eval()
        self.model = model
        self.arch_name = arch
        self.options = options
        self.weights = weights
        # What packages record as the weights' origin (a bundle names its package, not this machine's cache path).
        self.pretrained = weights_label or (str(weights) if weights else None)
        self.pretrained_weights = weights is not None  # a random tower has no zero-shot embeddings worth a baseline
        self.quantized = False
        self.model_type = f"timm-{type(model).__name__.lower()}"
        self._random_sha256 = None if weights else _state_sha256(model)
        config = timm.data.resolve_data_config({}, model=model)
        if options.image_size:
            config["input_size"] = (3, options.image_size, options.image_size)
        self.input_size = tuple(config["input_size"][1:])
        self.preprocess = timm.data.create_transform(**config, is_training=False)
        self._widths: dict[str, int] = {}
        self._layer_widths: list[int] | None = None
        self.hidden_size = int(self._probe([])[1].shape[-1])

    @property
    def arch(self) -> ArchSpec | None:
        return arch_spec(self.model_type)

    @property
    def base_model(self) -> nn.Module:
        get_base = getattr(self.model, "get_base_model", None)
        return get_base() if callable(get_base) else self.model

    @torch.no_grad()
    def _probe(self, paths: Sequence[str]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One forward of a blank image through the untouched model: the outputs of the modules at `paths`
        (relative to `base_model`) and the pooled output."""
        root = self.base_model
        was_training = root.training
        root.eval()
        try:
            param = next(root.parameters())
            return self._run_hooked(paths, torch.zeros(1, 3, *self.input_size, device=param.device, dtype=param.dtype), root)
        finally:
            root.train(was_training)

    def _run_hooked(self, paths: Sequence[str], pixel_values: torch.Tensor, run: nn.Module) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """`run(pixel_values)` with the outputs of the modules at `paths` (relative to `base_model`) captured."""
        modules = dict(self.base_model.named_modules())
        seen: dict[str, torch.Tensor] = {}
        handles = [modules[p].register_forward_hook(lambda m, a, out, p=p: seen.setdefault(p, out)) for p in paths if p in modules]
        try:
            output = run(pixel_values)
        finally:
            for handle in handles:
                handle.remove()
        return seen, output

    def adapter_width_at(self, path: str) -> int:
        """The number of channels (features along the spec's feature_dim) that the module at `path` outputs:
        the width of a bottleneck adapter placed there. Convolutional stages differ in width."""
        if path not in self._widths:
            seen, _ = self._probe([path])
            if path not in seen or not isinstance(seen[path], torch.Tensor):
                raise ConfigError(f"{self.model_id}: module '{path}' does not output a tensor; adapt a block's output.")
            self._widths[path] = int(seen[path].shape[(self.arch.feature_dim if self.arch else -1)])
        return self._widths[path]

    def train(self, mode: bool = True) -> "TimmBackbone":
        super().train(mode)
        if mode:
            # Frozen BatchNorm weights mean frozen statistics too (every method except full).
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in module.parameters(recurse=False)):
                    module.eval()
        return self

    # -- inputs ---------------------------------------------------------------------------------------------
    def featurize(self, columns: Sequence[Sequence[Any]], context: FeatureContext) -> dict[str, Any]:
        return {"paths": check_images(columns[0], context), "preprocess": self.preprocess}

    def collate(self, features: dict[str, Any], index: torch.Tensor) -> dict[str, torch.Tensor]:
        return pixel_batch([features["paths"][i] for i in index.tolist()], features["preprocess"], self.input_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values)

    # -- layer states (backbones.base.LayeredBackbone: what `side` reads from the layer cache) ----------------
    def _feature_modules(self) -> list[str]:
        """The modules whose outputs are the tower's layers: timm's own feature levels (`feature_info`, the
        stages `features_only=True` would return: e.g. Lite0's blocks 0, 1, 2, 4, 6 at strides 2 to 32), so the
        architecture declares them, not crossrec-peft."""
        info = getattr(self.base_model, "feature_info", None)
        names = [f.get("module") for f in info] if isinstance(info, (list, tuple)) else []
        modules = dict(self.base_model.named_modules())
        if not names or any(n not in modules for n in names):
            raise ConfigError(f"{self.model_id}: timm declares no feature levels (feature_info) for '{self.arch_name}', "
                              "so method 'side' has no layers to read; use frozen, lora or bottleneck.")
        return names

    def layer_widths(self) -> list[int]:
        if self._layer_widths is None:
            names = self._feature_modules()
            seen, _ = self._probe(names)
            self._layer_widths = [int(_pool(seen[name]).shape[-1]) for name in names]
        return list(self._layer_widths)

    def layer_states(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        names = self._feature_modules()
        seen, output = self._run_hooked(names, pixel_values, self.model)
        return output, [_pool(seen[n]) for n in names]

    def identity(self) -> dict:
        digest, size = self._random_sha256, 0  # random initialisation: the hash of the initial weights
        if self.weights is not None and self.weights.is_file():
            h = hashlib.sha256()
            update_digest(h, self.weights)
            digest, size = h.hexdigest(), self.weights.stat().st_size
        return {
            "id": self.model_id,
            "revision": None,
            "model_type": self.model_type,
            "hidden_size": self.hidden_size,
            "pretrained": self.pretrained,
            "sha256": digest,
            "bytes": size,
        }


def _pool(states: torch.Tensor) -> torch.Tensor:
    """A feature level's global average: over the spatial grid of a convnet's [B, C, H, W] map, over the
    tokens of a [B, N, C] sequence."""
    if states.dim() == 4:
        return states.mean(dim=(2, 3))
    if states.dim() == 3:
        return states.mean(dim=1)
    return states


def _availability() -> str:
    return "offline (random init or a local .safetensors file)"


@backbones.register("timm", options=TimmOptions, takes_argument=True, availability=_availability)
def timm_backbone(options: TimmOptions, argument: str | None = None) -> TimmBackbone:
    """timm:<arch>: any timm image model (e.g. timm:tf_efficientnet_lite0), local safetensors or random weights."""
    assert argument
    return TimmBackbone(argument, options)
