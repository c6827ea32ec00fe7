"""crossrec-peft's metrics as Hugging Face `evaluate` metric modules, loadable offline from their folders:

    import evaluate
    from crossrec_peft.evaluate_metrics import path
    ranking = evaluate.load(path("ranking"))     # Recall/HR, NDCG, MRR, MAP, coverage @K (full ranking)
    pointwise = evaluate.load(path("pointwise")) # AUC, log-loss, precision/recall/F1 at a threshold

The modules only wrap crossrec_peft.metrics (one implementation of every formula).
"""

from __future__ import annotations

from pathlib import Path

MODULES = ("ranking", "pointwise")


def path(name: str) -> str:
    """The local folder of metric module `name`, as evaluate.load expects it."""
    if name not in MODULES:
        raise ValueError(f"unknown metric module '{name}'; known: {', '.join(MODULES)}")
    return str(Path(__file__).resolve().parent / name)
