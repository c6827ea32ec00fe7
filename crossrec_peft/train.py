"""The training loop: one readable loop on accelerate.Accelerator.

AdamW over the trainable parameters (no weight decay on biases, norms and the temperature), linear warmup
and decay, gradient clipping, validation NDCG@10 after every epoch with early stopping, and the best epoch's
weights restored at the end. The objective is whatever the registry built; the loop only calls it.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .data.batching import Collator, TrainWindows
from .model.two_tower import TwoTowerModel


@dataclass
class TrainResult:
    best_epoch: int
    best_validation: dict[str, float]
    epochs_run: int
    steps: int
    seconds: float
    stopped_early: bool
    history: list[dict] = field(default_factory=list)


class MetricsLog:
    """Appends one JSON object per line to metrics.jsonl."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict) -> None:
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record) + "\n")


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def linear_warmup_decay(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train(
    model: TwoTowerModel,
    train_sequences: list,
    features: dict,
    objective: Callable,
    cfg: DictConfig,
    *,
    accelerator,
    validate: Callable[[TwoTowerModel], dict[str, float]],
    log: MetricsLog,
    progress: bool = True,
) -> TrainResult:
    tc = cfg.train
    pairs = TrainWindows(train_sequences, samples_per_user=tc.samples_per_user, max_history=cfg.model.max_history, seed=cfg.seed)
    if len(pairs) < 2:
        raise ValueError("fewer than two training windows: almost every user has a single training interaction")
    loader = DataLoader(
        pairs,
        batch_size=tc.batch_size,
        shuffle=True,
        drop_last=len(pairs) > tc.batch_size,  # a batch of one has no in-batch negatives
        collate_fn=Collator(features, model.collate_items),
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    optimizer = torch.optim.AdamW(parameter_groups(model, tc.weight_decay), lr=tc.lr)
    total_steps = tc.epochs * math.ceil(len(loader) / accelerator.num_processes)
    scheduler = linear_warmup_decay(optimizer, int(tc.warmup_ratio * total_steps), total_steps)
    prepared, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)

    best_score, best_epoch, best_state, best_validation = -math.inf, 0, None, {}
    bad_epochs, step, history = 0, 0, []
    started = time.perf_counter()
    epoch = 0
    for epoch in range(1, tc.epochs + 1):
        pairs.set_epoch(epoch)
        prepared.train()
        bar = tqdm(loader, desc=f"epoch {epoch}/{tc.epochs}", disable=not progress, leave=False)
        running = 0.0
        for batch in bar:
            outputs = prepared(batch)
            loss, logs = objective(outputs, batch)
            accelerator.backward(loss)
            if tc.max_grad_norm > 0:
                accelerator.clip_grad_norm_([p for p in prepared.parameters() if p.requires_grad], tc.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            running += logs["loss"]
            bar.set_postfix(loss=f"{logs['loss']:.3f}")
            if step % tc.log_every == 0:
                log.write({"epoch": epoch, "step": step, "lr": scheduler.get_last_lr()[0], **logs})
        validation = validate(accelerator.unwrap_model(prepared))
        score = validation["ndcg@10"]
        record = {"epoch": epoch, "step": step, "split": "validation", "train_loss": running / max(1, len(loader)), **validation}
        log.write(record)
        history.append(record)
        if score > best_score:
            best_score, best_epoch, best_validation, bad_epochs = score, epoch, validation, 0
            best_state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        else:
            bad_epochs += 1
            if bad_epochs >= tc.patience:
                break
    if best_state is not None:
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in best_state.items():
                params[name].copy_(value)
    return TrainResult(
        best_epoch=best_epoch,
        best_validation=best_validation,
        epochs_run=epoch,
        steps=step,
        seconds=time.perf_counter() - started,
        stopped_early=epoch < tc.epochs,
        history=history,
    )
