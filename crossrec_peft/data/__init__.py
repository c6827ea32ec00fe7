"""Data: the standard layout, demo catalogs per domain, splits and training batches."""

from . import domains  # noqa: F401  (registers the built-in domains)
from .layout import RecData, load_layout
from .source import load_data
from .split import EvalCases, LeaveOneOut, leave_one_out

__all__ = ["EvalCases", "LeaveOneOut", "RecData", "leave_one_out", "load_data", "load_layout"]
