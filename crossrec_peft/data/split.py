"""Splitting users' histories into training sequences and held-out ranking cases.

- leave-one-out (per user): last item = test, second-to-last = validation, the rest = training.
- temporal (global): two cut-off times cut the timeline. Training is every interaction before the validation
  cut-off; a validation case is a user's first interaction in [validation cut-off, test cut-off) with the
  history before the validation cut-off; a test case is a user's first interaction at or after the test
  cut-off with the history before it. No model sees an interaction that happened after the one it ranks,
  which leave-one-out cannot promise across users.

`make_split(data, cfg.data)` picks one from the run's config; `Split.describe()` is what the run's report
records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError

SPLITS = ("leave_one_out", "temporal")


@dataclass
class EvalCases:
    """One ranking case per user: the history the model sees and the held-out target item."""

    histories: list[np.ndarray]
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)


@dataclass
class Split:
    """Training sequences (one per user that has any) and the validation and test cases."""

    kind: str
    train: list[np.ndarray]
    validation: EvalCases
    test: EvalCases
    # What defines the split beyond its kind (cut-off times for temporal), recorded in the report.
    settings: dict[str, Any] = field(default_factory=dict)

    def train_item_counts(self, num_items: int) -> np.ndarray:
        """Training interactions per item [num_items] (a run asks several times: features, objective, baselines,
        evaluation): one bincount over all sequences."""
        if not self.train:
            return np.zeros(num_items, dtype=np.int64)
        return np.bincount(np.concatenate(self.train), minlength=num_items).astype(np.int64, copy=False)

    def describe(self) -> dict[str, Any]:
        """The split as the run's report records it."""
        return {
            "kind": self.kind,
            **self.settings,
            "train_interactions": int(sum(len(s) for s in self.train)),
            "validation_cases": len(self.validation),
            "test_cases": len(self.test),
        }


def leave_one_out(sequences: list[np.ndarray]) -> Split:
    if any(len(s) < 3 for s in sequences):
        raise ValueError("leave-one-out needs at least 3 interactions per user")
    return Split(
        kind="leave_one_out",
        train=[s[:-2] for s in sequences],
        validation=EvalCases([s[:-2] for s in sequences], np.array([s[-2] for s in sequences], dtype=np.int64)),
        test=EvalCases([s[:-1] for s in sequences], np.array([s[-1] for s in sequences], dtype=np.int64)),
    )


def parse_time(value: Any, key: str) -> float:
    """Seconds since the epoch from a number (or its text) or an ISO 8601 date (UTC unless it says)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"'{key}' must be seconds since the epoch or an ISO 8601 date (2024-01-31T00:00:00Z), got '{value}'.") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def iso_time(seconds: float) -> str:
    """An ISO 8601 UTC date for seconds since the epoch; the number itself for values before 1973, which
    are positions or counters (amazon-seq writes positions) rather than dates."""
    if abs(seconds) < 1e8:
        return f"{seconds:g}"
    try:
        return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat().replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):  # positions, not dates
        return str(seconds)


def _cases(sequences, timestamps, history_end: float, target_start: float, target_end: float) -> tuple[EvalCases, int]:
    """For each user with history before `history_end` and an interaction in [target_start, target_end):
    that history and the first such interaction. Also the number of users with a target but no history."""
    histories, targets, cold = [], [], 0
    for seq, ts in zip(sequences, timestamps):
        first = int(np.searchsorted(ts, target_start, side="left"))  # ts is sorted (the loader orders by time)
        if first >= len(ts) or ts[first] >= target_end:
            continue
        known = int(np.searchsorted(ts, history_end, side="left"))
        if known == 0:
            cold += 1
            continue
        histories.append(seq[:known])
        targets.append(seq[first])
    return EvalCases(histories, np.array(targets, dtype=np.int64)), cold


def temporal(
    sequences: list[np.ndarray],
    timestamps: list[np.ndarray] | None,
    *,
    test_time: Any = None,
    test_quantile: float = 0.9,
    validation_time: Any = None,
    validation_quantile: float = 0.8,
) -> Split:
    """A global temporal split. Each cut-off is the given time (seconds or ISO 8601) or, when None, that
    quantile of all interaction timestamps; interactions at or after a cut-off are on its later side."""
    if timestamps is None:
        raise DataError(
            "data.split=temporal needs a 'timestamp' column in the interactions table (this one has none, so "
            "histories are in file order); add one, or use data.split=leave_one_out."
        )
    for key, q in (("data.split_quantile", test_quantile), ("data.validation_quantile", validation_quantile)):
        if not 0 < q < 1:
            raise ConfigError(f"'{key}' must be between 0 and 1 (exclusive), got {q}.")
    every = np.concatenate(timestamps) if timestamps else np.zeros(0)
    if not len(every):
        raise DataError("temporal split: there are no interactions.")
    t_test = parse_time(test_time, "data.split_time") if test_time is not None else float(np.quantile(every, test_quantile))
    t_val = (
        parse_time(validation_time, "data.validation_time") if validation_time is not None
        else float(np.quantile(every, validation_quantile))
    )
    span = f"(interactions run from {iso_time(every.min())} to {iso_time(every.max())})"
    if t_val >= t_test:
        raise DataError(
            f"temporal split: the validation cut-off {iso_time(t_val)} is not before the test cut-off {iso_time(t_test)} {span}; "
            f"set data.validation_time (or data.validation_quantile) earlier than data.split_time (data.split_quantile)."
        )
    train = [seq[: int(np.searchsorted(ts, t_val, side="left"))] for seq, ts in zip(sequences, timestamps)]
    train = [s for s in train if len(s)]
    if not train:
        raise DataError(f"temporal split: no interaction is before the validation cut-off {iso_time(t_val)} {span}, so nothing is left to train on.")
    test, test_cold = _cases(sequences, timestamps, t_test, t_test, np.inf)
    if not len(test):
        raise DataError(
            f"temporal split: the test cut-off {iso_time(t_test)} leaves no test users {span}: a test user needs an interaction "
            f"before the cut-off (its history) and one at or after it ({test_cold} users have only the latter). "
            f"Move data.split_time (or data.split_quantile) earlier."
        )
    validation, _ = _cases(sequences, timestamps, t_val, t_val, t_test)
    if not len(validation):
        raise DataError(
            f"temporal split: no user has an interaction between the validation cut-off {iso_time(t_val)} and the test cut-off "
            f"{iso_time(t_test)} after earlier history {span}; widen the window (data.validation_time or data.validation_quantile)."
        )
    settings = {
        "validation_time": t_val, "test_time": t_test, "validation_date": iso_time(t_val), "test_date": iso_time(t_test),
        "cold_test_users": test_cold,
    }
    return Split(kind="temporal", train=train, validation=validation, test=test, settings=settings)


def make_split(data, cfg) -> Split:
    """The split the run's `data` config section asks for (`cfg.split` and its options)."""
    if cfg.split == "leave_one_out":
        return leave_one_out(data.sequences)
    if cfg.split == "temporal":
        return temporal(
            data.sequences, data.timestamps,
            test_time=cfg.split_time, test_quantile=cfg.split_quantile,
            validation_time=cfg.validation_time, validation_quantile=cfg.validation_quantile,
        )
    raise ConfigError(f"'data.split' must be one of {', '.join(SPLITS)}, got '{cfg.split}'.")
