"""Training pairs and their collation into batches of unique items.

Each epoch draws, per user, `samples_per_user` random cut points t of the training sequence: the items before
t (the most recent `max_history`) are the history, item t the target. A batch encodes every distinct item it
touches once and refers to it by position, so a popular item in many histories costs one forward pass.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset


class TrainPairs(Dataset):
    def __init__(self, sequences: list[np.ndarray], *, samples_per_user: int, max_history: int, seed: int):
        # A user needs two training items for one (history, target) pair.
        self.sequences = [s for s in sequences if len(s) >= 2]
        self.samples_per_user = samples_per_user
        self.max_history = max_history
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        rng = np.random.default_rng([self.seed, epoch])
        users = np.repeat(np.arange(len(self.sequences)), self.samples_per_user)
        lengths = np.array([len(self.sequences[u]) for u in users])
        cuts = (rng.random(len(users)) * (lengths - 1)).astype(np.int64) + 1  # 1 .. len-1
        self.pairs = np.stack([users, cuts], axis=1)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        user, cut = self.pairs[i]
        seq = self.sequences[user]
        return seq[max(0, cut - self.max_history) : cut], int(seq[cut])


class Collator:
    """Turns (history, target) pairs into the batch dict TwoTowerModel.forward reads."""

    def __init__(self, features: dict, collate_items: Callable[[dict, torch.Tensor], dict]):
        self.features = features
        self.collate_items = collate_items

    def __call__(self, examples: list[tuple[np.ndarray, int]]) -> dict:
        histories = [h for h, _ in examples]
        targets = np.array([t for _, t in examples], dtype=np.int64)
        unique, inverse = np.unique(np.concatenate([*histories, targets]), return_inverse=True)
        width = max(len(h) for h in histories)
        history = np.zeros((len(examples), width), dtype=np.int64)
        mask = np.zeros((len(examples), width), dtype=bool)
        offset = 0
        for row, h in enumerate(histories):
            history[row, : len(h)] = inverse[offset : offset + len(h)]
            mask[row, : len(h)] = True
            offset += len(h)
        index = torch.from_numpy(unique)
        return {
            "items": self.collate_items(self.features, index),
            "history": torch.from_numpy(history),
            "history_mask": torch.from_numpy(mask),
            "target": torch.from_numpy(inverse[offset:]),
            "target_item": torch.from_numpy(targets),
        }
