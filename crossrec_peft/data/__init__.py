"""Data: the standard layout, demo catalogs per domain, splits and training batches."""

from . import domains  # noqa: F401  (registers the built-in domains)
from .layout import RecData, load_layout
from .source import load_data
from .split import EvalCases, Split, leave_one_out, make_split, temporal

__all__ = ["EvalCases", "RecData", "Split", "leave_one_out", "load_data", "load_layout", "make_split", "temporal"]
