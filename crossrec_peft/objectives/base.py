"""What every objective shares: the data it is prepared on, its batch needs and its heads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..data.batching import BatchNeeds
from ..data.negatives import DISTRIBUTIONS, NegativeSampler


@dataclass
class ObjectiveContext:
    """The training data as objectives see it before training starts."""

    num_items: int
    item_counts: np.ndarray  # training interactions per item (popularity for negative sampling)
    # Interaction columns present in the data ("rating", "label") -> one array per training sequence.
    train_values: dict[str, list[np.ndarray]] = field(default_factory=dict)
    # A column of the items table in catalog order, or None when the table has no such column.
    item_column: Callable[[str], list | None] = lambda name: None
    item_columns: list[str] = field(default_factory=list)
    where: str = "the data"  # named in error messages
    seed: int = 0


def _train_values(data, split) -> dict[str, list[np.ndarray]]:
    """Each data value column cut to the split's training sequences. Training sequences are prefixes of users'
    histories (a split may drop users without any); they are matched to their user in order."""
    if not getattr(data, "values", None):
        return {}
    owners, u = [], 0
    for seq in split.train:
        while u < len(data.sequences) and not (
            len(seq) <= len(data.sequences[u]) and np.array_equal(seq, data.sequences[u][: len(seq)])
        ):
            u += 1
        if u == len(data.sequences):
            raise RuntimeError("a training sequence is not a prefix of any remaining user history")
        owners.append(u)
        u += 1
    return {name: [column[o][: len(seq)] for o, seq in zip(owners, split.train)] for name, column in data.values.items()}


def objective_context(data, split, seed: int = 0) -> ObjectiveContext:
    """The context of a run from its RecData and split."""
    columns = list(data.items.column_names)

    def item_column(name: str) -> list | None:
        return data.items.data.column(name).to_pylist() if name in columns else None

    return ObjectiveContext(
        num_items=len(data.item_ids),
        item_counts=split.train_item_counts(len(data.item_ids)),
        train_values=_train_values(data, split),
        item_column=item_column,
        item_columns=columns,
        where=str(data.source),
        seed=seed,
    )


class Objective:
    """Base of the built-in objectives. `task` names the objective's heads and its entries in logs."""

    name = "objective"

    def __init__(self, options: Any):
        self.options = options
        self.task = self.name
        self.batch_needs = BatchNeeds()

    def prepare(self, model: nn.Module, context: ObjectiveContext) -> None:
        """Check the data and add heads; raise ConfigError for data the objective cannot learn from."""

    def __call__(self, outputs: dict, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def held_out_metrics(self, model: nn.Module, content: torch.Tensor, data, split, max_history: int) -> dict[str, Any]:
        """Metrics of what the objective predicts besides a ranking, on the split's test cases ({} if none)."""
        return {}

    def attach_head(self, model: nn.Module, head: nn.Module) -> nn.Module:
        """Put `head` on model.heads[task] (keeping a same-shaped head already there, e.g. from a loaded package)."""
        existing = model.heads[self.task] if self.task in model.heads else None
        if existing is not None and existing.spec() == head.spec():
            return existing
        device = next(model.parameters()).device
        model.heads[self.task] = head.to(device)
        return model.heads[self.task]


@dataclass
class NegativeOptions:
    """Sampled negatives per (history, next item) pair; shared by retrieval and ctr."""

    num_negatives: int = 0
    sampling: str = "uniform"  # uniform | popularity (∝ (count + 1)^alpha)
    alpha: float = 0.75
    # Draw only items with training interactions (data/negatives.py says why: the cold-start slice).
    seen_only: bool = False

    def check_negatives(self) -> str | None:
        if self.num_negatives < 0:
            return f"'num_negatives' must be zero or more, got {self.num_negatives}."
        if self.sampling not in DISTRIBUTIONS:
            return f"'sampling' must be one of {', '.join(DISTRIBUTIONS)}, got '{self.sampling}'."
        if self.alpha < 0:
            return f"'alpha' must be zero or more, got {self.alpha}."
        return None


def sampler_needs(options: NegativeOptions, context: ObjectiveContext) -> tuple[NegativeSampler | None, BatchNeeds]:
    if options.num_negatives <= 0:
        return None, BatchNeeds(seed=context.seed)
    sampler = NegativeSampler(context.item_counts, distribution=options.sampling, alpha=options.alpha, seen_only=options.seen_only)
    return sampler, BatchNeeds(negatives=sampler, num_negatives=options.num_negatives, seed=context.seed)


def in_user_window(batch: dict, rows: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """[N, P] (or [N, K] with per-pair items [N, K]): True where an item is one of the pair's window items, so
    a sampled "negative" that the user actually interacted with (an accidental hit)."""
    window = batch["sequence_items"][rows]  # [N, W], -1 at padding
    if items.dim() == 1:
        return _window_hits(window, items)
    return (window.unsqueeze(1) == items.unsqueeze(-1)).any(-1)


def _window_hits(window: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """[N, P]: True where items[p] is among window[n]. Each window item is looked up among the items sorted
    (binary search) rather than compared with all of them: N x W lookups instead of an [N, W, P] comparison,
    which a shared pool of thousands of sampled negatives makes a noticeable part of a training step."""
    order = torch.argsort(items)
    ordered = items[order]
    if len(items) == 0 or bool((ordered[1:] == ordered[:-1]).any()):  # repeated items: each column compared
        return (window.unsqueeze(-1) == items.view(1, 1, -1)).any(1)
    at = torch.searchsorted(ordered, window).clamp(max=len(items) - 1)
    found = ordered[at] == window
    hits = torch.zeros(len(window), len(items), dtype=torch.bool, device=items.device)
    pair = torch.arange(len(window), device=items.device).unsqueeze(1).expand_as(window)
    hits[pair[found], order[at[found]]] = True
    return hits
