"""Pointwise click/interest metrics for `evaluate`: AUC, log-loss, precision, recall and F1 at a threshold.

Predictions are probabilities (or logits with `logits=True`), references 0/1 labels. Formulas:
docs/metrics.md of crossrec-peft.
"""

import datasets
import evaluate

from crossrec_peft.metrics import pointwise_metrics

_KWARGS = """
Args:
    predictions: predicted probabilities (or logits with logits=True).
    references: 0/1 labels (both classes must occur for AUC).
    threshold: probability at or above which a prediction counts as positive (default 0.5).
    logits: whether predictions are logits (default False).
Returns:
    auc, log_loss, precision, recall, f1.
"""


class Pointwise(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("float64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, threshold=0.5, logits=False):
        return pointwise_metrics(predictions, references, threshold=float(threshold), logits=bool(logits))
