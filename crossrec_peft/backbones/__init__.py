"""Frozen pretrained encoders, one per modality. Importing this package registers the built-ins."""

from . import text  # noqa: F401  (registers minilm, hf)
from .spec import ARCHITECTURES, ArchSpec, arch_spec

__all__ = ["ARCHITECTURES", "ArchSpec", "arch_spec"]
