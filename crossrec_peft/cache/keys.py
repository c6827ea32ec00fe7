"""What a layer cache is keyed by: the settings that decide every row (backbone weights, quantization,
preprocessing, what is kept, the dtype, the format version) and each item's content hash.

Both go through the backbone-level interface only (`identity()`, `options`, `preprocess`, `featurize`
outputs), so any backbone kind (text, open_clip, timm, plugins) is cached without code of its own here. A
backbone may refine either by defining `cache_settings()` or `item_keys(features)`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path
from typing import Any, Mapping

import torch


def backbone_settings(backbone: Any) -> dict[str, Any]:
    """Everything about a backbone that changes what it outputs for an item."""
    custom = getattr(backbone, "cache_settings", None)
    if callable(custom):
        return dict(custom())
    identity = dict(backbone.identity())
    identity.pop("bytes", None)  # implied by the sha256
    options = getattr(backbone, "options", None)
    settings: dict[str, Any] = {
        "modality": getattr(backbone, "modality", None),
        "identity": identity,
        "options": dataclasses.asdict(options) if dataclasses.is_dataclass(options) else repr(options),
    }
    preprocess = getattr(backbone, "preprocess", None)
    if preprocess is not None:  # an image transform (resize, crop, normalisation) is part of the input
        settings["preprocess"] = repr(preprocess)
    return settings


def item_keys(backbone: Any, features: Mapping[str, Any], count: int) -> list[str]:
    """One content hash per item, over what the backbone's featurize produced for it: token ids and masks,
    pixel tensors, the bytes of image files. Equal inputs give equal keys whatever the item's id."""
    custom = getattr(backbone, "item_keys", None)
    if callable(custom):
        return list(custom(features))
    digests = [hashlib.blake2b(digest_size=16) for _ in range(count)]
    files: dict[Path, bytes] = {}
    for name in sorted(features):
        value = features[name]
        if isinstance(value, torch.Tensor) and value.dim() >= 1 and len(value) == count:
            array = value.detach().cpu().contiguous().numpy()
            for digest, row in zip(digests, array):
                digest.update(name.encode())
                digest.update(str(row.dtype).encode())
                digest.update(row.tobytes())
        elif isinstance(value, (list, tuple)) and len(value) == count:
            for digest, item in zip(digests, value):
                digest.update(name.encode())
                if isinstance(item, Path):  # an image: its file's bytes, not its name
                    if item not in files:
                        files[item] = hashlib.blake2b(item.read_bytes(), digest_size=16).digest()
                    digest.update(files[item])
                else:
                    digest.update(repr(item).encode())
    return [d.hexdigest() for d in digests]


def directory_name(backbone: Any, kind: str) -> str:
    """A readable, stable directory name for one backbone and one kind of kept states."""
    model_id = str(getattr(backbone, "model_id", type(backbone).__name__))
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id).strip("_")[-48:]
    tag = hashlib.blake2b(model_id.encode(), digest_size=4).hexdigest()
    return f"{slug}-{tag}-{getattr(backbone, 'modality', 'x')}-{kind}"
