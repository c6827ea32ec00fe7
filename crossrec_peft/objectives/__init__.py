"""Training objectives (registry kind `objective`), one module each; importing this package registers them.

An objective is built as ``factory(options)``, prepared once on the model and the data before training
(``prepare(model, context)``: checks that the data has what it needs, adds its heads to the model), and then
called as ``objective(outputs, batch) -> (loss, logs)``, where `outputs` is what TwoTowerModel.forward returns.
The trainer writes `logs` to metrics.jsonl. Formulas and options: docs/objectives.md.
"""

from . import category, ctr, multitask, rating, retrieval  # noqa: F401  (register the built-ins)
from .base import Objective, ObjectiveContext, objective_context
from .category import CategoryOptions, CategoryPrediction
from .ctr import CTROptions, PointwiseCTR
from .multitask import Multitask, MultitaskOptions
from .rating import RatingOptions, RatingRegression
from .retrieval import InBatchSoftmax, RetrievalOptions

__all__ = [
    "CTROptions", "CategoryOptions", "CategoryPrediction", "InBatchSoftmax", "Multitask", "MultitaskOptions", "Objective", "ObjectiveContext", "PointwiseCTR",
    "RatingOptions", "RatingRegression", "RetrievalOptions", "objective_context",
]
