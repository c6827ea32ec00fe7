"""Full-ranking evaluation over the whole catalog, for the model and the baselines in the same run.

For each user the scores of the items already in the user's history are set to -inf, then the metrics of
`metrics.py` are averaged over users. Whether a target that is already in the history (a repeat purchase)
can be found is the protocol's choice, `repeats`:

- ``allow``: the target itself is never excluded, so a repeat can be found (a content model is flattered:
  the repeated item is the one nearest its own history);
- ``miss``: every history item is excluded, the target too, so a repeated target counts as a miss: the
  standard protocol of RecBole, VQ-Rec and IISAN, for figures that can be held against published ones. Optionally (`eval.sampled_negatives`) the target is also ranked against that many sampled
items only: a number reported apart and labelled, because it overstates quality (docs/metrics.md).

`TestEvaluation` evaluates every system of a run on the same test cases with the same tie-breaking and the
same sampled negatives, and slices the per-user values: cold-start targets and history-length buckets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .data.split import EvalCases
from .metrics import coverage, exclude, ranking_metrics, target_ranks, top_items
from .model.two_tower import TwoTowerModel

Scorer = Callable[[list[np.ndarray]], torch.Tensor]  # histories of a block of users -> scores [users, items]
REPEATS = ("allow", "miss")  # the protocols for a target already in the history (module docstring)


@torch.no_grad()
def encode_catalog(model: TwoTowerModel, features: dict, num_items: int, batch_size: int, *, progress: bool = True, desc: str = "encode items") -> torch.Tensor:
    """Content vectors of every item, once, in batches."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in tqdm(range(0, num_items, batch_size), desc=desc, disable=not progress, leave=False):
        index = torch.arange(start, min(start + batch_size, num_items))
        inputs = model.collate_items(features, index)
        inputs = {m: {k: v.to(device) for k, v in t.items()} for m, t in inputs.items()}
        out.append(model.encode_content(inputs).float().cpu())
    model.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def encode_zero_shot(model: TwoTowerModel, features: dict, num_items: int, batch_size: int, *, progress: bool = True) -> torch.Tensor:
    """The untuned baseline's item vectors: each pretrained modality's backbone embedding, L2-normalised,
    concatenated (a missing modality contributes zeros). Cosine similarity on these is the sum of the
    per-modality cosines over a common norm. Towers without pretrained weights (trained from scratch) are
    left out, unless no modality has pretrained weights. Call it before training: an untrained method is the
    identity (LoRA B, bottleneck up and IA3 scales start at zero, zero and one), so these are the backbones'
    own embeddings, whatever fusion and heads the model has."""
    names = [n for n, enc in model.modalities.items() if enc.backbone.pretrained_weights] or list(model.modalities)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in tqdm(range(0, num_items, batch_size), desc="untuned: encode items", disable=not progress, leave=False):
        inputs = model.collate_items(features, torch.arange(start, min(start + batch_size, num_items)))
        parts = []
        for name in names:
            emb, present = model.modalities[name]({k: v.to(device) for k, v in inputs[name].items()})
            parts.append(F.normalize(emb.float(), dim=-1) * present.unsqueeze(-1).float())
        out.append(torch.cat(parts, dim=-1).cpu())
    model.train(was_training)
    return torch.cat(out)


def zero_shot_scorer(content: torch.Tensor, max_history: int) -> Scorer:
    """Users are the mean of their recent history's vectors; scores are cosine similarities."""
    items = F.normalize(content, dim=-1)

    def score(histories: list[np.ndarray]) -> torch.Tensor:
        index, mask = pad_histories(histories, max_history)
        weights = mask.unsqueeze(-1).float()
        users = (content[index] * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return F.normalize(users, dim=-1) @ items.T

    return score


def pad_histories(histories: list[np.ndarray], max_history: int) -> tuple[torch.Tensor, torch.Tensor]:
    recent = [h[-max_history:] for h in histories]
    width = max(1, max(len(h) for h in recent))
    index = np.zeros((len(recent), width), dtype=np.int64)
    mask = np.zeros((len(recent), width), dtype=bool)
    for row, h in enumerate(recent):
        index[row, : len(h)] = h
        mask[row, : len(h)] = True
    return torch.from_numpy(index), torch.from_numpy(mask)


@torch.no_grad()
def user_vectors(model: TwoTowerModel, content: torch.Tensor, histories: list[np.ndarray], max_history: int) -> torch.Tensor:
    """The model's user vectors for these histories (their most recent max_history items), on the model's
    device: what every held-out metric scores against."""
    device = next(model.parameters()).device
    index, mask = pad_histories(histories, max_history)
    return model.user_vectors(content[index].to(device), mask.to(device))


@torch.no_grad()
def model_scorer(model: TwoTowerModel, content: torch.Tensor, max_history: int) -> Scorer:
    model.eval()
    device = next(model.parameters()).device
    items = model.item_vectors(content.to(device)).float()

    def score(histories: list[np.ndarray]) -> torch.Tensor:
        users = user_vectors(model, content, histories, max_history)
        return (users.float() @ items.T).cpu()

    return score



@dataclass
class CaseResults:
    """Per-case metric values of one system on one set of cases, plus catalog coverage (a list-level
    metric: it belongs to the whole set of top-K lists, not to one case)."""

    values: dict[str, torch.Tensor]
    coverage: dict[str, float] = field(default_factory=dict)

    def summary(self, mask: np.ndarray | None = None) -> dict[str, float]:
        """Means over the cases (or the cases where `mask` is True); coverage only for all cases."""
        if mask is None:
            return {**{n: float(v.mean()) for n, v in self.values.items()}, **self.coverage}
        selected = torch.as_tensor(mask, dtype=torch.bool)
        return {n: float(v[selected].mean()) for n, v in self.values.items()}


def _history_exclusions(histories: list[np.ndarray], targets: np.ndarray, repeats: str = "allow") -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols) of the history items of a block of users to exclude from ranking: every one with
    `repeats="miss"`, every one except the user's own target with `repeats="allow"`."""
    if repeats not in REPEATS:
        raise ValueError(f"repeats must be one of {REPEATS}, got {repeats!r}")
    if not histories:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    rows = np.concatenate([np.full(len(h), r) for r, h in enumerate(histories)])
    cols = np.concatenate(histories).astype(np.int64)
    if repeats == "miss":
        keep = np.ones(len(cols), dtype=bool)
    else:
        keep = cols != np.repeat(targets, [len(h) for h in histories])
    return torch.as_tensor(rows[keep], dtype=torch.long), torch.as_tensor(cols[keep], dtype=torch.long)


def sample_negatives(scores: torch.Tensor, targets: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """Scores [cases, 1 + n] of each case's target (column 0) and n items drawn uniformly without
    replacement from the items that are neither the target nor in the history. When fewer than n such items
    exist, the missing columns are -inf (they rank below the target)."""
    keys = torch.rand(scores.shape, generator=generator)
    keys[rows, cols] = float("inf")
    keys[torch.arange(len(targets)), targets] = float("inf")
    draw = keys.topk(min(n, scores.shape[1]), dim=1, largest=False)
    negatives = scores.gather(1, draw.indices).masked_fill(torch.isinf(draw.values), float("-inf"))
    if negatives.shape[1] < n:
        negatives = F.pad(negatives, (0, n - negatives.shape[1]), value=float("-inf"))
    return torch.cat([scores.gather(1, targets.view(-1, 1)), negatives], dim=1)


class _Ranked:
    """One scorer's per-case metrics and coverage@k, batch by batch of cases (rank_cases, rank_many). Its
    generators fix tie-breaking and the sampled items from `seed`, so a scorer ranked alone or beside others
    gets the same numbers."""

    def __init__(self, ks: list[int], seed: int, sampled_negatives: int | None):
        self.ks, self.sampled_negatives = ks, sampled_negatives
        self.ties = torch.Generator().manual_seed(seed)
        self.sampling = torch.Generator().manual_seed(seed + 1)
        self.sampled_ties = torch.Generator().manual_seed(seed + 2)
        self.full: dict[str, list[torch.Tensor]] = {}
        self.sampled: dict[str, list[torch.Tensor]] = {}
        self.seen: dict[int, torch.Tensor] = {}

    def add(self, scores: torch.Tensor, targets: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> None:
        """Rank one batch: `scores` [cases, items] with the history exclusions (rows, cols) not yet applied
        (they are applied here, in place)."""
        ks = self.ks
        exclude(scores, rows, cols)
        for name, v in ranking_metrics(target_ranks(scores, targets, self.ties), ks).items():
            self.full.setdefault(name, []).append(v)
        top = top_items(scores, max(ks))
        for k in ks:
            hit = torch.zeros(scores.shape[1], dtype=torch.bool)
            hit[top[:, :k].reshape(-1)] = True
            self.seen[k] = hit if k not in self.seen else self.seen[k] | hit
        if self.sampled_negatives:
            candidates = sample_negatives(scores, targets, rows, cols, self.sampled_negatives, self.sampling)
            ranks = target_ranks(candidates, torch.zeros(len(targets), dtype=torch.long), self.sampled_ties)
            for name, v in ranking_metrics(ranks, ks).items():
                self.sampled.setdefault(name, []).append(v)

    def results(self) -> tuple[CaseResults, CaseResults | None]:
        seen, ks = self.seen, self.ks
        num_items = next(iter(seen.values())).numel() if seen else 1
        covered = {f"coverage@{k}": coverage(seen[k].nonzero().view(-1), num_items) for k in ks} if seen else {}
        full = CaseResults({n: torch.cat(v) for n, v in self.full.items()}, covered)
        return full, (CaseResults({n: torch.cat(v) for n, v in self.sampled.items()}) if self.sampled_negatives else None)


@torch.no_grad()
def rank_many(
    scorers: Mapping[Hashable, Scorer], cases: EvalCases, ks: Sequence[int], *, batch_size: int = 512, seed: int = 0,
    sampled_negatives: int | None = None, repeats: str = "allow",
) -> dict[Hashable, tuple[CaseResults, CaseResults | None]]:
    """`rank_cases` of several scorers in one pass over the cases, each scorer's result the same as ranking
    it alone. Every scorer is handed the same `histories` object for a batch, so scorers built on a shared
    part (`BatchShared`: the model's scores under several hybrid weights) compute that part once per batch."""
    ks = list(ks)
    ranked = {key: _Ranked(ks, seed, sampled_negatives) for key in scorers}
    for start in range(0, len(cases), batch_size):
        histories = cases.histories[start : start + batch_size]
        targets = torch.as_tensor(cases.targets[start : start + batch_size], dtype=torch.long)
        rows, cols = _history_exclusions(histories, targets.numpy(), repeats)
        for key, scorer in scorers.items():
            ranked[key].add(scorer(histories).float(), targets, rows, cols)
    return {key: r.results() for key, r in ranked.items()}


def rank_cases(
    scorer: Scorer, cases: EvalCases, ks: Sequence[int], *, batch_size: int = 512, seed: int = 0,
    sampled_negatives: int | None = None, repeats: str = "allow",
) -> tuple[CaseResults, CaseResults | None]:
    """Per-case full-ranking metrics (and coverage@k) of a scorer; with `sampled_negatives`, also the
    per-case metrics of ranking the target among that many sampled items (None otherwise). The seed fixes
    tie-breaking and the sampled items, identically for every system evaluated on the same cases. `repeats`:
    the protocol for targets already in the history (module docstring)."""
    return rank_many({0: scorer}, cases, ks, batch_size=batch_size, seed=seed, sampled_negatives=sampled_negatives, repeats=repeats)[0]


class BatchShared:
    """A scorer computed once per batch of histories however many scorers built on it ask: it keeps its last
    result and hands out a copy of it for the same `histories` object (what `rank_many` passes every scorer
    of a batch). A copy, because ranking excludes the history items in place."""

    def __init__(self, scorer: Scorer):
        self.scorer = scorer
        self._histories: list[np.ndarray] | None = None
        self._scores: torch.Tensor | None = None

    def __call__(self, histories: list[np.ndarray]) -> torch.Tensor:
        if histories is not self._histories:
            self._histories, self._scores = histories, self.scorer(histories)
        return self._scores.clone()


def evaluate_cases(
    scorer: Scorer, cases: EvalCases, ks: Sequence[int], *, batch_size: int = 512, seed: int = 0, repeats: str = "allow"
) -> dict[str, float]:
    """Full-ranking metrics averaged over the cases, and coverage@k."""
    return rank_cases(scorer, cases, ks, batch_size=batch_size, seed=seed, repeats=repeats)[0].summary()


def evaluate_many(
    scorers: Mapping[Hashable, Scorer], cases: EvalCases, ks: Sequence[int], *, batch_size: int = 512, seed: int = 0, repeats: str = "allow"
) -> dict[Hashable, dict[str, float]]:
    """`evaluate_cases` of several scorers in one pass over the cases (`rank_many`)."""
    ranked = rank_many(scorers, cases, ks, batch_size=batch_size, seed=seed, repeats=repeats)
    return {key: full.summary() for key, (full, _) in ranked.items()}


def history_buckets(lengths: np.ndarray, edges: Sequence[int]) -> tuple[np.ndarray, list[str]]:
    """Bucket index of each history length and the bucket labels: edges [2, 5] give 0 (no history, as a
    temporal split can have), 1-2, 3-5 and 6+."""
    edges = sorted(int(e) for e in edges)
    labels, low = ["0"], 1
    for e in edges:
        labels.append(f"{low}-{e}" if e > low else f"{e}")
        low = e + 1
    labels.append(f"{low}+")
    lengths = np.asarray(lengths)
    return np.where(lengths == 0, 0, np.searchsorted(np.asarray(edges), lengths, side="left") + 1), labels


class HeldOutEvaluation:
    """Evaluates each system of a run on the test cases and keeps what the report needs.

    `cold_start_max`: the cold-start slice holds the cases whose target has at most this many training
    interactions. `history_edges`: upper bounds of the history-length buckets (number of items before the
    target)."""

    def __init__(
        self,
        cases: EvalCases,
        train_item_counts: np.ndarray,
        ks: Sequence[int],
        *,
        seed: int = 0,
        batch_size: int = 512,
        sampled_negatives: int | None = None,
        cold_start_max: int = 5,
        history_edges: Sequence[int] = (2, 5, 10, 20),
        domain_metrics: Callable[[Scorer], dict[str, float]] | None = None,
        repeats: str = "allow",
    ):
        self.cases, self.ks, self.seed, self.batch_size = cases, list(ks), seed, batch_size
        self.repeats = repeats
        # The domain's extra metrics of each system (e.g. finance's suitability check), on the same cases.
        self.domain_metrics = domain_metrics
        self.domain_results: dict[str, dict[str, float]] = {}
        self.sampled_negatives = sampled_negatives
        self.cold_start_max = cold_start_max
        self.cold = np.asarray(train_item_counts)[cases.targets] <= cold_start_max
        lengths = np.array([len(h) for h in cases.histories])
        self.bucket, self.bucket_labels = history_buckets(lengths, history_edges)
        self.full: dict[str, CaseResults] = {}
        self.sampled: dict[str, CaseResults] = {}

    def run(self, system: str, scorer: Scorer) -> dict[str, float]:
        """Evaluate one system; returns its full-ranking summary."""
        full, sampled = rank_cases(
            scorer, self.cases, self.ks, batch_size=self.batch_size, seed=self.seed,
            sampled_negatives=self.sampled_negatives, repeats=self.repeats,
        )
        self.full[system] = full
        if sampled is not None:
            self.sampled[system] = sampled
        if self.domain_metrics is not None:
            self.domain_results[system] = self.domain_metrics(scorer)
        return full.summary()

    def repeat_cases(self) -> int:
        """How many cases' target is already in their history (what `repeats` decides about)."""
        return int(sum(int(t in set(h.tolist())) for h, t in zip(self.cases.histories, self.cases.targets)))

    def report(self) -> dict[str, Any]:
        """The report.json sections `metrics`, `sampled`, `cold_start`, `by_history` and `domain_metrics`
        (docs/report-schema.md)."""
        cold_cases = int(self.cold.sum())
        counts = np.bincount(self.bucket, minlength=len(self.bucket_labels))
        present = [i for i, c in enumerate(counts) if c > 0]
        return {
            "protocol": {"repeats": self.repeats, "repeat_cases": self.repeat_cases()},
            "metrics": {s: r.summary() for s, r in self.full.items()},
            "sampled": {
                "negatives": self.sampled_negatives,
                "metrics": {s: r.summary() for s, r in self.sampled.items()},
            } if self.sampled_negatives else None,
            "cold_start": {
                "max_train_interactions": self.cold_start_max,
                "cases": cold_cases,
                "share": cold_cases / max(1, len(self.cases)),
                "metrics": {s: r.summary(self.cold) for s, r in self.full.items()} if cold_cases else {},
            },
            "by_history": {
                "buckets": [self.bucket_labels[i] for i in present],
                "cases": [int(counts[i]) for i in present],
                "metrics": {
                    s: {self.bucket_labels[i]: r.summary(self.bucket == i) for i in present} for s, r in self.full.items()
                },
            },
            "domain_metrics": dict(self.domain_results) if self.domain_metrics is not None else None,
        }
