"""What the training loop carries from batch to batch and epoch to epoch, and into a checkpoint.

`TrainState` is written into every checkpoint's trainer_state.json (its fields are the JSON keys, beside the
checkpoint's own: format, files, fingerprint, backbones) and read back on resume, so a resumed run continues
with the same counters, early-stopping state and metrics log. `TrainResult` is what a finished loop returns.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from .errors import CheckpointError


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
        cls.check(saved, source)
        return cls(**{n: saved[n] for n in [f.name for f in dataclasses.fields(cls)]})

    @classmethod
    def check(cls, saved: Mapping[str, Any], source: str = "checkpoint") -> None:
        """CheckpointError naming `source` and the key when a field is missing or of the wrong JSON type."""
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in saved]
        if missing:
            raise CheckpointError(f"{source}: the trainer state lacks {', '.join(missing)}; the checkpoint is incomplete.")
        for name in names:
            wanted, ok = _TYPES[name]
            if not ok(saved[name]):
                raise CheckpointError(
                    f"{source}: key '{name}' must be {wanted}, but it is a JSON {type(saved[name]).__name__} "
                    f"({_short(saved[name])}). The checkpoint is corrupt or was edited."
                )


def _int(minimum: int) -> Any:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= minimum


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _numbers(v: Any) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) and _number(x) for k, x in v.items())


def _dicts(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, dict) for x in v)


_TYPES = {
    "epoch": ("an integer of at least 1", _int(1)),
    "batch": ("a non-negative integer", _int(0)),
    "step": ("a non-negative integer", _int(0)),
    "loss_sum": ("a number", _number),
    "loss_batches": ("a non-negative integer", _int(0)),
    "best_score": ("a number or null", lambda v: v is None or _number(v)),
    "best_epoch": ("a non-negative integer", _int(0)),
    "best_validation": ("an object mapping metric names to numbers", _numbers),
    "bad_epochs": ("a non-negative integer", _int(0)),
    "history": ("a list of objects", _dicts),
    "records": ("a list of objects", _dicts),
    "done": ("true or false", lambda v: isinstance(v, bool)),
    "pending": ("an object mapping names to numbers", _numbers),
    "pending_batches": ("a non-negative integer", _int(0)),
}


def _short(value: Any) -> str:
    import json

    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


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
