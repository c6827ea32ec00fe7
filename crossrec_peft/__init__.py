"""crossrec-peft: parameter-efficient fine-tuning of frozen pretrained encoders for cross-modal recommendation."""

from __future__ import annotations

import os

# Tokenizers' own thread pool fights the DataLoader and torch for the few cores we usually have.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from . import backbones, baselines, data, methods, model, objectives  # noqa: E402,F401  (register the built-ins)
from .config import Config, load_config  # noqa: E402
from .errors import ConfigError, CrossrecError, DataError, PackageError  # noqa: E402
from .registry import REGISTRIES, Registry  # noqa: E402
from .recommender import Recommender  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "Config", "ConfigError", "CrossrecError", "DataError", "PackageError", "REGISTRIES", "Recommender", "Registry",
    "__version__", "load_config",
]
