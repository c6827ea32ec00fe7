from __future__ import annotations

import numpy as np
import torch

from crossrec_peft.data.split import EvalCases
from crossrec_peft.evaluation import evaluate_cases, pad_histories, popularity_scorer


def test_popularity_with_history_exclusion():
    counts = np.array([100, 50, 10, 5, 1])
    cases = EvalCases([np.array([0]), np.array([1, 2]), np.array([0, 3])], np.array([1, 3, 3]))
    m = evaluate_cases(popularity_scorer(counts), cases, [1, 2])
    # user 0: item 0 excluded -> item 1 ranks first. user 1: items 1, 2 excluded -> 0 first, 3 second.
    # user 2: target 3 is in the history but never excluded -> ranks after 1, 2 (0 excluded): third.
    assert m["recall@1"] == 1 / 3
    assert m["recall@2"] == 2 / 3
    assert np.isclose(m["mrr@2"], (1 + 0.5 + 0) / 3)


def test_scorer_sees_only_recent_history():
    index, mask = pad_histories([np.arange(10), np.array([3])], max_history=4)
    assert index.tolist() == [[6, 7, 8, 9], [3, 0, 0, 0]]
    assert mask.sum(1).tolist() == [4, 1]


def test_perfect_and_worst_scorers():
    cases = EvalCases([np.array([0]), np.array([1])], np.array([4, 2]))

    def oracle(histories):
        s = torch.zeros(len(histories), 5)
        for r, t in enumerate(cases.targets[: len(histories)]):
            s[r, t] = 1.0
        return s

    assert evaluate_cases(oracle, cases, [1])["ndcg@1"] == 1.0
    assert evaluate_cases(lambda h: -oracle(h), cases, [1])["recall@1"] == 0.0
