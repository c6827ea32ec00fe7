"""Leave-one-out split per user: last item = test, second-to-last = validation, the rest = training."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class EvalCases:
    """One ranking case per user: the history the model sees and the held-out target item."""

    histories: list[np.ndarray]
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)


@dataclass
class LeaveOneOut:
    train: list[np.ndarray]
    validation: EvalCases
    test: EvalCases

    def train_item_counts(self, num_items: int) -> np.ndarray:
        counts = np.zeros(num_items, dtype=np.int64)
        for seq in self.train:
            np.add.at(counts, seq, 1)
        return counts


def leave_one_out(sequences: list[np.ndarray]) -> LeaveOneOut:
    if any(len(s) < 3 for s in sequences):
        raise ValueError("leave-one-out needs at least 3 interactions per user")
    return LeaveOneOut(
        train=[s[:-2] for s in sequences],
        validation=EvalCases([s[:-2] for s in sequences], np.array([s[-2] for s in sequences], dtype=np.int64)),
        test=EvalCases([s[:-1] for s in sequences], np.array([s[-1] for s in sequences], dtype=np.int64)),
    )
