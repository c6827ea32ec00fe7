"""Frozen pretrained encoders, one per modality. Importing this package registers the built-ins."""

from . import clip, effnet_lite, ids, text, timm_towers  # noqa: F401  (register openclip, effnet-lite0, ids, minilm, hf, timm)
from .base import FeatureContext
from .spec import ARCHITECTURES, ArchSpec, arch_spec

__all__ = ["ARCHITECTURES", "ArchSpec", "FeatureContext", "arch_spec"]
