"""The training loop: one readable loop on accelerate.Accelerator (options in docs/training.md).

AdamW with decoupled weight decay over the trainable parameters (none on biases, norms and the temperature),
a linear/cosine/constant schedule after a linear warmup, gradient accumulation and clipping, mixed precision
on GPUs, validation NDCG@10 after every epoch with early stopping and the best epoch's weights restored at the
end. Checkpoints (crossrec_peft/checkpoint.py) are written every `checkpoint_every` steps and at each epoch
end; a resumed run skips the batches already done and continues exactly where the checkpoint was taken.
A non-finite loss stops training with the step, batch and learning rate named. The objective is whatever
the registry built; the loop only calls it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm

from . import checkpoint
from .data.batching import Collator, TrainWindows
from .errors import ConfigError, CrossrecError
from .model.two_tower import TwoTowerModel

logger = logging.getLogger(__name__)

SCHEDULES = ("linear", "cosine", "constant")


class DivergedError(CrossrecError):
    """The loss or the weights became NaN or infinite."""


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


class MetricsLog:
    """Appends one JSON object per line to metrics.jsonl (only where `enabled`: the main process)."""

    def __init__(self, path: Path, *, enabled: bool = True):
        self.path = path
        self.enabled = enabled
        if enabled:
            path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record) + "\n")


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_accelerator(cfg: DictConfig):
    """The Accelerator for a run: the config's precision where the device has it, fp32 on CPU (with a warning)."""
    from datetime import timedelta

    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, DistributedType, InitProcessGroupKwargs

    tc = cfg.train
    precision = tc.mixed_precision
    on_gpu = not tc.cpu and torch.cuda.is_available()
    if precision != "no" and not on_gpu:
        logger.warning(
            "train.mixed_precision=%s needs a CUDA GPU; this run trains on the CPU in fp32 instead.", precision
        )
        precision = "no"
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise ConfigError("train.mixed_precision=bf16: this GPU has no bfloat16 support; use fp16 (or no).")
    if tc.deterministic:
        # cuBLAS needs a fixed workspace for reproducible matmuls; set before the first CUDA call.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    accelerator = Accelerator(
        cpu=tc.cpu,
        mixed_precision=precision,
        gradient_accumulation_steps=tc.grad_accum_steps,
        kwargs_handlers=[
            # With several modalities a batch may leave one tower unused (its modality absent from every item of
            # the batch); DDP must then look for unused parameters, which costs a graph traversal per step.
            DistributedDataParallelKwargs(find_unused_parameters=len(cfg.model.modalities) > 1),
            # Validation runs on the main process while the others wait: allow for a large catalog.
            InitProcessGroupKwargs(timeout=timedelta(hours=2)),
        ],
    )
    kind = accelerator.distributed_type
    if kind in (DistributedType.DEEPSPEED, DistributedType.FSDP, DistributedType.MEGATRON_LM):
        # Checkpoints hold the unsharded trainable parameters; sharded engines would save and restore them
        # differently (docs/training.md, "DeepSpeed and FSDP").
        raise ConfigError(
            f"accelerate is configured for {kind.value}, which crossrec-peft does not support: PEFT trains a small share of "
            "the weights, so plain data parallelism (DDP, `accelerate config` -> multi-GPU) is what applies."
        )
    return accelerator


def make_scheduler(name: str, optimizer: torch.optim.Optimizer, warmup: int, total: int):
    from transformers import get_scheduler

    if name not in SCHEDULES:
        raise ConfigError(f"'train.schedule' must be one of {', '.join(SCHEDULES)}, got '{name}'.")
    return get_scheduler("constant_with_warmup" if name == "constant" else name, optimizer, num_warmup_steps=warmup, num_training_steps=total)


def set_dropout(model: nn.Module, p: float) -> int:
    """Set every dropout probability in the model (backbones, methods, fusion) to `p`; returns how many."""
    count = 0
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = p
            count += 1
        elif isinstance(module, nn.MultiheadAttention):
            module.dropout = p
            count += 1
    return count


class EpochShuffle(Sampler[int]):
    """A permutation that depends only on (seed, epoch), so a resumed run sees the same order."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())


def _fresh_state() -> dict[str, Any]:
    return {
        "epoch": 1, "batch": 0, "step": 0, "loss_sum": 0.0, "loss_batches": 0,
        "best_score": None, "best_epoch": 0, "best_validation": {}, "bad_epochs": 0,
        "history": [], "records": [], "done": False, "pending": {}, "pending_batches": 0,
    }


def _all_finite(params: list[torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in params)


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
    checkpoint_dir: Path | None = None,
    resume: tuple[Path, dict] | None = None,
    backbones: dict | None = None,
) -> TrainResult:
    """Train `model` in place and leave it at its best validation epoch.

    `checkpoint_dir` None (or train.keep_checkpoints=0) writes no checkpoints. `resume` is
    (directory, state) from `checkpoint.find_resumable`; `backbones` (the backbones' identities) is recorded
    in each checkpoint so that a resume onto different frozen weights is refused.
    """
    from accelerate.utils import broadcast_object_list

    tc = cfg.train
    needs = objective.batch_needs  # what the objective reads beyond the windows (contracts.Objective)
    pairs = TrainWindows(
        train_sequences, samples_per_user=tc.samples_per_user, max_history=cfg.model.max_history, seed=cfg.seed,
        values=needs.values if needs is not None else None,
    )
    if len(pairs) < 2:
        raise ValueError("fewer than two training windows: almost every user has a single training interaction")
    if tc.dropout is not None:
        set_dropout(model, tc.dropout)
    sampler = EpochShuffle(len(pairs), cfg.seed)
    loader = DataLoader(
        pairs,
        batch_size=tc.batch_size,
        sampler=sampler,
        drop_last=len(pairs) > tc.batch_size,  # a batch of one has no in-batch negatives
        collate_fn=Collator(features, model.collate_items, needs),
        # Its own generator: without one, every new iterator draws a seed from the global torch RNG, which a
        # resumed run (one iterator fewer) would then replay shifted, changing every later dropout mask.
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    loader = accelerator.prepare(loader)  # sharded: len(loader) is this process's batches per epoch
    # The accelerator's setting (train.grad_accum_steps when made by make_accelerator) decides when steps happen.
    steps_per_epoch = math.ceil(len(loader) / accelerator.gradient_accumulation_steps)
    # accelerate steps a prepared scheduler once per process for each optimizer step (it assumes the schedule
    # was sized for one process), so the schedule is sized in those ticks.
    ticks = tc.epochs * steps_per_epoch * accelerator.num_processes
    optimizer = torch.optim.AdamW(parameter_groups(model, tc.weight_decay), lr=tc.lr)
    scheduler = make_scheduler(tc.schedule, optimizer, int(tc.warmup_ratio * ticks), ticks)
    prepared, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    trainable = [p for p in model.parameters() if p.requires_grad]
    saving = checkpoint_dir is not None and tc.keep_checkpoints > 0
    if saving:
        checkpoint.install_hooks(accelerator)

    st, best = _fresh_state(), None
    resumed_from = None
    if resume is not None:
        directory, saved = resume
        if backbones is not None and saved.get("backbones") != backbones:
            raise checkpoint.CheckpointError(
                f"{directory} was trained on other backbone weights than the ones loaded now "
                f"(checkpoint: {saved.get('backbones')}; now: {backbones}). Frozen weights are not in checkpoints."
            )
        checkpoint.load(accelerator, directory, model)
        st.update({k: saved[k] for k in st})
        if (directory / checkpoint.BEST_FILE).is_file():
            best = checkpoint.load_tensors(directory / checkpoint.BEST_FILE)
        for record in st["records"]:  # the log up to the checkpoint, as the interrupted run wrote it
            log.write(record)
        resumed_from = str(directory)
    last_saved: Path | None = Path(resume[0]) if resume is not None else None

    def save() -> None:
        nonlocal last_saved
        if not saving:
            return
        if not _all_finite(trainable):
            diverged("the weights", float("nan"), st["step"])
        state = {**st, "fingerprint": checkpoint.fingerprint(cfg), "backbones": backbones}
        last_saved = checkpoint.write(accelerator, checkpoint_dir, st["step"], model, state, best, tc.keep_checkpoints)

    def diverged(what: str, value: float, step: int, batch: int | None = None) -> None:
        where = f"epoch {st['epoch']}, batch {batch} of {len(loader)}" if batch else f"epoch {st['epoch']}"
        kept = (
            f"The last good checkpoint is kept: {last_saved} (step {last_saved.name.removeprefix(checkpoint.PREFIX).lstrip('0') or 0})."
            if last_saved is not None else "No checkpoint had been written yet."
        )
        raise DivergedError(
            f"Training diverged: {what} became {value} at step {step} ({where}); the last learning rate "
            f"was {optimizer.param_groups[0]['lr']:.3g}. {kept} Lower train.lr (now {tc.lr}), keep "
            f"train.max_grad_norm > 0 (now {tc.max_grad_norm}), or train in fp32 (train.mixed_precision=no)."
        )

    def reduce_mean(values: list[float]) -> list[float]:
        if accelerator.num_processes == 1:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=accelerator.device)
        return accelerator.reduce(tensor, "mean").tolist()

    def record(entry: dict) -> None:
        st["records"].append(entry)
        log.write(entry)

    started = time.perf_counter()
    start_epoch = st["epoch"]
    for epoch in range(start_epoch, tc.epochs + 1):
        if st["done"]:
            break
        st["epoch"] = epoch
        pairs.set_epoch(epoch)
        sampler.set_epoch(epoch)
        skip = st["batch"]  # batches of this epoch already done (non-zero only when resuming mid-epoch)
        batches = accelerator.skip_first_batches(loader, skip) if skip else loader
        # accelerate's loaders re-seed the sampler and dataset from their own iteration counter on every pass,
        # which restarts at 0 in a resumed run: pin it to the epoch.
        batches.set_epoch(epoch)
        prepared.train()
        bar = tqdm(batches, desc=f"epoch {epoch}/{tc.epochs}", disable=not progress, leave=False, initial=skip, total=len(loader))
        for batch in bar:
            index = st["batch"] + 1
            with accelerator.accumulate(prepared):
                outputs = prepared(batch)
                loss, logs = objective(outputs, batch)
                bad = not bool(torch.isfinite(loss.detach()).all())
                if accelerator.num_processes > 1:  # every process stops together, or the others hang in backward
                    bad = bool(accelerator.reduce(torch.tensor([float(bad)], device=accelerator.device), "sum").item() > 0)
                if bad:
                    diverged("the loss", float(loss.detach()), st["step"] + 1, index)
                accelerator.backward(loss)
                lr = optimizer.param_groups[0]["lr"]  # the rate this step uses (the scheduler moves it on below)
                if accelerator.sync_gradients and tc.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(trainable, tc.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            st["batch"] = index
            st["loss_sum"] += float(logs["loss"])
            st["loss_batches"] += 1
            for key, value in logs.items():
                st["pending"][key] = st["pending"].get(key, 0.0) + float(value)
            st["pending_batches"] += 1
            bar.set_postfix(loss=f"{logs['loss']:.3f}")
            if not accelerator.sync_gradients:
                continue
            st["step"] += 1
            if st["step"] % tc.log_every == 0:  # the mean of each logged value since the last record
                keys = sorted(st["pending"])
                means = reduce_mean([st["pending"][k] / st["pending_batches"] for k in keys])
                record({"epoch": epoch, "step": st["step"], "lr": lr, **dict(zip(keys, means))})
                st["pending"], st["pending_batches"] = {}, 0
            if tc.checkpoint_every and st["step"] % tc.checkpoint_every == 0 and index < len(loader):
                save()

        # Validation on the main process only (the others wait): the same code and numbers as a one-process run.
        result = [validate(accelerator.unwrap_model(prepared)) if accelerator.is_main_process else None]
        validation = broadcast_object_list(result)[0] if accelerator.num_processes > 1 else result[0]
        train_loss = reduce_mean([st["loss_sum"] / max(1, st["loss_batches"])])[0]
        entry = {"epoch": epoch, "step": st["step"], "split": "validation", "train_loss": train_loss, **validation}
        record(entry)
        st["history"].append(entry)
        score = validation["ndcg@10"]
        if st["best_score"] is None or score > st["best_score"]:
            st.update(best_score=score, best_epoch=epoch, best_validation=validation, bad_epochs=0)
            best = {n: t.detach().clone().cpu() for n, t in checkpoint.trainable_state(model).items()}
        else:
            st["bad_epochs"] += 1
            if st["bad_epochs"] >= tc.patience:
                st["done"] = True
        st["epoch"], st["batch"], st["loss_sum"], st["loss_batches"] = epoch + 1, 0, 0.0, 0
        if epoch == tc.epochs:
            st["done"] = True
        save()
        if st["done"]:
            break
    if best is not None:
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in best.items():
                params[name].copy_(value.to(params[name].device, params[name].dtype))
    epochs_run = len(st["history"])
    return TrainResult(
        best_epoch=st["best_epoch"],
        best_validation=st["best_validation"],
        epochs_run=epochs_run,
        steps=st["step"],
        seconds=time.perf_counter() - started,
        stopped_early=epochs_run < tc.epochs,
        history=st["history"],
        resumed_from=resumed_from,
    )
