"""What the training loop carries from batch to batch and epoch to epoch, and into a checkpoint.

`TrainState` is written into every checkpoint's trainer_state.json (its fields are the JSON keys, beside the
checkpoint's own: format, files, fingerprint, backbones) and read back on resume, so a resumed run continues
with the same counters, early-stopping state and metrics log. `TrainResult` is what a finished loop returns.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from .checkpoint import CheckpointError


@dataclass
class TrainState:
    epoch: int = 1  # the epoch in progress; after an epoch ends, the next one
    batch: int = 0  # batches of that epoch already done (non-zero only in a checkpoint taken mid-epoch)
    step: int = 0  # optimizer steps done in the whole run
    loss_sum: float = 0.0  # this epoch's objective loss summed over its batches (for the epoch's train_loss)
    loss_batches: int = 0
    best_score: float | None = None  # the best validation NDCG@10 so far (None: no epoch validated yet)
    best_epoch: int = 0
    best_validation: dict[str, float] = field(default_factory=dict)
    bad_epochs: int = 0  # epochs since the best one (early stopping at train.patience)
    history: list[dict] = field(default_factory=list)  # one validation entry per epoch
    records: list[dict] = field(default_factory=list)  # every metrics.jsonl record of the loop, replayed on resume
    done: bool = False  # the last epoch ran or early stopping decided
    pending: dict[str, float] = field(default_factory=dict)  # objective logs summed since the last logged step
    pending_batches: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, saved: Mapping[str, Any], source: str = "checkpoint") -> "TrainState":
        """The state from a checkpoint's trainer_state.json (its other keys are the checkpoint's own)."""
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in saved]
        if missing:
            raise CheckpointError(f"{source}: the trainer state lacks {', '.join(missing)}; the checkpoint is incomplete.")
        return cls(**{n: saved[n] for n in names})


@dataclass
class TrainResult:
    best_epoch: int
    best_validation: dict[str, float]
    epochs_run: int
    steps: int
    seconds: float
    stopped_early: bool
    history: list[dict] = field(default_factory=list)
    resumed_from: str | None = None
