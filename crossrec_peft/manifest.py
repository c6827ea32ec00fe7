"""What integrity means for an adapter package (format 3), checked before any weight is read.

- **Schema.** crossrec.json is validated (pydantic, strict types) before anything uses it: the format
  version and the type of every field, so a hand-edited `"files": [...]` is a message naming `files`, not an
  AttributeError.
- **The manifest itself.** `package_sha256` is the sha256 of the canonical manifest (sorted keys, no
  whitespace, `package_sha256` left out). An edit to crossrec.json (a metric, a LoRA rank) no longer loads
  silently. Packages of format 1 and 2 have none; they load with every other check (docs/package-format.md).
- **Every file.** Each file a load reads (peft config and weights, crossrec weights, towers, the card) must
  be listed in `files` with its sha256; a file in the package that is not listed is refused, except
  documentation (`*.md`, `LICENSE*`, `.gitattributes`) and repository metadata (`.git/`, `.cache/`).
- **Readable weights.** Every listed `.safetensors` file must open as safetensors (its header is read, which
  also catches a truncated file): the message names the file.
- **peft configs.** Each peft modality's `adapter_config.json` (what peft reads) must agree with the method
  recorded in the manifest (type, LoRA rank and alpha, target modules when recorded).

This is integrity against accidents and inconsistent edits, not a signature: someone who rewrites files
and recomputes every hash makes a different, self-consistent package.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path, PurePosixPath
from typing import Any, Dict, List, Optional

from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt, StrictStr, ValidationError, field_validator

from .errors import PackageError

MANIFEST = "crossrec.json"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Files a package may hold without listing them: documentation, and what git / huggingface_hub keep beside.
DOC_SUFFIXES = (".md",)
DOC_NAMES = (".gitattributes",)
META_DIRS = (".git", ".cache")


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class Backbone(_Model):
    id: StrictStr


class Method(_Model):
    name: StrictStr


class Modality(_Model):
    fields: List[StrictStr]
    backbone: Backbone
    method: Method
    peft_dir: Optional[StrictStr] = None
    pretrained: StrictBool = True


class ModelModality(_Model):
    # What build_model reads; their values are checked by the config's own validation (package.read_manifest).
    fields: List[StrictStr]
    backbone: Dict[StrictStr, Any]
    method: Dict[StrictStr, Any]


class ModelSection(_Model):
    """The run's `model` config: present keys only here (a missing one would otherwise be filled with a
    default that is not the trained model); values are checked by `config.check_model_section`."""

    modalities: Dict[StrictStr, ModelModality]
    fusion: Dict[StrictStr, Any]
    user_encoder: Dict[StrictStr, Any]
    head_rank: StrictInt
    temperature: float
    learn_temperature: StrictBool


class DataSection(_Model):
    # `source` is where a loader looks for the catalog (a path): text or null.
    source: Optional[StrictStr] = None
    sha256: Optional[StrictStr] = None


class Parent(_Model):
    id: StrictStr
    manifest_sha256: StrictStr


class Weights(_Model):
    adapter: StrictStr
    towers: Dict[StrictStr, StrictStr]


class Sizes(_Model):
    adapter_bytes: StrictInt
    tower_bytes: Dict[StrictStr, StrictInt]
    hybrid_bytes: Optional[StrictInt] = None


class Hybrid(_Model):
    """The co-occurrence term beside the model (crossrec_peft/hybrid.py): the weight the run chose on validation
    and the file of neighbours (null when the weight is 0: the model ranks alone)."""

    weight: float
    neighbours: StrictInt
    file: Optional[StrictStr] = None
    # Items the term cannot score borrow the term of their `borrow` nearest items, times `borrow_weight`
    # (0 and 0 in packages from before borrowing: none).
    borrow: StrictInt = 0
    borrow_weight: float = 0.0

    @field_validator("weight", "borrow_weight")
    @classmethod
    def _weight(cls, weight: float) -> float:
        if not weight >= 0 or weight == float("inf"):
            raise ValueError(f"must be a finite number, 0 or more, got {weight}")
        return weight

    @field_validator("borrow")
    @classmethod
    def _borrow(cls, borrow: int) -> int:
        if borrow < 0:
            raise ValueError(f"must be 0 or more, got {borrow}")
        return borrow


class Params(_Model):
    trainable: StrictInt
    total: StrictInt


class Dims(_Model):
    content: StrictInt
    head_rank: StrictInt


class ManifestSchema(_Model):
    """crossrec.json, format 3 (older formats are migrated to this shape in memory before the check)."""

    format_version: StrictInt
    id: StrictStr
    domain: StrictStr
    name: StrictStr
    created: Optional[StrictStr] = None
    parent: Optional[Parent] = None
    config: Optional[Dict[StrictStr, Any]] = None
    model: ModelSection
    modalities: Dict[StrictStr, Modality]
    dims: Optional[Dims] = None
    heads: Dict[StrictStr, Dict[StrictStr, Any]] = {}
    params: Optional[Params] = None
    weights: Weights
    sizes: Optional[Sizes] = None
    hybrid: Optional[Hybrid] = None
    data: DataSection = DataSection()
    metrics: Dict[StrictStr, Any] = {}
    versions: Dict[StrictStr, StrictStr] = {}
    files: Dict[StrictStr, StrictStr]
    package_sha256: Optional[StrictStr] = None

    @field_validator("files")
    @classmethod
    def _files(cls, files: dict[str, str]) -> dict[str, str]:
        for rel, digest in files.items():
            parts = PurePosixPath(rel).parts
            if not rel or rel.startswith("/") or "\\" in rel or ".." in parts:
                raise ValueError(f"file name {rel!r} must be a path inside the package")
            if not _SHA256.match(digest):
                raise ValueError(f"the sha256 of {rel!r} must be 64 lowercase hex digits, got {digest[:70]!r}")
        return files

    @field_validator("package_sha256")
    @classmethod
    def _digest(cls, value: str | None) -> str | None:
        if value is not None and not _SHA256.match(value):
            raise ValueError("must be 64 lowercase hex digits")
        return value


def _describe(error: dict) -> str:
    where = ".".join(str(p) for p in error["loc"]) or "(top level)"
    got = type(error.get("input")).__name__ if error["type"] != "missing" else None
    got = {"dict": "a mapping", "list": "a list", "str": "text", "int": "an integer", "float": "a number",
           "bool": "a boolean", "NoneType": "null"}.get(got, got)
    msg = re.sub(r" or instance of \w+", "", error["msg"].replace("Value error, ", ""))  # the class is ours, not the user's
    return f"'{where}': {msg}" + (f" (got {got})" if got and error["type"] != "value_error" else "")


def check_schema(manifest: Any, path: Path) -> None:
    """PackageError naming the first fields of `manifest` whose type or value is wrong."""
    if not isinstance(manifest, dict):
        raise PackageError(f"{path}: must hold a JSON object, not {type(manifest).__name__}.")
    try:
        ManifestSchema.model_validate(manifest)
    except ValidationError as exc:
        errors = exc.errors()
        shown = "; ".join(_describe(e) for e in errors[:3])
        more = f" ({len(errors) - 3} more problems)" if len(errors) > 3 else ""
        raise PackageError(f"{path}: not a valid package manifest: {shown}{more}. See docs/package-format.md.") from None
    declared = set(manifest["model"]["modalities"])
    if declared != set(manifest["modalities"]):
        raise PackageError(
            f"{path}: 'modalities' ({', '.join(sorted(manifest['modalities']))}) and 'model.modalities' "
            f"({', '.join(sorted(declared))}) name different modalities."
        )
    hybrid_file = (manifest.get("hybrid") or {}).get("file")
    if hybrid_file and hybrid_file not in manifest["files"]:  # a load reads only files whose sha256 it checked
        raise PackageError(f"{path}: 'hybrid.file' names '{hybrid_file}', which 'files' does not list.")


def canonical_sha256(manifest: dict) -> str:
    """sha256 of the manifest without its `package_sha256`: sorted keys, no whitespace, UTF-8."""
    content = {k: v for k, v in manifest.items() if k != "package_sha256"}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_sealed(manifest: dict, path: Path) -> None:
    """Refuse a format-3 manifest edited after export."""
    recorded = manifest.get("package_sha256")
    if recorded is None:
        raise PackageError(f"{path}: format {manifest.get('format_version')} manifest without 'package_sha256'; re-export the package.")
    if canonical_sha256(manifest) != recorded:
        raise PackageError(
            f"{path}: the manifest was edited after export (its content no longer matches 'package_sha256'). "
            "Edits to crossrec.json (metrics, ranks, file hashes) are refused; re-export the package instead."
        )


def read_files(manifest: dict) -> list[str]:
    """Package files that a load reads: each must be listed in `files`."""
    weights = manifest["weights"]
    out = [weights["adapter"], *weights["towers"].values()]
    for mod in manifest["modalities"].values():
        peft_dir = mod.get("peft_dir")
        if peft_dir is not None:
            base = PurePosixPath(peft_dir)
            out += [str(base / "adapter_config.json"), str(base / "adapter_model.safetensors")]
    return [str(PurePosixPath(f)) for f in out]


def _is_documentation(rel: PurePosixPath) -> bool:
    return rel.parts[0] in META_DIRS or rel.name in DOC_NAMES or rel.suffix.lower() in DOC_SUFFIXES or rel.name.upper().startswith("LICENSE")


def check_listing(directory: Path, manifest: dict) -> None:
    """Every file a load reads is listed; every file present is listed or is documentation."""
    listed = {str(PurePosixPath(f)) for f in manifest["files"]}
    unlisted_reads = [f for f in read_files(manifest) if f not in listed]
    if unlisted_reads:
        raise PackageError(
            f"{directory}: '{unlisted_reads[0]}' is read on load but not listed with its sha256 in {MANIFEST} 'files'; "
            "an unlisted file cannot be checked, so the package is refused. Re-export it."
        )
    for p in sorted(directory.rglob("*")):
        if not p.is_file():
            continue
        rel = PurePosixPath(p.relative_to(directory).as_posix())
        if str(rel) == MANIFEST or str(rel) in listed or _is_documentation(rel):
            continue
        raise PackageError(
            f"{p}: this file is in the package but not listed in {MANIFEST} 'files', so it cannot be checked. "
            "Remove it (only documentation such as *.md may be added to a package) or re-export the package."
        )


def check_safetensors(directory: Path, manifest: dict) -> None:
    """Each listed .safetensors file opens as safetensors (header and size), named when it does not."""
    from safetensors import safe_open

    for rel in manifest["files"]:
        if not rel.endswith(".safetensors"):
            continue
        path = directory / rel
        try:
            with safe_open(str(path), framework="pt") as fh:
                fh.keys()
        except Exception as exc:  # SafetensorError, OSError: garbage, truncated, wrong format
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PackageError(f"{path}: not a readable safetensors file ({detail}).") from None


# LoRA / IA3 options recorded in the manifest -> the adapter_config.json keys peft reads for them.
_PEFT_KEYS = {"lora": {"r": "r", "alpha": "lora_alpha", "target_modules": "target_modules"}, "ia3": {"target_modules": "target_modules"}}
_PEFT_TYPES = {"lora": "LORA", "ia3": "IA3"}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# adapter_config.json values peft uses without checking them (a text dropout fails deep in its layer code):
# key -> (test, what it must be). Checked where present; peft's own defaults apply to absent keys.
_PEFT_VALUES = {
    "r": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0, "a positive integer"),
    "lora_alpha": (_number, "a number"),
    "lora_dropout": (lambda v: _number(v) and 0 <= v < 1, "a number from 0 to below 1"),
    "target_modules": (lambda v: v is None or isinstance(v, str) or isinstance(v, list) and all(isinstance(t, str) for t in v),
                       "null, a regular expression or a list of module names"),
    "feedforward_modules": (lambda v: v is None or isinstance(v, str) or isinstance(v, list) and all(isinstance(t, str) for t in v),
                            "null, a regular expression or a list of module names"),
}


def check_peft_configs(directory: Path, manifest: dict) -> None:
    """adapter_config.json (what peft loads) agrees with the method recorded in the manifest."""
    for name, mod in manifest["modalities"].items():
        peft_dir = mod.get("peft_dir")
        method = mod["method"]
        if peft_dir is None or method["name"] not in _PEFT_TYPES:
            continue
        path = directory / peft_dir / "adapter_config.json"
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PackageError(f"{path}: cannot be read as JSON ({exc}).") from None
        if not isinstance(config, dict):
            raise PackageError(f"{path}: must hold a JSON object.")
        expected_type = _PEFT_TYPES[method["name"]]
        if config.get("peft_type") != expected_type:
            raise PackageError(
                f"{path}: peft_type {config.get('peft_type')!r}, but {MANIFEST} records method '{method['name']}' "
                f"for modality '{name}' ({expected_type})."
            )
        for key, (ok, what) in _PEFT_VALUES.items():
            if key in config and not ok(config[key]):
                raise PackageError(
                    f"{path}: '{key}' must be {what}, got {config[key]!r}; peft cannot build the adapter of modality '{name}' "
                    "from it. The file must be the one exported with the package; re-export it."
                )
        for option, key in _PEFT_KEYS[method["name"]].items():
            recorded = method.get(option)
            if recorded is None:  # not recorded (defaults of the backbone): peft's file decides
                continue
            actual = config.get(key)
            same = sorted(recorded) == sorted(actual or []) if isinstance(recorded, list) else recorded == actual
            if not same:
                raise PackageError(
                    f"{path}: {key} is {actual!r}, but {MANIFEST} records {option}={recorded!r} for modality "
                    f"'{name}'. The two must agree; re-export the package."
                )
