"""The `evaluate` metric modules load offline from their folders and give the same numbers as the run's
own evaluation code."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
import torch

# evaluate reads these when imported: no network, and its module cache out of the user's home.
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
os.environ.setdefault("HF_MODULES_CACHE", os.path.join(tempfile.gettempdir(), "crossrec-peft-evaluate-modules"))
import evaluate  # noqa: E402  (the dev extra installs it)

from crossrec_peft.data.split import EvalCases  # noqa: E402
from crossrec_peft.evaluate_metrics import path  # noqa: E402
from crossrec_peft.evaluation import evaluate_cases  # noqa: E402
from crossrec_peft.metrics import pointwise_metrics  # noqa: E402


def test_ranking_module_matches_the_run_evaluation():
    rng = np.random.default_rng(0)
    items, users = 30, 25
    scores = np.round(rng.normal(size=(users, items)), 1).astype(np.float32)  # rounded: ties are broken by the seed
    histories = [rng.choice(items, size=int(rng.integers(1, 6)), replace=False) for _ in range(users)]
    targets = rng.integers(0, items, size=users)
    module = evaluate.load(path("ranking"))
    got = module.compute(predictions=scores.tolist(), references=targets.tolist(), ks=[5, 10], exclude=[h.tolist() for h in histories], seed=3)
    expected = evaluate_cases(lambda h: torch.tensor(scores[: len(h)]), EvalCases(histories, targets), [5, 10], batch_size=users, seed=3)
    assert set(got) == set(expected)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-12), name


def test_pointwise_module_matches_metrics():
    rng = np.random.default_rng(1)
    labels = (rng.random(60) < 0.3).astype(int)
    probabilities = rng.random(60)
    module = evaluate.load(path("pointwise"))
    got = module.compute(predictions=probabilities.tolist(), references=labels.tolist(), threshold=0.4)
    assert got == pytest.approx(pointwise_metrics(probabilities, labels, threshold=0.4))


def test_unknown_module_name():
    with pytest.raises(ValueError, match="known: ranking, pointwise"):
        path("rankings")
