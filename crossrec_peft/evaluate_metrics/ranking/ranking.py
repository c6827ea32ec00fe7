"""Full-ranking recommendation metrics for `evaluate`: Recall/HR@K, NDCG@K, MRR@K, MAP@K and coverage@K.

Each prediction is one case's scores over the whole catalog; each reference is the index of the case's
held-out item. Optional `exclude` lists, per case, the items to leave out of the ranking (the user's history;
the target itself is never excluded). Ties are broken by a random draw seeded with `seed`. Formulas:
docs/metrics.md of crossrec-peft.
"""

import datasets
import evaluate
import numpy as np
import torch

from crossrec_peft.metrics import coverage, exclude as exclude_items, ranking_metrics, target_ranks, top_items

_KWARGS = """
Args:
    predictions: list of score lists, one per case, each over the whole catalog (same length).
    references: index of each case's held-out item.
    ks: cut-offs (default [10]).
    exclude: optional list of item-index lists to leave out of each case's ranking.
    seed: seed of the tie-breaking draw (default 0).
Returns:
    recall@k (= HR@k), ndcg@k, mrr@k, map@k averaged over cases, and coverage@k.
"""


class Ranking(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("float32")), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, ks=(10,), exclude=None, seed=0):
        scores = torch.as_tensor(np.asarray(predictions, dtype=np.float32))
        targets = torch.as_tensor(np.asarray(references, dtype=np.int64))
        if exclude is not None:
            if len(exclude) != len(targets):
                raise ValueError(f"exclude has {len(exclude)} lists for {len(targets)} cases")
            rows = [r for r, items in enumerate(exclude) for i in items if i != int(targets[r])]
            cols = [i for r, items in enumerate(exclude) for i in items if i != int(targets[r])]
            exclude_items(scores, torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long))
        ks = [int(k) for k in ks]
        ranks = target_ranks(scores, targets, torch.Generator().manual_seed(int(seed)))
        out = {name: float(v.mean()) for name, v in ranking_metrics(ranks, ks).items()}
        for k in ks:
            out[f"coverage@{k}"] = coverage(top_items(scores, k), scores.shape[1])
        return out
