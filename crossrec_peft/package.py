"""Adapter packages: the small per-domain unit that is exported, shared and loaded onto a frozen backbone.

    <dir>/
      adapter_config.json            peft's files for the first peft-tuned modality (plain
      adapter_model.safetensors      peft.PeftModel.from_pretrained loads them onto the backbone)
      <modality>/adapter_*.{json,safetensors}   peft files of further peft-tuned modalities
      crossrec_weights.safetensors   every other tensor trained on top of the backbones: heads, fusion,
                                     temperature, non-peft methods (bottleneck adapters)
      <modality>_tower.safetensors   a whole tower trained by the `full` method (e.g. the demo's image tower
                                     trained from scratch): not an adapter, so kept apart and sized apart
      crossrec.json                  manifest: format version, id, parent, config, backbones, data, metrics,
                                     library versions, sha256 of every other file, and package_sha256 over
                                     the manifest itself (what integrity covers: manifest.py)
      README.md                      model card (Hugging Face Hub metadata + metrics table)

Only safetensors are ever read; packages holding pickle files are refused. Export writes to a temporary
directory beside the target and renames it into place; the manifest is written last, so an interrupted
export never leaves a half package that loads. The format and its migration rule are documented in
docs/package-format.md.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import inspect
import json
import platform
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file

from .backbones.base import CatalogTable
from .errors import ConfigError, PackageError
from .fsutil import atomic_directory, atomic_file, make_public, save_safetensors, sha256
from .hybrid import FILE as HYBRID_FILE
from .hybrid import HybridChoice, HybridRanking, Neighbours
from .manifest import canonical_sha256, check_listing, check_peft_configs, check_safetensors, check_schema, check_sealed
from .methods.base import Method, Storage
from .methods.peft_methods import PEFT_WEIGHTS, adapter_tensors, check_peft_tensors  # peft's weight file name, said once
from .model.build import build_model
from .model.heads import build_head
from .model.two_tower import TwoTowerModel

FORMAT_VERSION = 3
MANIFEST = "crossrec.json"
WEIGHTS = "crossrec_weights.safetensors"
TOWER_SUFFIX = "_tower.safetensors"
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"}
DOCS = "docs/package-format.md"


def _peft_modalities(model: TwoTowerModel) -> dict[str, str]:
    """Modality -> directory (relative to the package) of its method's own files (peft's); the first at the root."""
    out: dict[str, str] = {}
    for name, enc in model.modalities.items():
        if enc.method.storage is Storage.PEFT:
            out[name] = "." if not out else name
    return out


def _tower_modalities(model: TwoTowerModel) -> list[str]:
    """Modalities whose whole backbone is the method's weights (`Storage.TOWER`): a tower, not an adapter."""
    return [name for name, enc in model.modalities.items() if enc.method.storage is Storage.TOWER]


def exported_state(model: TwoTowerModel) -> dict[str, torch.Tensor]:
    """Every tensor the package's safetensors files hold: each modality's method's exported backbone tensors
    (`Method.exported_state`), every other trainable tensor (heads, fusion, user encoder) and the temperature."""
    state: dict[str, torch.Tensor] = {}
    for name, enc in model.modalities.items():
        prefix = f"modalities.{name}.backbone."
        state.update({prefix + k: p.detach().cpu().contiguous() for k, p in enc.method.exported_state(enc.backbone).items()})
    backbones = tuple(f"modalities.{m}.backbone." for m in model.modalities)
    state.update({
        name: p.detach().cpu().contiguous()
        for name, p in model.named_parameters()
        if p.requires_grad and not name.startswith(backbones)
    })
    state["log_temperature"] = model.log_temperature.detach().cpu().reshape(())
    return state


def _split_state(model: TwoTowerModel, state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """File name -> tensors: towers of `full` modalities each in their own file, the rest in WEIGHTS."""
    files: dict[str, dict[str, torch.Tensor]] = {WEIGHTS: {}}
    towers = {f"modalities.{m}.backbone.": f"{m}{TOWER_SUFFIX}" for m in _tower_modalities(model)}
    for name, tensor in state.items():
        target = next((f for prefix, f in towers.items() if name.startswith(prefix)), WEIGHTS)
        files.setdefault(target, {})[name] = tensor
    return files


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for dist in ("crossrec-peft", "torch", "transformers", "peft", "accelerate", "safetensors", "huggingface_hub", "open_clip_torch"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out


def data_fingerprint(directory: str | Path) -> str | None:
    """sha256 over the data tables (items, interactions, users) of a standard-layout directory: which data a
    package was tuned on, independent of where that directory happened to be."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    tables = sorted(p for p in directory.iterdir() if p.is_file() and p.stem in ("items", "interactions", "users"))
    if not tables:
        return None
    digest = hashlib.sha256()
    for p in tables:
        digest.update(p.name.encode())
        digest.update(sha256(p).encode())
    return digest.hexdigest()


def package_id(manifest: Mapping[str, Any]) -> str:
    """`<domain>/<name>@<12 hex>`: the hex is a hash of the package's weight and config files, so equal
    weights give equal ids."""
    # The card and the manifest are left out: they describe the weights, and the card names this id.
    content = {k: v for k, v in manifest.get("files", {}).items() if k not in ("README.md", MANIFEST)}
    files = json.dumps(content, sort_keys=True).encode()
    return f"{manifest.get('domain', '?')}/{manifest.get('name', '?')}@{hashlib.sha256(files).hexdigest()[:12]}"


def export_package(
    model: TwoTowerModel,
    cfg: DictConfig,
    directory: str | Path,
    *,
    metrics: dict[str, Any] | None = None,
    data_summary: dict[str, Any] | None = None,
    item_ids: list[str] | None = None,
    parent: dict[str, Any] | None = None,
    hybrid: HybridChoice | None = None,
) -> Path:
    """Write `model` as a package at `directory` (replacing one that is there, atomically).

    `parent` is what `init_from_package` returned when this model continued another package's training;
    `hybrid` what the run chose for the co-occurrence term (hybrid.py): its neighbours are saved when its weight
    is above 0, so that loaders rank as the run's "hybrid" system did.
    """
    directory = Path(directory)
    with atomic_directory(directory) as tmp:
        peft_dirs = _peft_modalities(model)
        for name, rel in peft_dirs.items():
            enc = model.modalities[name]
            enc.method.save(enc.backbone, tmp / rel)
        weight_files = _split_state(model, exported_state(model))
        for file, tensors in weight_files.items():
            save_safetensors(tensors, tmp / file, metadata={"format": "pt"})
        hybrid_record = None
        if hybrid is not None:
            hybrid_record = {**hybrid.record(), "file": HYBRID_FILE if hybrid.weight > 0 else None}
            if hybrid.weight > 0:
                hybrid.neighbours.save(tmp / HYBRID_FILE)

        modalities = {}
        for name, enc in model.modalities.items():
            modalities[name] = {
                "fields": list(enc.fields),
                "backbone": enc.backbone.identity(),
                "pretrained": bool(enc.backbone.pretrained_weights),
                "method": OmegaConf.to_container(cfg.model.modalities[name].method),
                "storage": enc.method.storage.value,
                "peft_dir": peft_dirs.get(name),
            }
        from .methods.base import count_parameters

        trainable, total = count_parameters(model)
        towers = {f[: -len(TOWER_SUFFIX)]: f for f in weight_files if f != WEIGHTS}
        data = dict(data_summary or {})
        if data.get("source") and "sha256" not in data:
            data["sha256"] = data_fingerprint(data["source"])
        manifest = {
            "format_version": FORMAT_VERSION,
            "id": None,  # set from the file hashes below
            "domain": cfg.domain,
            "name": cfg.name,
            "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "parent": parent,
            "config": OmegaConf.to_container(cfg, resolve=True),
            "model": OmegaConf.to_container(cfg.model, resolve=True),
            "modalities": modalities,
            "dims": {"content": model.dim, "head_rank": int(cfg.model.head_rank)},
            # Objective heads (rating, category, ...): rebuilt from these specs on load, weights in WEIGHTS.
            "heads": {name: head.spec() for name, head in model.heads.items()},
            "params": {"trainable": trainable, "total": total},
            "weights": {"adapter": WEIGHTS, "towers": towers},
            "data": data,
            "metrics": metrics or {},
            "versions": _versions(),
        }
        if hybrid_record is not None:
            manifest["hybrid"] = hybrid_record
        # Sizes before the card, which reports them; the card itself is then hashed with the rest.
        adapter_files = [p for p in tmp.rglob("*.safetensors") if p.name not in towers.values() and p.name != HYBRID_FILE]
        manifest["sizes"] = {
            "adapter_bytes": sum(p.stat().st_size for p in adapter_files),
            "tower_bytes": {m: (tmp / f).stat().st_size for m, f in towers.items()},
        }
        if hybrid_record is not None and hybrid_record["file"]:
            manifest["sizes"]["hybrid_bytes"] = (tmp / HYBRID_FILE).stat().st_size
        manifest["files"] = {str(p.relative_to(tmp)): sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        manifest["id"] = package_id(manifest)
        write_model_card(tmp, manifest)
        manifest["files"]["README.md"] = sha256(tmp / "README.md")
        manifest["package_sha256"] = canonical_sha256(manifest)  # last: covers every other field
        # Written last: a directory without its manifest is not a package, whatever else it holds.
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return directory


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _human(n: int) -> str:
    from .report import human_bytes

    return human_bytes(n)


def write_model_card(directory: Path, manifest: dict) -> None:
    """README.md through huggingface_hub.ModelCard: YAML metadata the Hub indexes, then a readable card."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    mods = manifest["modalities"]
    backbones = sorted({m["backbone"]["id"] for m in mods.values()})
    # base_model must be Hub ids: local directories and open_clip names stay out of the metadata.
    hub_bases = [b for b in backbones if _HUB_ID.match(b) and not Path(b).exists()]
    methods = sorted({m["method"]["name"] for m in mods.values()})
    domain = manifest["domain"]
    model_metrics = manifest.get("metrics", {}).get("model", {})
    data = manifest.get("data", {})
    dataset = Path(str(data.get("source") or f"{domain}-demo")).name
    eval_results = [
        EvalResult(
            task_type="recommendation", task_name="next-item recommendation (leave-one-out, full ranking)",
            dataset_type=dataset, dataset_name=dataset, dataset_split="test",
            metric_type=key.split("@")[0], metric_name=key.replace("ndcg", "NDCG").replace("recall", "Recall").replace("mrr", "MRR"),
            metric_value=float(model_metrics[key]),
        )
        for key in ("recall@10", "ndcg@10", "mrr@10") if key in model_metrics
    ]
    card_data = ModelCardData(
        library_name="peft",
        base_model=(hub_bases[0] if len(hub_bases) == 1 else hub_bases) or None,
        tags=["crossrec-peft", "recommendation", "two-tower", domain, *methods],
        datasets=[dataset],
        metrics=["recall", "ndcg", "mrr"],
        pipeline_tag="feature-extraction",
        model_name=f"crossrec-peft {domain} adapter" if eval_results else None,
        eval_results=eval_results or None,
    )
    rows = []
    for system, values in manifest.get("metrics", {}).items():
        if isinstance(values, dict):
            rows.append(f"| {system} | " + " | ".join(f"{values.get(k, float('nan')):.4f}" for k in ("recall@10", "ndcg@10", "mrr@10")) + " |")
    table = "| system | Recall@10 | NDCG@10 | MRR@10 |\n|---|---|---|---|\n" + "\n".join(rows) if rows else "No metrics recorded."
    sizes = manifest.get("sizes", {})
    size_lines = [f"- adapter (everything trained on top of the pretrained backbones): {_human(sizes.get('adapter_bytes', 0))}"]
    for mod, n in sizes.get("tower_bytes", {}).items():
        how = "trained from scratch (no pretrained weights to adapt)" if not mods[mod].get("pretrained", True) else "fully fine-tuned"
        size_lines.append(f"- `{mod}` tower, {how}, stored apart in `{mod}{TOWER_SUFFIX}`: {_human(n)}")
    hybrid = manifest.get("hybrid") or {}
    if hybrid.get("file"):
        size_lines.append(
            f"- item co-occurrence neighbours (`{hybrid['file']}`, {hybrid.get('pairs', 0):,} item pairs, no user data): "
            f"{_human(sizes.get('hybrid_bytes', 0))}. `Recommender` ranks with the model's cosine plus {hybrid['weight']:g} x "
            "the candidate's mean similarity to the history's items (the `hybrid` row above; the weight was chosen on "
            "validation); `load_adapter(..., hybrid=False)` ranks by the model alone."
            + (f" An item no neighbour list holds (never bought in training, or new) borrows {hybrid['borrow_weight']:g} x "
               f"the term of its {hybrid['borrow']} nearest items by the model's item vectors."
               if hybrid.get("borrow") and hybrid.get("borrow_weight") else "")
        )
    parent = manifest.get("parent")
    lineage = (
        f"Continued from `{parent['id']}` (its crossrec.json sha256 `{parent['manifest_sha256']}`, loaded from `{parent.get('source')}`)."
        if parent else "Trained from the pretrained backbones (no parent package)."
    )
    history = data.get("history_length", {})
    count = lambda key: f"{data[key]:,}" if isinstance(data.get(key), int) else "?"  # noqa: E731
    data_text = (
        f"`{dataset}`: {count('items')} items, {count('users')} users, {count('interactions')} interactions "
        f"(history length min {history.get('min', '?')}, median {history.get('median', '?')}, max {history.get('max', '?')}); "
        f"tables sha256 `{data.get('sha256')}`."
        if isinstance(data.get("items"), int) else "Not recorded."
    )
    peft_root = next((m["backbone"]["id"] for m in mods.values() if m.get("peft_dir") == "."), None)
    per_modality = ", ".join(f"{name}: {m['method']['name']}" for name, m in mods.items())
    # A tower trained whole (`full`) is not a frozen base: say so rather than list it among the frozen ones.
    towers = manifest.get("weights", {}).get("towers", {})
    frozen = sorted({m["backbone"]["id"] for name, m in mods.items() if name not in towers})
    whole = [f"the `{name}` tower (`{m['backbone']['id']}`) trained whole" for name, m in mods.items() if name in towers]
    base_text = " and ".join(
        ([f"on frozen {', '.join(f'`{b}`' for b in frozen)}"] if frozen else []) + ([", ".join(whole)] if whole else [])
    )
    body = f"""
# crossrec-peft adapter: {domain}

An adapter package ({per_modality}) for two-tower recommendation in the **{domain}** domain, trained with
[crossrec-peft](https://pypi.org/project/crossrec-peft/) {base_text}. Package id `{manifest.get('id')}`, format version {manifest['format_version']}.
Trainable parameters: {manifest['params']['trainable']:,} of {manifest['params']['total']:,}.

## Test metrics (full ranking, leave-one-out)
{table}

## Size
{chr(10).join(size_lines)}

## Data
{data_text}

## Lineage
{lineage}

## How to load
```python
from crossrec_peft import Recommender
rec = Recommender.from_pretrained("path/to/this/folder")  # or "hf://<org>/<name>[@revision]"
rec.recommend(history=["<item id>", "<item id>"], k=10)
```
or the model itself: `from crossrec_peft.package import load_package; model, manifest = load_package("path/to/this/folder")`.
Every file's sha256 is checked against `crossrec.json` on load, and only safetensors are read.
"""
    if peft_root:
        body += f"""The peft part also loads with plain peft:
`PeftModel.from_pretrained(AutoModel.from_pretrained("{peft_root}"), "path/to/this/folder")`.
"""
    ModelCard(f"---\n{card_data.to_yaml()}\n---\n{body}").save(str(directory / "README.md"))


# -- reading -----------------------------------------------------------------------------------------------


def _migrate_1_to_2(manifest: dict, directory: Path) -> dict:
    """Version 1 kept every non-peft tensor, towers included, in crossrec_weights.safetensors, and had no id,
    parent, config or sizes. The files stay as they are; only the manifest is read differently."""
    out = dict(manifest)
    out["format_version"] = 2
    out.setdefault("parent", None)
    out.setdefault("created", None)
    out.setdefault("config", None)
    out["weights"] = {"adapter": WEIGHTS, "towers": {}}
    for mod in out.get("modalities", {}).values():
        # Version 1 recorded `pretrained: null` in the identity of open_clip towers without pretrained weights.
        mod.setdefault("pretrained", mod.get("backbone", {}).get("pretrained", True) is not None)
    files = out.get("files", {})
    out["sizes"] = {
        "adapter_bytes": sum((directory / f).stat().st_size for f in files if f.endswith(".safetensors") and (directory / f).is_file()),
        "tower_bytes": {},
    }
    out["id"] = package_id(out)
    return out


def _migrate_2_to_3(manifest: dict, directory: Path) -> dict:
    """Version 3 added `package_sha256` (the manifest's own hash). A version-2 manifest has none, so edits to
    it cannot be detected; everything else (schema, listed files and their sha256, unlisted files, readable
    safetensors, peft configs against the manifest) is checked as for version 3."""
    out = dict(manifest)
    out["format_version"] = 3
    out["package_sha256"] = None
    return out


# version -> function turning a manifest of that version into one of the next version.
MIGRATIONS: dict[int, Callable[[dict, Path], dict]] = {1: _migrate_1_to_2, 2: _migrate_2_to_3}


def read_manifest(directory: str | Path) -> dict:
    """The package's manifest, migrated in memory to the current format version."""
    directory = Path(directory)
    if not directory.is_dir():
        raise PackageError(f"Adapter package '{directory}' does not exist or is not a directory.")
    path = directory / MANIFEST
    if not path.is_file():
        raise PackageError(f"{directory}: no {MANIFEST}; this is not a crossrec-peft adapter package.")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PackageError(f"{path}: not valid JSON ({exc}).") from None
    if not isinstance(manifest, dict):
        raise PackageError(f"{path}: must hold a JSON object, not a JSON {type(manifest).__name__}.")
    version = manifest.get("format_version")
    if version == FORMAT_VERSION:  # the current format: checked as written, then against its own hash
        check_schema(manifest, path)
        check_sealed(manifest, path)
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise PackageError(
            f"{path}: package format version {version} is newer than this crossrec-peft reads (format "
            f"{FORMAT_VERSION}); upgrade crossrec-peft to load it (see {DOCS})."
        )
    while version != FORMAT_VERSION:
        migrate = MIGRATIONS.get(version) if isinstance(version, int) else None
        if migrate is None:
            raise PackageError(
                f"{path}: package format version {version!r} is not supported by this crossrec-peft (format "
                f"{FORMAT_VERSION}) and no migration from it exists; re-export it with the crossrec-peft that wrote it "
                f"or see {DOCS} (section 'Versions and migration')."
            )
        try:
            manifest = migrate(manifest, directory)
        except (AttributeError, KeyError, TypeError, ValueError, OSError) as exc:
            raise PackageError(f"{path}: a format-{version} manifest that cannot be read ({type(exc).__name__}: {exc}).") from None
        version = manifest["format_version"]
        check_schema(manifest, path)  # migrated: the current format's shape
    check_model(manifest, path)
    return manifest


def check_model(manifest: dict, path: Path) -> None:
    """The values the schema leaves open: `model` through the config's own validation (what a recipe's model
    section must satisfy) and each objective head's spec, so that a bad value is a PackageError naming `path`
    and the key, not an error deep in building the model."""
    from .config import check_model_section
    from .model.heads import HEADS

    model = manifest["model"]
    try:
        # A manifest without max_history (older packages) is read with the recommender's default: no window check.
        check_model_section(model, str(path), history="max_history" in model)
    except ConfigError as exc:
        raise PackageError(str(exc)) from None
    for name, spec in manifest.get("heads", {}).items():
        kind = spec.get("kind")
        if kind not in HEADS:
            raise PackageError(f"{path}: 'heads.{name}.kind' is {kind!r}, not a head this crossrec-peft knows ({', '.join(HEADS)}).")
        options = {k: v for k, v in spec.items() if k != "kind"}
        try:
            inspect.signature(HEADS[kind]).bind(**options)
        except TypeError as exc:  # a missing or unknown option of the head's constructor
            raise PackageError(f"{path}: 'heads.{name}' does not describe a {kind} head ({exc}).") from None


def verify_files(directory: Path, manifest: dict) -> None:
    """Refuse pickle files anywhere in the package and any file whose sha256 differs from the manifest."""
    directory = Path(directory)
    pickles = sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise PackageError(
            f"{directory}: refusing a package with pickle files ({', '.join(pickles)}); pickle can run code when "
            "read, so crossrec-peft only loads safetensors. Remove those files or re-export the package."
        )
    check_listing(directory, manifest)  # every file read is listed; no unlisted file besides documentation
    for rel, expected in manifest.get("files", {}).items():
        path = directory / rel
        if not path.is_file():
            raise PackageError(f"{directory}: file '{rel}' listed in {MANIFEST} is missing.")
        if sha256(path) != expected:
            raise PackageError(f"{path}: sha256 does not match {MANIFEST}; the file was modified or truncated.")
    check_safetensors(directory, manifest)
    check_peft_configs(directory, manifest)


def verify_package(directory: str | Path) -> dict:
    """Read the manifest and check every file, without loading any weights. Returns the manifest."""
    manifest = read_manifest(directory)
    verify_files(Path(directory), manifest)
    return manifest


def _describe(identity: Mapping[str, Any]) -> str:
    parts = [f"'{identity.get('id')}'"]
    if identity.get("revision"):
        parts.append(f"revision {identity['revision']}")
    if identity.get("sha256"):
        parts.append(f"sha256 {identity['sha256'][:12]}…")
    if identity.get("hidden_size"):
        parts.append(f"hidden size {identity['hidden_size']}")
    return ", ".join(parts)


def check_backbone(where: str, modality: str, recorded: Mapping[str, Any], actual: Mapping[str, Any]) -> None:
    """Refuse a backbone that is not the one the package was trained on: id, revision and weights hash are
    compared where both sides know them. The message names both backbones."""
    for key in ("id", "revision", "sha256", "hidden_size"):
        if recorded.get(key) is not None and actual.get(key) is not None and recorded[key] != actual[key]:
            raise PackageError(
                f"{where}: modality '{modality}' was trained on backbone {_describe(recorded)}, but the backbone "
                f"here is {_describe(actual)} ({key} differs). An adapter only fits the backbone it was trained on."
            )


def load_weights(directory: Path, manifest: dict) -> dict[str, torch.Tensor]:
    """crossrec_weights.safetensors and every tower file merged: the state `exported_state` describes."""
    directory = Path(directory)
    weights = manifest.get("weights") or {"adapter": WEIGHTS, "towers": {}}
    state: dict[str, torch.Tensor] = {}
    for file in [weights["adapter"], *weights.get("towers", {}).values()]:
        state.update(_load_tensors(directory / file))
    return state


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors; PackageError naming the file when it cannot be read."""
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors' SafetensorError, OSError
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PackageError(f"{path}: not a readable safetensors file ({detail}).") from None


def seal_package(directory: str | Path) -> dict:
    """Rewrite an older package's manifest in the current format, in place: every check of a load first,
    then the model card regenerated (it names the format version), its sha256 and `package_sha256`
    recorded. Weights are not touched (re-hashing only). Returns the new manifest."""
    directory = Path(directory)
    manifest = verify_package(directory)
    manifest["format_version"] = FORMAT_VERSION
    write_model_card(directory, manifest)
    manifest["files"]["README.md"] = sha256(directory / "README.md")
    manifest["package_sha256"] = canonical_sha256(manifest)
    with atomic_file(directory / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    make_public(directory)
    return manifest


def assign_weights(model: TwoTowerModel, state: dict[str, torch.Tensor], directory: Path, manifest: dict) -> None:
    """Copy `state` into the model's trainable tensors, refusing missing, unexpected or misshapen ones."""
    device = next(model.parameters()).device
    for name, spec in manifest.get("heads", {}).items():  # objective heads, rebuilt from the manifest's specs
        if name not in model.heads:
            model.heads[name] = build_head(spec).to(device)
    tables = {name: enc.backbone for name, enc in model.modalities.items() if isinstance(enc.backbone, CatalogTable)}
    for name, table in tables.items():  # sized by the catalog, not the config: take the saved size
        prefix = f"modalities.{name}.backbone."
        table.size_from_state({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
        table.to(device)
    expected = exported_state(model)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise PackageError(
            f"{directory}: the weight files do not fit the model described by {MANIFEST} "
            f"(missing: {', '.join(missing[:5]) or 'none'}; unexpected: {', '.join(unexpected[:5]) or 'none'})."
        )
    params = dict(model.named_parameters())
    params.update(dict(model.named_buffers()))
    for name, value in state.items():
        if params[name].shape != value.shape:
            mod = name.split(".")[1] if name.startswith("modalities.") else None
            here = f" onto backbone {_describe(model.modalities[mod].backbone.identity())}" if mod else ""
            trained = f" (trained on {_describe(manifest['modalities'][mod]['backbone'])})" if mod else ""
            raise PackageError(
                f"{directory}: tensor '{name}' has shape {tuple(value.shape)}{trained}, the model{here} expects "
                f"{tuple(params[name].shape)}. Shapes must match; there is no way to force this."
            )
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)
    for table in tables.values():  # continued tuning: which items have a vector is this run's decision
        table.weights_loaded()


def _misfit_line(exc: Exception) -> str:
    """The line of a failed load that says what does not fit: torch's first line ("Error(s) in loading
    state_dict for PeftModel:") names no tensor; its "size mismatch for NAME: ... shape A ... shape B" does.
    The first line when there is none."""
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    return next((line.strip() for line in lines if "size mismatch" in line), lines[0].strip())[:300]


@dataclass
class OpenedPackage:
    """A package whose manifest is read (migrated) and whose files are verified: what every loader starts from."""

    directory: Path
    manifest: dict
    source: str  # what the caller named (a path or an hf:// address), for messages and lineage

    def method_dir(self, modality: str) -> Path:
        """Where the modality's method's own files are (peft's), or the package root."""
        rel = self.manifest["modalities"][modality].get("peft_dir")
        return self.directory / rel if rel is not None else self.directory

    def check_backbone(self, modality: str, actual: Mapping[str, Any]) -> None:
        check_backbone(self.source, modality, self.manifest["modalities"][modality]["backbone"], actual)

    def weights(self) -> dict[str, torch.Tensor]:
        return load_weights(self.directory, self.manifest)

    def load_method(self, model: TwoTowerModel, modality: str, *, trainable: bool = False) -> None:
        """Rebuild the modality's method on its (fresh) backbone from the package."""
        enc = model.modalities[modality]
        with self.loading(modality, enc.method, enc.backbone.identity()):
            enc.method.load(enc.backbone, self.method_dir(modality), trainable=trainable)
        if enc.method.storage is Storage.PEFT:
            check_peft_tensors(self.method_dir(modality) / PEFT_WEIGHTS, adapter_tensors(enc.backbone.model, "default"))

    @contextmanager
    def loading(self, modality: str, method: Method, identity: Mapping[str, Any]) -> Iterator[None]:
        """Around a load of the modality's method (its files) onto the backbone `identity` describes: a failure
        becomes the PackageError that says what the user needs. The one conversion for every load path
        (load_method, init_from_package, the Recommender's shared backbones), so each says the same.
        peft found no target module: the config file and its key. The weights do not fit: the file, the
        backbone they were trained on and the one here, and the tensor (torch's size-mismatch line)."""
        from peft.utils.error import NoMatchingPeftModuleError

        try:
            yield
        except NoMatchingPeftModuleError:  # adapter_config.json's target_modules name no module of this backbone
            raise self.peft_targets_error(modality, identity) from None
        except torch.cuda.OutOfMemoryError:  # a RuntimeError, but the device's, not the package's
            raise
        except (RuntimeError, ValueError) as exc:  # torch's size mismatch from a load_state_dict; peft's refusals
            where = self.method_dir(modality) / PEFT_WEIGHTS if method.storage is Storage.PEFT else self.directory
            detail = _misfit_line(exc)
            shapes = " Shapes must match; there is no way to force this." if "size mismatch" in detail else ""
            raise PackageError(
                f"{where}: the {method.name} weights of modality '{modality}' (trained on backbone "
                f"{_describe(self.manifest['modalities'][modality]['backbone'])}) do not fit the backbone "
                f"{_describe(identity)}: {detail}{shapes}"
            ) from None

    def peft_targets_error(self, modality: str, identity: Mapping[str, Any]) -> PackageError:
        """peft found no module of the backbone to put the modality's adapter on: its config names the wrong ones."""
        path = self.method_dir(modality) / "adapter_config.json"
        try:
            targets = json.loads(path.read_text(encoding="utf-8")).get("target_modules")
        except (OSError, ValueError):  # read and checked as JSON by verify_files already
            targets = "?"
        return PackageError(
            f"{path}: 'target_modules' ({targets!r}) names no module of backbone {_describe(identity)} (modality "
            f"'{modality}'), so the adapter cannot be put on it. The file must be the one exported with the package."
        )

    def assign(self, model: TwoTowerModel, state: dict[str, torch.Tensor] | None = None) -> None:
        assign_weights(model, self.weights() if state is None else state, self.directory, self.manifest)

    def hybrid(self) -> HybridRanking | None:
        """The co-occurrence term as the run chose it (neighbours, weight above 0, borrowing), or None."""
        record = self.manifest.get("hybrid") or {}
        if not record.get("file"):
            return None
        return HybridRanking(Neighbours.load(self.directory / record["file"]), float(record["weight"]),
                             int(record.get("borrow", 0)), float(record.get("borrow_weight", 0.0)),
                             float(record.get("decay", 1.0)))  # packages from before recency weighting: the plain mean


def open_package(directory: str | Path, *, source: str | None = None) -> OpenedPackage:
    """Read the manifest and verify every file of the package at `directory` (a local directory: hf://
    addresses are resolved by the caller through `hub.resolve`)."""
    directory = Path(directory)
    manifest = verify_package(directory)
    return OpenedPackage(directory, manifest, str(source if source is not None else directory))


def load_package(directory: str | Path, *, trainable: bool = False) -> tuple[TwoTowerModel, dict]:
    """Rebuild the model: fresh backbones, each modality's method restored, crossrec weights loaded."""
    package = open_package(directory)
    model = build_model(package.manifest["model"], attach_methods=False)
    for name, enc in model.modalities.items():
        package.check_backbone(name, enc.backbone.identity())
        package.load_method(model, name, trainable=trainable)
    package.assign(model)
    if not trainable:
        model.requires_grad_(False)
    model.eval()
    return model, package.manifest


# -- continued fine-tuning ---------------------------------------------------------------------------------


def _differences(a: Any, b: Any, prefix: str = "model") -> list[str]:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _differences(a.get(key), b.get(key), f"{prefix}.{key}")
        return out
    return [] if a == b else [f"{prefix} ({b!r} in the config, {a!r} in the parent)"]


def check_parent(model: TwoTowerModel, directory: str | Path, cfg: DictConfig, *, source: str | None = None) -> OpenedPackage:
    """The package at `directory`, opened and checked as an init_from parent of `model` (built from `cfg`): its
    files, the config's model section against the parent's, and the backbones against the ones it was trained
    on. No weights are loaded, so a run checks this before it writes into its directory."""
    package = open_package(directory, source=f"init_from={source if source is not None else directory}")
    diffs = _differences(package.manifest["model"], OmegaConf.to_container(cfg.model, resolve=True))
    if diffs:
        raise PackageError(
            f"{package.source}: continued tuning keeps the parent package's model, but the config differs at "
            f"{'; '.join(diffs[:4])}{' ...' if len(diffs) > 4 else ''}. Set the model section to the parent's "
            f"(its crossrec.json 'model') or train from scratch without init_from."
        )
    for name, enc in model.modalities.items():
        package.check_backbone(name, enc.backbone.identity())
    return package


def init_from_package(model: TwoTowerModel, directory: str | Path, cfg: DictConfig, *, source: str | None = None) -> dict[str, Any]:
    """Load the package at `directory` into `model` (freshly built from `cfg` with its methods attached) so
    that training continues from it. The config's model must be the parent's and its backbones the very ones
    the parent was trained on. `source` is what the user named (an hf:// address the caller resolved).
    Returns the parent record for the new package's manifest."""
    package = check_parent(model, directory, cfg, source=source)
    manifest = package.manifest
    for name, enc in model.modalities.items():
        with package.loading(name, enc.method, enc.backbone.identity()):
            enc.method.load_files(enc.backbone, package.method_dir(name))
    state = package.weights()
    # Objective heads: the parent's carry over (assign_weights rebuilds those this run's objective lacks);
    # heads this run's objective adds that the parent lacks keep their untrained values.
    new_heads = tuple(f"heads.{name}." for name in model.heads if name not in manifest.get("heads", {}))
    if new_heads:
        state.update({k: v for k, v in exported_state(model).items() if k.startswith(new_heads)})
    package.assign(model, state)
    return {"id": manifest["id"], "manifest_sha256": sha256(package.directory / MANIFEST), "source": str(source if source is not None else directory)}
