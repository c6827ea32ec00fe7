"""Frozen pretrained encoders, one per modality. Importing this package registers the built-ins."""

from . import clip, ids, text  # noqa: F401  (register openclip, ids, minilm, hf)
from .base import FeatureContext
from .spec import ARCHITECTURES, ArchSpec, arch_spec

__all__ = ["ARCHITECTURES", "ArchSpec", "FeatureContext", "arch_spec"]
