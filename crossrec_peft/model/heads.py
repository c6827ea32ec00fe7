"""Small trainable heads shared by both towers."""

from __future__ import annotations

import torch
from torch import nn


class ResidualLowRank(nn.Module):
    """x + up(down(x)). `up` starts at zero, so an untrained head is the identity and adds few weights
    (2 * dim * rank) to an exported adapter."""

    def __init__(self, dim: int, rank: int):
        super().__init__()
        self.down = nn.Linear(dim, rank, bias=False)
        self.up = nn.Linear(rank, dim, bias=False)
        nn.init.normal_(self.down.weight, std=dim**-0.5)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(self.down(x))


# -- objective heads -------------------------------------------------------------------------------------------
# Objectives add these to `TwoTowerModel.heads` (keyed by task name) so that the optimizer, checkpoints and the
# adapter package see them like any other trained tensor. `spec()` is what the package manifest records, and
# `build_head(spec)` rebuilds an untrained head of the same shape before the saved weights are loaded.


class BinaryHead(nn.Module):
    """Click / interest logit from a cosine similarity: scale * cos(u, e) + bias."""

    kind = "binary"

    def __init__(self, scale: float = 5.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(scale)))
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, cosine: torch.Tensor) -> torch.Tensor:
        return self.scale * cosine + self.bias

    def spec(self) -> dict:
        return {"kind": self.kind}


class RatingHead(nn.Module):
    """Predicted rating from a user vector u and an item vector e: bias + w · (u ⊙ e).

    w starts at `spread` in every component, so the untrained head is bias + spread * cos(u, e): the mean
    rating, moved up or down by similarity."""

    kind = "rating"

    def __init__(self, dim: int, mean: float = 0.0, spread: float = 1.0):
        super().__init__()
        self.dim = dim
        self.weight = nn.Parameter(torch.full((dim,), float(spread)))
        self.bias = nn.Parameter(torch.tensor(float(mean)))

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return (users * items) @ self.weight + self.bias

    def spec(self) -> dict:
        return {"kind": self.kind, "dim": self.dim}


class CategoryHead(nn.Module):
    """Category logits from an item vector (an auxiliary task that shapes the item tower)."""

    kind = "category"

    def __init__(self, dim: int, classes: list[str]):
        super().__init__()
        self.classes = list(classes)
        self.linear = nn.Linear(dim, len(classes))

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        return self.linear(items)

    def spec(self) -> dict:
        return {"kind": self.kind, "dim": self.linear.in_features, "classes": self.classes}


class TaskUncertainty(nn.Module):
    """Learned log-variances s_i of Kendall et al. (2018): total = sum_i 0.5 * exp(-s_i) * L_i + 0.5 * s_i."""

    kind = "task_uncertainty"

    def __init__(self, tasks: list[str]):
        super().__init__()
        self.tasks = list(tasks)
        self.log_vars = nn.Parameter(torch.zeros(len(tasks)))

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        return (0.5 * torch.exp(-self.log_vars) * losses + 0.5 * self.log_vars).sum()

    def spec(self) -> dict:
        return {"kind": self.kind, "tasks": self.tasks}


HEADS = {h.kind: h for h in (BinaryHead, RatingHead, CategoryHead, TaskUncertainty)}


def build_head(spec: dict) -> nn.Module:
    """An untrained head of the shape `spec` (from `head.spec()`) describes."""
    spec = dict(spec)
    kind = spec.pop("kind", None)
    if kind not in HEADS:
        raise ValueError(f"unknown head kind {kind!r}; known: {', '.join(HEADS)}")
    return HEADS[kind](**spec)
