"""Training checkpoints: small, atomic, verified, and refused loudly when they do not fit the run.

A checkpoint is a directory ``<run_dir>/checkpoints/step-<N>`` written by ``accelerator.save_state``
(optimizer, scheduler, gradient scaler, every process's RNG state) plus two files of ours:

    trainable.safetensors   the trainable parameters only: a frozen backbone is rebuilt from its own files
                            (whose sha256 the state records), so a LoRA checkpoint is kilobytes, not the model
    best.safetensors        the trainable parameters of the best epoch so far (restored at the end of training)
    trainer_state.json      data position (epoch, batches done), early-stopping state, the metrics log so far,
                            the config fingerprint, the backbones' identities and a sha256 of every other file

It is written into a temporary sibling directory and renamed into place only when complete, so a process
killed while saving leaves the previous checkpoint as the latest. Only the newest `keep` are kept.

Loading verifies every file's hash and the fingerprint before anything is restored: a corrupt, truncated or
incompatible checkpoint raises `CheckpointError` (exit code 2) naming the problem; it never falls back to a
fresh start. accelerate reads its own files with ``torch.load(weights_only=True)`` (no arbitrary unpickling);
ours are safetensors and JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from .config import flat_keys
from .errors import CheckpointError, CrossrecError  # CheckpointError re-exported: where it was defined before
from .fsutil import make_public, sha256

FORMAT = 1
STATE_FILE = "trainer_state.json"
TRAINABLE_FILE = "trainable.safetensors"
BEST_FILE = "best.safetensors"
PREFIX = "step-"

# Keys that may change between a run and its resumption: they decide where and how often things are written,
# not what is computed. Everything else in seed/data/model/train must match.
RESUMABLE_CHANGES = {
    "train.resume", "train.keep_checkpoints", "train.checkpoint_every", "train.log_every", "train.eval_batch_size",
}


def fingerprint(cfg: DictConfig) -> dict[str, Any]:
    """The parts of the config that determine the training trajectory, flattened to dotted keys."""
    flat: dict[str, Any] = {"seed": cfg.seed}
    for section in ("data", "model", "train"):
        flat.update(flat_keys(OmegaConf.to_container(cfg[section], resolve=True), section))
    if cfg.get("recipe_class"):  # another training loop is another trajectory (absent when the default runs,
        flat["recipe_class"] = cfg.recipe_class  # so checkpoints of default runs keep their fingerprint)
    return {k: v for k, v in flat.items() if k not in RESUMABLE_CHANGES}


def changed_keys(before: dict[str, Any], now: dict[str, Any], label: str) -> str:
    """The dotted keys whose values differ between two flattened configs, shown as 'key: <label> old, now new'
    (the first five, and how many more); '' when none differ. For the refusals of a resume (here and rundir.py)."""
    changed = sorted(k for k in set(before) | set(now) if before.get(k, "<absent>") != now.get(k, "<absent>"))
    shown = "; ".join(f"{k}: {label} {before.get(k, '<absent>')!r}, now {now.get(k, '<absent>')!r}" for k in changed[:5])
    return shown + (f" (and {len(changed) - 5} more)" if len(changed) > 5 else "")


def checkpoint_dirs(root: Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first (temporary directories of an interrupted save are not)."""
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        if path.is_dir() and path.name.startswith(PREFIX) and path.name[len(PREFIX):].isdigit():
            found.append((int(path.name[len(PREFIX):]), path))
    return [p for _, p in sorted(found)]


def latest(root: Path) -> Path | None:
    dirs = checkpoint_dirs(root)
    return dirs[-1] if dirs else None


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().contiguous() for name, p in model.named_parameters() if p.requires_grad}


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from .fsutil import save_safetensors

    save_safetensors({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, path)


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for truncated/garbled headers
        raise CheckpointError(f"{path}: cannot be read as safetensors ({exc}). The checkpoint is corrupt.") from None


def load_trainable(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: Path) -> None:
    """Copy `tensors` into the model's trainable parameters; the names and shapes must match exactly."""
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    missing = sorted(set(params) - set(tensors))
    unexpected = sorted(set(tensors) - set(params))
    wrong = sorted(n for n in set(params) & set(tensors) if tuple(params[n].shape) != tuple(tensors[n].shape))
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} trainable parameters missing (first: {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} parameters this model does not train (first: {unexpected[0]})")
        if wrong:
            n = wrong[0]
            parts.append(f"shape mismatch for {n}: checkpoint {tuple(tensors[n].shape)}, model {tuple(params[n].shape)}")
        raise CheckpointError(f"{source} does not fit this model: {'; '.join(parts)}.")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(tensors[name].to(p.device, p.dtype))


def write(accelerator, root: Path, step: int, model: torch.nn.Module, state: dict[str, Any], best: dict[str, torch.Tensor] | None, keep: int) -> Path:
    """Save a checkpoint for optimizer step `step` atomically; every process must call this (collective)."""
    root.mkdir(parents=True, exist_ok=True)
    # Every process writes its RNG state into the same directory, so rank 0 makes it and tells the others.
    from accelerate.utils import broadcast_object_list

    name = [tempfile.mkdtemp(prefix=f".tmp-{PREFIX}{step}-", dir=root) if accelerator.is_main_process else None]
    tmp = Path(broadcast_object_list(name)[0])
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    final = root / f"{PREFIX}{step:08d}"
    if accelerator.is_main_process:
        save_tensors(tmp / TRAINABLE_FILE, trainable_state(model))
        if best is not None:
            save_tensors(tmp / BEST_FILE, best)
        files = {p.name: sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        record = {"format": FORMAT, "step": step, "num_processes": accelerator.num_processes, "files": files, **state}
        with open(tmp / STATE_FILE, "w") as fh:
            json.dump(record, fh)
            fh.flush()
            os.fsync(fh.fileno())
        make_public(tmp)
        if final.exists():  # a rerun of the same step after a resume: the new one replaces it
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in checkpoint_dirs(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        for stale in root.glob(f".tmp-{PREFIX}*"):  # left by a process killed while saving
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def read_state(directory: Path, cfg: DictConfig, num_processes: int) -> dict[str, Any]:
    """Verify a checkpoint and return its trainer state; raises CheckpointError when it cannot be resumed."""
    state_path = directory / STATE_FILE
    if not state_path.is_file():
        raise CheckpointError(f"{directory}: {STATE_FILE} is missing, so this is not a complete checkpoint.")
    try:
        state = json.loads(state_path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{state_path}: cannot be read ({type(exc).__name__}: {exc}). The checkpoint is corrupt.") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{state_path}: holds a JSON {type(state).__name__}, not an object. The checkpoint is corrupt.")
    if state.get("format") != FORMAT:
        raise CheckpointError(f"{state_path}: checkpoint format {state.get('format')!r}, this version reads format {FORMAT}.")
    _check_own_keys(state_path, state)
    from .train_state import TrainState  # (train_state imports this module)

    TrainState.check(state, str(state_path))  # before the run writes anything: a bad state changes nothing
    files = state["files"]
    for name, digest in files.items():
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"{directory}: file {name} is missing. The checkpoint is incomplete.")
        if sha256(path) != digest:
            raise CheckpointError(f"{path}: contents do not match the checksum recorded when it was saved. The checkpoint is corrupt.")
    if state["num_processes"] != num_processes:
        raise CheckpointError(
            f"{directory} was written by {state['num_processes']} process(es) and this run has {num_processes}: the data "
            "shards and random states would not line up. Resume with the same number of processes."
        )
    changed = changed_keys(state.get("fingerprint", {}), fingerprint(cfg), "checkpoint")
    if changed:
        raise CheckpointError(
            f"{directory} was written with a different configuration, so resuming would not continue the same run: "
            f"{changed}. Resume with the run's own config ({directory.parent.parent / 'config.yaml'}) or start a new run directory."
        )
    return state


def _check_own_keys(state_path: Path, state: dict[str, Any]) -> None:
    """The checkpoint's own keys of trainer_state.json (beside TrainState's), with the types `write` gives them."""

    def bad(key: str, wanted: str) -> CheckpointError:
        found = "missing" if key not in state else f"a JSON {type(state[key]).__name__} ({_short(state[key])})"
        return CheckpointError(f"{state_path}: key '{key}' must be {wanted}, but it is {found}. The checkpoint is corrupt or was edited.")

    files = state.get("files")
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise bad("files", "an object mapping file names to sha256 digests")
    for key in ("num_processes", "step"):
        value = state.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < (1 if key == "num_processes" else 0):
            raise bad(key, "a positive integer" if key == "num_processes" else "a non-negative integer")
    if not isinstance(state.get("fingerprint", {}), dict):
        raise bad("fingerprint", "an object")


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def find_resumable(run_dir: Path, cfg: DictConfig, num_processes: int) -> tuple[Path, dict[str, Any]]:
    """The latest checkpoint of `run_dir`, verified. No checkpoint at all is an error, not a fresh start."""
    root = run_dir / "checkpoints"
    found = latest(root)
    if found is None:
        raise CheckpointError(
            f"Nothing to resume: {root} holds no checkpoint. Checkpoints are written at every epoch end and every "
            "train.checkpoint_every steps unless train.keep_checkpoints=0; run without resume to start afresh."
        )
    return found, read_state(found, cfg, num_processes)


def load(accelerator, directory: Path, model: torch.nn.Module) -> None:
    """Restore model (trainable part), optimizer, scheduler and RNG states from a verified checkpoint."""
    load_trainable(model, load_tensors(directory / TRAINABLE_FILE), directory / TRAINABLE_FILE)
    try:
        accelerator.load_state(str(directory))
    except CrossrecError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{directory}: accelerate could not restore the training state ({type(exc).__name__}: {exc}).") from None


def install_hooks(accelerator) -> None:
    """Keep model weights out of accelerate's own files: ours (trainable.safetensors) hold only what trains."""

    def drop_weights(models, weights, output_dir):
        weights.clear()

    def skip_models(models, input_dir):
        models.clear()

    accelerator.register_save_state_pre_hook(drop_weights)
    accelerator.register_load_state_pre_hook(skip_models)
