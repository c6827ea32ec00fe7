"""Training windows and their collation into batches of unique items.

Each epoch draws, per user, `samples_per_user` windows of at most `max_history + 1` consecutive items of the
user's training sequence (ending at a random point, so long histories are covered over epochs). Every
position after a window's first item is a training target, predicted from the items before it: a window
of n items gives n - 1 (history, next item) pairs for the price of encoding n items. A batch encodes every
distinct item it touches once and refers to it by position, so a popular item costs one forward pass.

Objectives that need more than the item sequence say so with a `BatchNeeds`: per-interaction values (a
rating or label per pair) and sampled negatives per pair. Without one, batches are exactly the retrieval
batches above.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from .negatives import NegativeSampler


@dataclass
class BatchNeeds:
    """What an objective needs in its batches beyond the windows of items."""

    # Interaction columns (e.g. "rating", "label") -> one array per training sequence, aligned with it.
    values: dict[str, list[np.ndarray]] = field(default_factory=dict)
    negatives: NegativeSampler | None = None
    num_negatives: int = 0  # per (history, next item) pair
    seed: int = 0


class TrainWindows(Dataset):
    def __init__(
        self,
        sequences: list[np.ndarray],
        *,
        samples_per_user: int,
        max_history: int,
        seed: int,
        values: dict[str, list[np.ndarray]] | None = None,
    ):
        # A user needs two training items for one (history, next item) pair.
        keep = [i for i, s in enumerate(sequences) if len(s) >= 2]
        self.sequences = [sequences[i] for i in keep]
        self.values = {name: [column[i] for i in keep] for name, column in (values or {}).items()}
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

    def __getitem__(self, i: int) -> np.ndarray | tuple[np.ndarray, dict[str, np.ndarray]]:
        user, end = self.windows[i]
        window = slice(max(0, end - self.width), end)
        if not self.values:
            return self.sequences[user][window]
        return self.sequences[user][window], {name: column[user][window] for name, column in self.values.items()}


class Collator:
    """Turns windows of item indices into the batch dict TwoTowerModel.forward reads."""

    def __init__(self, features: dict, collate_items: Callable[[dict, torch.Tensor], dict], needs: BatchNeeds | None = None):
        self.features = features
        self.collate_items = collate_items
        self.needs = needs or BatchNeeds()

    def __call__(self, windows: list) -> dict:
        values: dict[str, np.ndarray] = {}
        if windows and isinstance(windows[0], tuple):
            names = windows[0][1].keys()
            # Pairs are every position after a window's first, in row order (as TwoTowerModel.forward takes them).
            values = {name: np.concatenate([v[name][1:] for _, v in windows]).astype(np.float32) for name in names}
            windows = [w for w, _ in windows]
        negatives = None
        k = self.needs.num_negatives if self.needs.negatives is not None else 0
        if k > 0:
            targets = np.concatenate([w[1:] for w in windows])
            # Seeded by the batch's content, not by a running generator: the same batch gets the same
            # negatives in a resumed run or another process, and no sampler state needs checkpointing.
            digest = zlib.crc32(np.array([len(w) for w in windows], dtype=np.int64).tobytes())
            digest = zlib.crc32(np.concatenate(windows).astype(np.int64).tobytes(), digest)
            negatives = self.needs.negatives.sample(targets, k, np.random.default_rng([self.needs.seed, digest]))
        touched = [np.concatenate(windows)] + ([negatives.ravel()] if negatives is not None else [])
        unique, inverse = np.unique(np.concatenate(touched), return_inverse=True)
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
        batch = {
            "items": self.collate_items(self.features, torch.from_numpy(unique)),
            "sequence": torch.from_numpy(sequence),
            "sequence_mask": torch.from_numpy(mask),
            "sequence_items": torch.from_numpy(items),
        }
        for name, column in values.items():
            batch[f"{name}s"] = torch.from_numpy(column)  # "ratings", "labels": one per pair
        if negatives is not None:
            pool, local = np.unique(negatives, return_inverse=True)
            batch["negative_pool"] = torch.from_numpy(np.searchsorted(unique, pool))  # positions among the items
            batch["negative_pool_items"] = torch.from_numpy(pool)
            batch["negatives"] = torch.from_numpy(local.reshape(negatives.shape))
        return batch
