"""On-disk layout of one layer cache: fp16 `.npy` shards, memory-mapped, and a JSON index.

    <root>/layers/<name>/index.json          format version, settings, field shapes, shards
    <root>/layers/<name>/s00000.<field>.npy  rows of one shard, one file per field (np.save: no pickle)

Rows are keyed by the item's content hash (`keys.item_keys`), not its id: an item whose fields change gets a
new key and is encoded again; catalogs that share items share rows. A shard is written beside its final name
and renamed into place, then the index (also written atomically) records it with its byte length and sha256.
A build killed at any point therefore leaves only complete shards in the index; a shard damaged later
(truncated, edited) fails its length or hash check when the cache is opened and its rows are encoded again.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..errors import ConfigError
from ..fsutil import atomic_file, sha256

FORMAT_VERSION = 1
INDEX = "index.json"
log = logging.getLogger(__name__)


def index_problem(index: Any) -> str | None:
    """Why a parsed index.json does not have the layout `_write_index` writes (in words), or None. A cache
    whose index fails this is never read: `open` rebuilds it, `cache info` lists it as unreadable."""
    if not isinstance(index, dict):
        return f"the index is a JSON {type(index).__name__}, not an object"
    for key, kind in (("settings", dict), ("fields", dict), ("shards", list)):
        if key in index and not isinstance(index[key], kind):
            return f"'{key}' is a JSON {type(index[key]).__name__}, not {'an object' if kind is dict else 'a list'}"
    for name, field in index.get("fields", {}).items():
        if not isinstance(field, dict) or not isinstance(field.get("shape"), list) or not isinstance(field.get("dtype"), str):
            return f"'fields.{name}' is not {{\"shape\": [...], \"dtype\": \"...\"}}"
    for i, shard in enumerate(index.get("shards", [])):
        if not isinstance(shard, dict):
            return f"'shards[{i}]' is not an object"
        if not isinstance(shard.get("name"), str):
            return f"'shards[{i}].name' is missing or not a string"
        if not isinstance(shard.get("items"), list):
            return f"'shards[{i}].items' is missing or not a list"
        files = shard.get("files")
        if not isinstance(files, dict) or not all(
            isinstance(f, dict) and isinstance(f.get("bytes"), int) and isinstance(f.get("sha256"), str) for f in files.values()
        ):
            return f"'shards[{i}].files' is missing or not {{field: {{\"bytes\": int, \"sha256\": str}}}}"
    return None


@dataclass
class Shard:
    name: str
    items: list[str]
    files: dict[str, dict[str, Any]]  # field -> {"bytes": int, "sha256": str}

    def path(self, directory: Path, field: str) -> Path:
        return directory / f"{self.name}.{field}.npy"

    def problem(self, directory: Path) -> str | None:
        """Why this shard cannot be read (missing, truncated, changed), or None."""
        for field, recorded in self.files.items():
            path = self.path(directory, field)
            if not path.is_file():
                return f"{path.name} is missing"
            size = path.stat().st_size
            if size != recorded["bytes"]:
                return f"{path.name} has {size} bytes, {recorded['bytes']} were written"
            if sha256(path) != recorded["sha256"]:
                return f"{path.name} does not match its recorded sha256"
        return None


class ShardStore:
    """One cache directory: its settings (what was encoded, and how) and the shards holding the rows."""

    def __init__(self, directory: Path, settings: Mapping[str, Any], fields: Mapping[str, tuple[tuple[int, ...], str]]):
        self.directory = Path(directory)
        self.settings = json.loads(json.dumps(dict(settings), sort_keys=True, default=str))
        self.fields = {k: (tuple(int(d) for d in shape), str(dtype)) for k, (shape, dtype) in fields.items()}
        self.shards: list[Shard] = []
        self.rebuilt_because: str | None = None
        self._maps: dict[tuple[str, str], np.ndarray] = {}

    # -- opening -------------------------------------------------------------------------------------------
    def open(self) -> "ShardStore":
        """Read the index. A cache written for other settings or another format version is cleared (never
        read), and `rebuilt_because` says why; damaged shards are dropped so that their items are encoded
        again."""
        index_path = self.directory / INDEX
        if not index_path.is_file():
            return self
        try:
            index = json.loads(index_path.read_text())
        except (OSError, ValueError) as exc:
            return self._clear(f"its index {index_path} is unreadable ({exc})")
        malformed = index_problem(index)
        if malformed:
            return self._clear(f"its index {index_path} is malformed ({malformed})")
        if index.get("format") != FORMAT_VERSION:
            return self._clear(f"it has format version {index.get('format')}, this crossrec-peft writes {FORMAT_VERSION}")
        why = _difference(index.get("settings", {}), self.settings)
        if why:
            return self._clear(why)
        recorded = {k: (tuple(v["shape"]), v["dtype"]) for k, v in index.get("fields", {}).items()}
        if recorded != self.fields:
            return self._clear(f"its rows hold {recorded}, these settings need {self.fields}")
        for entry in index.get("shards", []):
            shard = Shard(entry["name"], list(entry["items"]), dict(entry["files"]))
            problem = shard.problem(self.directory)
            if problem:
                log.warning("layer cache %s: shard %s is damaged (%s); its %d items are encoded again.", self.directory, shard.name, problem, len(shard.items))
                continue
            self.shards.append(shard)
        return self

    def _clear(self, why: str) -> "ShardStore":
        log.warning("layer cache %s was built for different settings (%s); rebuilding it.", self.directory, why)
        self.rebuilt_because = why
        if self.directory.is_dir():
            shutil.rmtree(self.directory)
        return self

    # -- reading -------------------------------------------------------------------------------------------
    def locations(self) -> dict[str, tuple[int, int]]:
        """item key -> (shard number, row in shard); later shards win (a rebuilt item)."""
        out: dict[str, tuple[int, int]] = {}
        for s, shard in enumerate(self.shards):
            for r, key in enumerate(shard.items):
                out[key] = (s, r)
        return out

    def array(self, shard: int, field: str) -> np.ndarray:
        key = (self.shards[shard].name, field)
        if key not in self._maps:
            self._maps[key] = np.load(self.shards[shard].path(self.directory, field), mmap_mode="r", allow_pickle=False)
        return self._maps[key]

    def bytes_per_item(self) -> int:
        return sum(int(np.prod(shape)) * np.dtype(dtype).itemsize for shape, dtype in self.fields.values())

    def size_on_disk(self) -> int:
        return sum(f["bytes"] for s in self.shards for f in s.files.values())

    # -- writing -------------------------------------------------------------------------------------------
    def check_writable(self) -> None:
        """Fail before any work when the cache directory cannot be created or written, naming it."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.directory, prefix=".probe-"):
                pass
        except OSError as exc:
            raise ConfigError(
                f"Layer cache directory {self.directory} cannot be written ({exc.strerror or exc}). Set data.cache_dir "
                "(or $CROSSREC_PEFT_CACHE) to a writable directory, or turn the cache off."
            ) from None

    def check_space(self, items: int) -> int:
        """The bytes `items` new rows need; fails when the disk does not have them (with some margin)."""
        needed = items * self.bytes_per_item()
        free = shutil.disk_usage(self.directory).free
        if needed * 1.05 + (16 << 20) > free:
            raise ConfigError(
                f"Layer cache {self.directory} needs {needed / 2**20:,.1f} MiB for {items:,} items, but only "
                f"{free / 2**20:,.1f} MiB are free there. Free space or point data.cache_dir elsewhere."
            )
        return needed

    def append(self, items: Sequence[str], rows: Mapping[str, np.ndarray]) -> None:
        """Write one shard of rows (field -> [len(items), *shape]) and record it in the index."""
        number = 1 + max((int(s.name[1:]) for s in self.shards), default=-1)
        shard = Shard(f"s{number:05d}", list(items), {})
        for field, (shape, dtype) in self.fields.items():
            array = np.ascontiguousarray(rows[field], dtype=dtype)
            if array.shape != (len(items), *shape):
                raise ValueError(f"field {field}: rows of shape {array.shape}, expected {(len(items), *shape)}")
            path = shard.path(self.directory, field)
            with atomic_file(path) as tmp, open(tmp, "wb") as fh:
                np.save(fh, array, allow_pickle=False)
                fh.flush()
                os.fsync(fh.fileno())  # on disk before the index names it
            shard.files[field] = {"bytes": path.stat().st_size, "sha256": sha256(path)}
        self.shards.append(shard)
        self._write_index()

    def _write_index(self) -> None:
        index = {
            "format": FORMAT_VERSION,
            "settings": self.settings,
            "fields": {k: {"shape": list(shape), "dtype": dtype} for k, (shape, dtype) in self.fields.items()},
            "shards": [{"name": s.name, "items": s.items, "files": s.files} for s in self.shards],
        }
        with atomic_file(self.directory / INDEX) as tmp:
            tmp.write_text(json.dumps(index))


class CachedRows:
    """Rows of the cache in catalog order, read from the memory-mapped shards on indexing: `rows[index]`
    (a LongTensor of catalog rows) is a float32 tensor [len(index), *shape]. Nothing is loaded up front."""

    def __init__(self, store: ShardStore, field: str, where: np.ndarray):
        self.store = store
        self.field = field
        self.where = where  # [N, 2]: shard number, row in shard
        self.shape = store.fields[field][0]

    def __len__(self) -> int:
        return len(self.where)

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        index = np.asarray(index.cpu() if isinstance(index, torch.Tensor) else index, dtype=np.int64).reshape(-1)
        where = self.where[index]
        out = np.empty((len(index), *self.shape), dtype=np.float32)
        for shard in np.unique(where[:, 0]):
            mine = where[:, 0] == shard
            rows = where[mine, 1]
            out[mine] = self.store.array(int(shard), self.field)[rows]
        return torch.from_numpy(out)

    def all(self) -> torch.Tensor:
        return self[torch.arange(len(self))]


class MemoryRows:
    """The same interface over rows computed in memory (no cache directory: a Recommender's new items)."""

    def __init__(self, values: torch.Tensor):
        self.values = values

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        return self.values[index].float()

    def all(self) -> torch.Tensor:
        return self.values.float()


def _difference(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> str | None:
    """The first setting that differs, in words ("backbone.sha256 was 1a2b.., now 3c4d..")."""
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            found = _difference(a, b, f"{prefix}{key}.")
            if found:
                return found
        elif a != b:
            return f"{prefix}{key} was {_short(a)}, now {_short(b)}"
    return None


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."
