"""Baselines evaluated in the same run as the model, on the same test cases (docs/baselines.md): a registry
kind (`registry.baselines`), one module per baseline. Importing this package registers the built-ins."""

from . import ids, itemknn, popularity, untuned  # noqa: F401  (register the built-ins)
from .base import Baseline, BaselineContext, Scorer, run_baselines
from .ids import TaggedLog, ids_config, train_ids_model
from .itemknn import interaction_matrix, itemknn_scorer
from .popularity import popularity_scorer
from .untuned import untuned_scorer

__all__ = [
    "Baseline", "BaselineContext", "Scorer", "TaggedLog", "ids_config", "interaction_matrix", "itemknn_scorer",
    "popularity_scorer", "run_baselines", "train_ids_model", "untuned_scorer",
]
