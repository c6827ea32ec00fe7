"""Full-ranking evaluation over the whole catalog, for the model and the baselines in the same run.

For each user the scores of the items already in the user's history are set to -inf (the target itself is
never excluded, so a repeat purchase can still be found), then the metrics of `metrics.py` are averaged
over users.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .data.split import EvalCases
from .metrics import exclude, ranking_metrics, target_ranks
from .model.two_tower import TwoTowerModel

Scorer = Callable[[list[np.ndarray]], torch.Tensor]  # histories of a block of users -> scores [users, items]


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
    names = [n for n, enc in model.modalities.items() if getattr(enc.backbone, "pretrained_weights", True)] or list(model.modalities)
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
def model_scorer(model: TwoTowerModel, content: torch.Tensor, max_history: int) -> Scorer:
    model.eval()
    device = next(model.parameters()).device
    items = model.item_vectors(content.to(device)).float()

    def score(histories: list[np.ndarray]) -> torch.Tensor:
        index, mask = pad_histories(histories, max_history)
        users = model.user_vectors(content[index].to(device), mask.to(device))
        return (users.float() @ items.T).cpu()

    return score


def popularity_scorer(counts: np.ndarray) -> Scorer:
    scores = torch.as_tensor(counts, dtype=torch.float32)

    def score(histories: list[np.ndarray]) -> torch.Tensor:
        return scores.expand(len(histories), -1).clone()

    return score


@torch.no_grad()
def evaluate_cases(scorer: Scorer, cases: EvalCases, ks: list[int], *, batch_size: int = 512, seed: int = 0) -> dict[str, float]:
    generator = torch.Generator().manual_seed(seed)  # tie-breaking, identical for every system
    sums: dict[str, float] = {}
    for start in range(0, len(cases), batch_size):
        histories = cases.histories[start : start + batch_size]
        targets = torch.as_tensor(cases.targets[start : start + batch_size])
        scores = scorer(histories).float()
        rows = np.concatenate([np.full(len(h), r) for r, h in enumerate(histories)]) if histories else np.array([])
        cols = np.concatenate(histories) if histories else np.array([])
        keep = cols != np.repeat(targets.numpy(), [len(h) for h in histories])
        exclude(scores, torch.as_tensor(rows[keep], dtype=torch.long), torch.as_tensor(cols[keep], dtype=torch.long))
        values = ranking_metrics(target_ranks(scores, targets, generator), ks)
        for name, v in values.items():
            sums[name] = sums.get(name, 0.0) + float(v.sum())
    return {name: total / len(cases) for name, total in sums.items()}
