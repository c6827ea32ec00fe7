"""Training windows and their collation into batches of unique items.

Each epoch draws, per user, `samples_per_user` windows of at most `max_history + 1` consecutive items of the
user's training sequence (ending at a random point, so long histories are covered over epochs). Every
position after a window's first item is a training target, predicted from the items before it: a window
of n items gives n - 1 (history, next item) pairs for the price of encoding n items. A batch encodes every
distinct item it touches once and refers to it by position, so a popular item costs one forward pass.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset


class TrainWindows(Dataset):
    def __init__(self, sequences: list[np.ndarray], *, samples_per_user: int, max_history: int, seed: int):
        # A user needs two training items for one (history, next item) pair.
        self.sequences = [s for s in sequences if len(s) >= 2]
        self.samples_per_user = samples_per_user
        self.width = max_history + 1
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        rng = np.random.default_rng([self.seed, epoch])
        users = np.repeat(np.arange(len(self.sequences)), self.samples_per_user)
        lengths = np.array([len(self.sequences[u]) for u in users])
        shortest_end = np.minimum(lengths, self.width)  # windows are as long as the history allows
        ends = shortest_end + (rng.random(len(users)) * (lengths - shortest_end + 1)).astype(np.int64)
        self.windows = np.stack([users, ends], axis=1)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> np.ndarray:
        user, end = self.windows[i]
        return self.sequences[user][max(0, end - self.width) : end]


class Collator:
    """Turns windows of item indices into the batch dict TwoTowerModel.forward reads."""

    def __init__(self, features: dict, collate_items: Callable[[dict, torch.Tensor], dict]):
        self.features = features
        self.collate_items = collate_items

    def __call__(self, windows: list[np.ndarray]) -> dict:
        unique, inverse = np.unique(np.concatenate(windows), return_inverse=True)
        width = max(len(w) for w in windows)
        sequence = np.zeros((len(windows), width), dtype=np.int64)
        items = np.full((len(windows), width), -1, dtype=np.int64)
        mask = np.zeros((len(windows), width), dtype=bool)
        offset = 0
        for row, w in enumerate(windows):
            sequence[row, : len(w)] = inverse[offset : offset + len(w)]
            items[row, : len(w)] = w
            mask[row, : len(w)] = True
            offset += len(w)
        return {
            "items": self.collate_items(self.features, torch.from_numpy(unique)),
            "sequence": torch.from_numpy(sequence),
            "sequence_mask": torch.from_numpy(mask),
            "sequence_items": torch.from_numpy(items),
        }
