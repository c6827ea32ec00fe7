"""The training loop: `Trainer`, one readable class on accelerate.Accelerator (options in docs/training.md).

AdamW with decoupled weight decay over the trainable parameters (none on biases, norms and the temperature),
a linear/cosine/constant schedule after a linear warmup, gradient accumulation and clipping, mixed precision
on GPUs, validation NDCG@10 after every epoch with early stopping and the best epoch's weights restored at the
end. Checkpoints (crossrec_peft/checkpoint.py) are written every `checkpoint_every` steps and at each epoch
end; a resumed run skips the batches already done and continues exactly where the checkpoint was taken.
A non-finite loss stops training with the step, batch and learning rate named. The objective is whatever
the registry built; the loop only calls it. `Recipe` (recipe_class.py) is a Trainer with the rest of a run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Callable, Iterator

import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm

from . import checkpoint, interrupts
from .data.batching import Collator, TrainWindows
from .errors import ConfigError, CrossrecError
from .model.two_tower import TwoTowerModel
from .train_state import TrainResult, TrainState

logger = logging.getLogger(__name__)

SCHEDULES = ("linear", "cosine", "constant")


class DivergedError(CrossrecError):
    """The loss or the weights became NaN or infinite."""


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


def _all_finite(params: list[torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in params)


class Trainer:
    """The training loop as a class, so a recipe can change one part of it by overriding one method.

    `setup_training` builds the loader, optimizer and schedule and restores a checkpoint; `fit` runs epochs
    of `train_epoch` (batches, optimizer steps, step logs, mid-epoch checkpoints) and `end_epoch`
    (`validate` on the main process, early stopping, the best weights kept), `save`s a checkpoint at every
    epoch end, and puts the best epoch's weights back. Everything carried between steps is `self.state`.
    `Recipe` (recipe_class.py) adds the rest of a run around it; `train()` below runs it on its own.
    """

    def __init__(self, cfg: DictConfig, *, progress: bool = True, validate: Callable[[TwoTowerModel], dict[str, float]] | None = None):
        self.cfg = cfg
        self.progress = progress
        self._validate = validate
        self.state = TrainState()
        self.best: dict[str, torch.Tensor] | None = None  # the best epoch's trainable weights (CPU copies)
        self.last_saved: Path | None = None
        self.resumed_from: str | None = None

    def setup_training(
        self, model: TwoTowerModel, train_sequences: list, features: dict, objective: Callable, *, accelerator,
        log: MetricsLog, checkpoint_dir: Path | None = None, resume: tuple[Path, dict] | None = None, backbones: dict | None = None,
    ) -> None:
        """`checkpoint_dir` None (or train.keep_checkpoints=0) writes no checkpoints. `resume` is (directory,
        state) from `checkpoint.find_resumable`; `backbones` (the backbones' identities) is recorded in each
        checkpoint so that a resume onto different frozen weights is refused."""
        tc = self.cfg.train
        self.model, self.objective, self.accelerator, self.log, self.backbones = model, objective, accelerator, log, backbones
        needs = objective.batch_needs  # what the objective reads beyond the windows (contracts.Objective)
        self.pairs = TrainWindows(
            train_sequences, samples_per_user=tc.samples_per_user, max_history=self.cfg.model.max_history, seed=self.cfg.seed,
            values=needs.values if needs is not None else None,
        )
        if len(self.pairs) < 2:
            raise ValueError("fewer than two training windows: almost every user has a single training interaction")
        if tc.dropout is not None:
            set_dropout(model, tc.dropout)
        self.sampler = EpochShuffle(len(self.pairs), self.cfg.seed)
        loader = DataLoader(
            self.pairs,
            batch_size=tc.batch_size,
            sampler=self.sampler,
            drop_last=len(self.pairs) > tc.batch_size,  # a batch of one has no in-batch negatives
            collate_fn=Collator(features, model.collate_items, needs),
            # Its own generator: without one, every new iterator draws a seed from the global torch RNG, which a
            # resumed run (one iterator fewer) would then replay shifted, changing every later dropout mask.
            generator=torch.Generator().manual_seed(self.cfg.seed),
        )
        self.loader = accelerator.prepare(loader)  # sharded: len(loader) is this process's batches per epoch
        # The accelerator's setting (train.grad_accum_steps when made by make_accelerator) decides when steps happen.
        steps_per_epoch = math.ceil(len(self.loader) / accelerator.gradient_accumulation_steps)
        # accelerate steps a prepared scheduler once per process for each optimizer step (it assumes the schedule
        # was sized for one process), so the schedule is sized in those ticks.
        ticks = tc.epochs * steps_per_epoch * accelerator.num_processes
        optimizer = torch.optim.AdamW(parameter_groups(model, tc.weight_decay), lr=tc.lr)
        scheduler = make_scheduler(tc.schedule, optimizer, int(tc.warmup_ratio * ticks), ticks)
        self.prepared, self.optimizer, self.scheduler = accelerator.prepare(model, optimizer, scheduler)
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.checkpoint_dir = checkpoint_dir if checkpoint_dir is not None and tc.keep_checkpoints > 0 else None
        if self.checkpoint_dir is not None:
            checkpoint.install_hooks(accelerator)
        if resume is not None:
            self.restore(*resume)

    def restore(self, directory: Path, saved: dict) -> None:
        """Continue from a verified checkpoint: weights, optimizer, schedule, RNG states and `self.state`."""
        if self.backbones is not None and saved.get("backbones") != self.backbones:
            raise checkpoint.CheckpointError(
                f"{directory} was trained on other backbone weights than the ones loaded now "
                f"(checkpoint: {saved.get('backbones')}; now: {self.backbones}). Frozen weights are not in checkpoints."
            )
        checkpoint.load(self.accelerator, directory, self.model)
        self.state = TrainState.from_dict(saved, str(directory / checkpoint.STATE_FILE))
        if (directory / checkpoint.BEST_FILE).is_file():
            self.best = checkpoint.load_tensors(directory / checkpoint.BEST_FILE)
        for record in self.state.records:  # the log up to the checkpoint, as the interrupted run wrote it
            self.log.write(record)
        self.resumed_from = str(directory)
        self.last_saved = Path(directory)

    def fit(self) -> TrainResult:
        """Train in place from `self.state` on and leave the model at its best validation epoch."""
        tc, st = self.cfg.train, self.state
        started = time.perf_counter()
        for epoch in range(st.epoch, tc.epochs + 1):
            if st.done:
                break
            st.epoch = epoch
            self.train_epoch(epoch)
            self.end_epoch(epoch)
            self.save()
            if st.done:
                break
        self.restore_best()
        epochs_run = len(st.history)
        return TrainResult(
            best_epoch=st.best_epoch, best_validation=st.best_validation, epochs_run=epochs_run, steps=st.step,
            seconds=time.perf_counter() - started, stopped_early=epochs_run < tc.epochs, history=st.history,
            resumed_from=self.resumed_from,
        )

    def train_epoch(self, epoch: int) -> None:
        """One pass over the training windows (the rest of it when resuming mid-epoch)."""
        tc, st, accelerator = self.cfg.train, self.state, self.accelerator
        self.pairs.set_epoch(epoch)
        self.sampler.set_epoch(epoch)
        skip = st.batch  # batches of this epoch already done (non-zero only when resuming mid-epoch)
        batches = accelerator.skip_first_batches(self.loader, skip) if skip else self.loader
        # accelerate's loaders re-seed the sampler and dataset from their own iteration counter on every pass,
        # which restarts at 0 in a resumed run: pin it to the epoch.
        batches.set_epoch(epoch)
        self.prepared.train()
        bar = tqdm(batches, desc=f"epoch {epoch}/{tc.epochs}", disable=not self.progress, leave=False, initial=skip, total=len(self.loader))
        for batch in bar:
            interrupts.check()  # a Ctrl-C whose exception a finalizer dropped stops the run here
            index = st.batch + 1
            logs, lr = self.train_step(batch, index)
            st.batch = index
            st.loss_sum += float(logs["loss"])
            st.loss_batches += 1
            for key, value in logs.items():
                st.pending[key] = st.pending.get(key, 0.0) + float(value)
            st.pending_batches += 1
            bar.set_postfix(loss=f"{logs['loss']:.3f}")
            if not accelerator.sync_gradients:
                continue
            st.step += 1
            if st.step % tc.log_every == 0:  # the mean of each logged value since the last record
                keys = sorted(st.pending)
                means = self.reduce_mean([st.pending[k] / st.pending_batches for k in keys])
                self.record({"epoch": epoch, "step": st.step, "lr": lr, **dict(zip(keys, means))})
                st.pending, st.pending_batches = {}, 0
            if tc.checkpoint_every and st.step % tc.checkpoint_every == 0 and index < len(self.loader):
                self.save()

    def train_step(self, batch: dict, index: int) -> tuple[dict, float]:
        """Forward, loss, backward and (every grad_accum_steps batches) an optimizer step; returns the
        objective's logs and the learning rate the step used."""
        accelerator, tc = self.accelerator, self.cfg.train
        with accelerator.accumulate(self.prepared):
            outputs = self.prepared(batch)
            loss, logs = self.objective(outputs, batch)
            bad = not bool(torch.isfinite(loss.detach()).all())
            if accelerator.num_processes > 1:  # every process stops together, or the others hang in backward
                bad = bool(accelerator.reduce(torch.tensor([float(bad)], device=accelerator.device), "sum").item() > 0)
            if bad:
                self.diverged("the loss", float(loss.detach()), self.state.step + 1, index)
            accelerator.backward(loss)
            lr = self.optimizer.param_groups[0]["lr"]  # the rate this step uses (the scheduler moves it on below)
            if accelerator.sync_gradients and tc.max_grad_norm > 0:
                accelerator.clip_grad_norm_(self.trainable, tc.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad()
        return logs, lr

    def validate(self, model: TwoTowerModel) -> dict[str, float]:
        """The validation metrics of `model` (must include ndcg@10, which decides the best epoch). Runs on the
        main process only; the others receive its result."""
        if self._validate is None:
            raise NotImplementedError("Trainer.validate: pass validate= or override this method")
        return self._validate(model)

    def end_epoch(self, epoch: int) -> None:
        """Validate, log the epoch, keep the best weights, decide early stopping and move the state on."""
        from accelerate.utils import broadcast_object_list

        tc, st, accelerator = self.cfg.train, self.state, self.accelerator
        # Validation on the main process only (the others wait): the same code and numbers as a one-process run.
        result = [self.validate(accelerator.unwrap_model(self.prepared)) if accelerator.is_main_process else None]
        validation = broadcast_object_list(result)[0] if accelerator.num_processes > 1 else result[0]
        train_loss = self.reduce_mean([st.loss_sum / max(1, st.loss_batches)])[0]
        entry = {"epoch": epoch, "step": st.step, "split": "validation", "train_loss": train_loss, **validation}
        self.record(entry)
        st.history.append(entry)
        score = validation["ndcg@10"]
        if st.best_score is None or score > st.best_score:
            st.best_score, st.best_epoch, st.best_validation, st.bad_epochs = score, epoch, validation, 0
            self.best = {n: t.detach().clone().cpu() for n, t in checkpoint.trainable_state(self.model).items()}
        else:
            st.bad_epochs += 1
            if st.bad_epochs >= tc.patience:
                st.done = True
        st.epoch, st.batch, st.loss_sum, st.loss_batches = epoch + 1, 0, 0.0, 0
        if epoch == tc.epochs:
            st.done = True

    def save(self) -> None:
        """Write a checkpoint of the current step (every process calls it: it is collective)."""
        if self.checkpoint_dir is None:
            return
        if not _all_finite(self.trainable):
            self.diverged("the weights", float("nan"), self.state.step)
        state = {**self.state.to_dict(), "fingerprint": checkpoint.fingerprint(self.cfg), "backbones": self.backbones}
        self.last_saved = checkpoint.write(
            self.accelerator, self.checkpoint_dir, self.state.step, self.model, state, self.best, self.cfg.train.keep_checkpoints
        )

    def restore_best(self) -> None:
        if self.best is None:
            return
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, value in self.best.items():
                params[name].copy_(value.to(params[name].device, params[name].dtype))

    def diverged(self, what: str, value: float, step: int, batch: int | None = None) -> None:
        tc, st, last = self.cfg.train, self.state, self.last_saved
        where = f"epoch {st.epoch}, batch {batch} of {len(self.loader)}" if batch else f"epoch {st.epoch}"
        kept = (
            f"The last good checkpoint is kept: {last} (step {last.name.removeprefix(checkpoint.PREFIX).lstrip('0') or 0})."
            if last is not None else "No checkpoint had been written yet."
        )
        raise DivergedError(
            f"Training diverged: {what} became {value} at step {step} ({where}); the last learning rate "
            f"was {self.optimizer.param_groups[0]['lr']:.3g}. {kept} Lower train.lr (now {tc.lr}), keep "
            f"train.max_grad_norm > 0 (now {tc.max_grad_norm}), or train in fp32 (train.mixed_precision=no)."
        )

    def reduce_mean(self, values: list[float]) -> list[float]:
        """The mean over processes of each value (the values themselves on one process)."""
        if self.accelerator.num_processes == 1:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=self.accelerator.device)
        return self.accelerator.reduce(tensor, "mean").tolist()

    def record(self, entry: dict) -> None:
        """Write to metrics.jsonl and keep it in the state (a resumed run replays the records)."""
        self.state.records.append(entry)
        self.log.write(entry)


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
    """Train `model` in place with a `Trainer` and leave it at its best validation epoch (the ID baseline's
    training and callers that bring their own model, data and validation)."""
    trainer = Trainer(cfg, progress=progress, validate=validate)
    trainer.setup_training(
        model, train_sequences, features, objective, accelerator=accelerator, log=log,
        checkpoint_dir=checkpoint_dir, resume=resume, backbones=backbones,
    )
    return trainer.fit()
