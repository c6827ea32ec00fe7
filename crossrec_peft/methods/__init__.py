"""PEFT methods. Importing this package registers the built-ins (one line per method, at its class)."""

from . import basic, bottleneck, peft_methods, side, top  # noqa: F401
from .base import Method, count_parameters

__all__ = ["Method", "count_parameters"]
