"""Adapter packages: the small per-domain unit that is exported, shared and loaded onto a frozen backbone.

    <dir>/
      adapter_config.json            peft's files for the first peft-tuned modality (plain
      adapter_model.safetensors      peft.PeftModel.from_pretrained loads them onto the backbone)
      <modality>/adapter_*.{json,safetensors}   peft files of further peft-tuned modalities
      crossrec_weights.safetensors   every other trained tensor: heads, fusion, temperature, non-peft methods
      crossrec.json                  manifest: format version, model config, backbones, metrics, sha256 of files
      README.md                      model card (Hugging Face Hub metadata + metrics table)

Only safetensors are ever read; packages holding pickle files are refused. Export writes to a temporary
directory beside the target and renames it into place, so an interrupted export never leaves a half package.
The format is documented in docs/package-format.md.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file, save_file

from .errors import PackageError
from .fsutil import make_public
from .model.build import build_model
from .model.two_tower import TwoTowerModel

FORMAT_VERSION = 1
MANIFEST = "crossrec.json"
WEIGHTS = "crossrec_weights.safetensors"
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _peft_modalities(model: TwoTowerModel) -> dict[str, str]:
    """Modality -> directory (relative to the package) of its peft files; the first one sits at the root."""
    out: dict[str, str] = {}
    for name, enc in model.modalities.items():
        if enc.method.peft_based:
            out[name] = "." if not out else name
    return out


def trainable_state(model: TwoTowerModel) -> dict[str, torch.Tensor]:
    """What crossrec_weights.safetensors holds: trainable tensors that peft does not save, and the temperature."""
    peft_prefixes = tuple(f"modalities.{m}.backbone." for m in _peft_modalities(model))
    state = {
        name: p.detach().cpu().contiguous()
        for name, p in model.named_parameters()
        if p.requires_grad and not name.startswith(peft_prefixes)
    }
    state["log_temperature"] = model.log_temperature.detach().cpu().reshape(())
    return state


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for dist in ("crossrec-peft", "torch", "transformers", "peft", "accelerate", "safetensors"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out


def export_package(
    model: TwoTowerModel,
    cfg: DictConfig,
    directory: str | Path,
    *,
    metrics: dict[str, Any] | None = None,
    data_summary: dict[str, Any] | None = None,
    item_ids: list[str] | None = None,
) -> Path:
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    try:
        peft_dirs = _peft_modalities(model)
        for name, rel in peft_dirs.items():
            backbone = model.modalities[name].backbone
            peft_config = backbone.model.peft_config["default"]
            local = peft_config.base_model_name_or_path
            # peft records the path the base was loaded from (a site-packages path for the bundled MiniLM);
            # the package records the portable id instead.
            peft_config.base_model_name_or_path = backbone.model_id
            try:
                # The embeddings are frozen: never let peft look the base model up on the Hub to check.
                backbone.model.save_pretrained(str(tmp / rel), safe_serialization=True, save_embedding_layers=False)
            finally:
                peft_config.base_model_name_or_path = local
        save_file(trainable_state(model), str(tmp / WEIGHTS), metadata={"format": "pt"})

        modalities = {}
        for name, enc in model.modalities.items():
            modalities[name] = {
                "fields": list(enc.fields),
                "backbone": enc.backbone.identity(),
                "method": OmegaConf.to_container(cfg.model.modalities[name].method),
                "peft_dir": peft_dirs.get(name),
            }
        from .methods.base import count_parameters

        trainable, total = count_parameters(model)
        manifest = {
            "format_version": FORMAT_VERSION,
            "domain": cfg.domain,
            "name": cfg.name,
            "model": OmegaConf.to_container(cfg.model, resolve=True),
            "modalities": modalities,
            "dims": {"content": model.dim, "head_rank": int(cfg.model.head_rank)},
            "params": {"trainable": trainable, "total": total},
            "data": data_summary or {},
            "metrics": metrics or {},
            "versions": _versions(),
        }
        write_model_card(tmp, manifest)
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        manifest["files"] = {str(p.relative_to(tmp)): sha256(p) for p in files}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        make_public(tmp)
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            directory.rename(old)
            tmp.rename(directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def write_model_card(directory: Path, manifest: dict) -> None:
    from huggingface_hub import ModelCard, ModelCardData

    backbones = sorted({m["backbone"]["id"] for m in manifest["modalities"].values()})
    methods = sorted({m["method"]["name"] for m in manifest["modalities"].values()})
    data = ModelCardData(
        library_name="peft",
        base_model=backbones[0] if len(backbones) == 1 else backbones,
        tags=["crossrec-peft", "recommendation", manifest["domain"], *methods],
        pipeline_tag="feature-extraction",
    )
    rows = []
    for system, values in manifest.get("metrics", {}).items():
        if isinstance(values, dict):
            rows.append(f"| {system} | " + " | ".join(f"{values.get(k, float('nan')):.4f}" for k in ("recall@10", "ndcg@10", "mrr@10")) + " |")
    table = "| system | Recall@10 | NDCG@10 | MRR@10 |\n|---|---|---|---|\n" + "\n".join(rows) if rows else "No metrics recorded."
    body = f"""
# crossrec-peft adapter: {manifest['domain']}

A {', '.join(methods)} adapter for two-tower recommendation in the **{manifest['domain']}** domain, trained
with [crossrec-peft](https://pypi.org/project/crossrec-peft/) on a frozen {', '.join(backbones)} backbone.
Trainable parameters: {manifest['params']['trainable']:,} of {manifest['params']['total']:,}.

## Test metrics (full ranking, leave-one-out)
{table}

## Data
{json.dumps(manifest.get('data', {}))}

## How to load
```python
from crossrec_peft.package import load_package
model, manifest = load_package("path/to/this/folder")
```
The LoRA/IA3 part also loads with plain peft: `PeftModel.from_pretrained(AutoModel.from_pretrained("{backbones[0]}"), "path/to/this/folder")`.
"""
    ModelCard(f"---\n{data.to_yaml()}\n---\n{body}").save(str(directory / "README.md"))


def read_manifest(directory: str | Path) -> dict:
    directory = Path(directory)
    if not directory.is_dir():
        raise PackageError(f"Adapter package '{directory}' does not exist or is not a directory.")
    path = directory / MANIFEST
    if not path.is_file():
        raise PackageError(f"{directory}: no {MANIFEST}; this is not a crossrec-peft adapter package.")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise PackageError(f"{path}: not valid JSON ({exc}).") from None
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise PackageError(
            f"{path}: package format version {version!r} is not supported by this crossrec-peft "
            f"(format {FORMAT_VERSION}); see docs/package-format.md for the migration."
        )
    return manifest


def verify_files(directory: Path, manifest: dict) -> None:
    pickles = sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise PackageError(f"{directory}: refusing a package with pickle files ({', '.join(pickles)}); only safetensors are loaded.")
    for rel, expected in manifest.get("files", {}).items():
        path = directory / rel
        if not path.is_file():
            raise PackageError(f"{directory}: file '{rel}' listed in {MANIFEST} is missing.")
        if sha256(path) != expected:
            raise PackageError(f"{path}: sha256 does not match {MANIFEST}; the file was modified or truncated.")


def load_package(directory: str | Path, *, trainable: bool = False) -> tuple[TwoTowerModel, dict]:
    """Rebuild the model: fresh backbones, each modality's method restored, crossrec weights loaded."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    verify_files(directory, manifest)
    model = build_model(manifest["model"], attach_methods=False)
    for name, enc in model.modalities.items():
        recorded = manifest["modalities"][name]["backbone"]
        actual = enc.backbone.identity()
        if recorded.get("sha256") and actual.get("sha256") and recorded["sha256"] != actual["sha256"]:
            raise PackageError(
                f"{directory}: modality '{name}' was trained on backbone '{recorded['id']}' (sha256 "
                f"{recorded['sha256'][:12]}…) but the loaded backbone '{actual['id']}' has sha256 {actual['sha256'][:12]}…."
            )
        peft_dir = manifest["modalities"][name].get("peft_dir")
        if peft_dir is not None:
            enc.method.load(enc.backbone, directory / peft_dir, trainable=trainable)
        else:
            enc.method.load(enc.backbone, directory, trainable=trainable)
    state = load_file(str(directory / WEIGHTS))
    expected = trainable_state(model)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise PackageError(
            f"{directory / WEIGHTS}: does not fit the model described by {MANIFEST} "
            f"(missing: {', '.join(missing[:5]) or 'none'}; unexpected: {', '.join(unexpected[:5]) or 'none'})."
        )
    params = dict(model.named_parameters())
    params.update(dict(model.named_buffers()))
    with torch.no_grad():
        for name, value in state.items():
            target = params[name]
            if target.shape != value.shape:
                raise PackageError(f"{directory / WEIGHTS}: tensor '{name}' has shape {tuple(value.shape)}, the model expects {tuple(target.shape)}.")
            target.copy_(value)
    if not trainable:
        model.requires_grad_(False)
    model.eval()
    return model, manifest
