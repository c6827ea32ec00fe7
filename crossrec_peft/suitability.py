"""The finance suitability check: how often a system recommends assets riskier than the user's profile.

Risk is on the customers' four-level scale (FAR-Trans `riskLevel`): 1 Conservative, 2 Income, 3 Balanced,
4 Aggressive. Items carry an integer `risk_level` (the far-trans importer derives it from the asset's
category); the users table carries the user's `risk_level` by name (`Predicted_` prefix allowed). For each
test case whose user has a known profile, the system's top-K list (history items excluded, ties broken at
random with the run's seed) is compared with the profile:

    over_risk@K = (# recommended items, of known risk, whose risk > the user's) / (# recommended items of known risk)

pooled over the profiled cases. `held_out_over_risk` is the same share among the test targets themselves
(what the customers actually bought), the level a recommender that copies behaviour would reach.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from .data.importers.fartrans import RISK_LEVELS
from .data.split import EvalCases

Scorer = Callable[[list[np.ndarray]], torch.Tensor]


def risk_rank(value) -> float:
    """1..4 for a risk level given as a name ('Predicted_' prefix and any case allowed) or a number 1..4;
    NaN for Not_Available, empty or anything else."""
    if value is None:
        return np.nan
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return float(value) if np.isfinite(value) and 1 <= value <= len(RISK_LEVELS) and value == int(value) else np.nan
    text = str(value).strip().lower()
    if text.startswith("predicted_"):
        text = text[len("predicted_"):]
    names = [r.lower() for r in RISK_LEVELS]
    if text in names:
        return float(names.index(text) + 1)
    if text.isdigit():
        return risk_rank(int(text))
    return np.nan


def over_risk_counts(top: np.ndarray, item_risk: np.ndarray, user_risk: np.ndarray) -> tuple[int, int]:
    """(recommendations above the user's risk, recommendations with known risk) for top-K lists `top`
    [cases, K] of item indices and each case's user risk (NaN: the case is left out)."""
    risk = item_risk[top]
    known = np.isfinite(risk) & np.isfinite(user_risk)[:, None]
    return int((known & (risk > user_risk[:, None])).sum()), int(known.sum())


def top_k(scores: torch.Tensor, histories: list[np.ndarray], k: int, generator: torch.Generator) -> np.ndarray:
    """Each row's k best items, history items excluded, ties broken by a random permutation."""
    scores = scores.float().clone()
    for row, h in enumerate(histories):
        if len(h):
            scores[row, torch.as_tensor(np.asarray(h, dtype=np.int64))] = float("-inf")
    scores = torch.nan_to_num(scores, nan=float("-inf"))
    perm = torch.randperm(scores.shape[1], generator=generator)
    order = torch.sort(scores[:, perm], dim=1, descending=True, stable=True).indices[:, : min(k, scores.shape[1])]
    return perm[order].numpy()


@dataclass
class SuitabilityCheck:
    """The over-risk share of a system's recommendations on a set of cases (module docstring)."""

    item_risk: np.ndarray  # per item, NaN unknown
    case_risk: np.ndarray  # per case, the user's risk, NaN unknown
    cases: EvalCases
    ks: Sequence[int]
    seed: int = 0
    batch_size: int = 512

    def __post_init__(self) -> None:
        self.profiled = np.flatnonzero(np.isfinite(self.case_risk))

    def __call__(self, scorer: Scorer) -> dict[str, float]:
        ks = sorted(int(k) for k in self.ks)
        generator = torch.Generator().manual_seed(self.seed)
        over = {k: 0 for k in ks}
        known = {k: 0 for k in ks}
        for start in range(0, len(self.profiled), self.batch_size):
            rows = self.profiled[start : start + self.batch_size]
            histories = [self.cases.histories[r] for r in rows]
            top = top_k(scorer(histories), histories, max(ks), generator)
            for k in ks:
                o, n = over_risk_counts(top[:, :k], self.item_risk, self.case_risk[rows])
                over[k] += o
                known[k] += n
        out = {f"over_risk@{k}": over[k] / known[k] if known[k] else float("nan") for k in ks}
        targets = self.cases.targets[self.profiled][:, None]
        o, n = over_risk_counts(targets, self.item_risk, self.case_risk[self.profiled])
        out["held_out_over_risk"] = o / n if n else float("nan")
        out["profiled_cases"] = int(len(self.profiled))
        return out


def item_risks(data) -> np.ndarray | None:
    """Each catalog item's risk (NaN unknown) from the items' `risk_level` column; None without one."""
    if "risk_level" not in data.items.column_names:
        return None
    return np.array([risk_rank(v) for v in data.items.data.column("risk_level").to_pylist()], dtype=np.float64)


def user_risks(data) -> np.ndarray | None:
    """Each user's risk (NaN unknown), aligned with data.user_ids, from the users table; None without one."""
    users = getattr(data, "users", None)
    if users is None or "risk_level" not in users.column_names:
        return None
    by_id = dict(zip((str(u) for u in users.data.column("user_id").to_pylist()), users.data.column("risk_level").to_pylist()))
    return np.array([risk_rank(by_id.get(u)) for u in data.user_ids], dtype=np.float64)


def case_users(split, num_users: int) -> np.ndarray | None:
    """The user (index into data.user_ids) of each test case: the cases' own `users` when the split
    records them, else one case per user in order for leave-one-out; None when unknown."""
    users = getattr(split.test, "users", None)
    if users is not None:
        return np.asarray(users, dtype=np.int64)
    if split.kind == "leave_one_out" and len(split.test) == num_users:
        return np.arange(num_users)
    return None


def suitability_check(data, split, ks: Sequence[int], *, seed: int = 0) -> tuple[SuitabilityCheck | None, str]:
    """The check for a run, or None and why it cannot be made (no item risk, no user profiles, ...)."""
    items, users = item_risks(data), user_risks(data)
    if items is None:
        return None, "the items table has no risk_level column"
    if users is None:
        return None, "there is no users table with a risk_level column"
    who = case_users(split, len(data.user_ids))
    if who is None:
        return None, f"the {split.kind} split does not record which user each test case belongs to"
    check = SuitabilityCheck(items, users[who], split.test, ks, seed=seed)
    if not len(check.profiled):
        return None, "no test user has a known risk profile"
    return check, ""
