"""A domain's item catalog and its index: item ids and content vectors computed with that domain's adapter.

    <cache>/index/<domain>-<adapter hash>-<catalog hash>.safetensors
        tensor "content" [items, dim] float32: each item's content vector (before the item head)
        metadata: format, domain, adapter_sha256, catalog_sha256, item_ids (JSON)

The file name carries both hashes, so changing the adapter (its crossrec.json, which holds the sha256 of
every file) or the catalog (the items table and the files its image fields name) makes a new index; a
stale one is never read. Search is exact (one matrix product and top-k) by default; FAISS (the optional
extra `crossrec-peft[faiss]`) gives an approximate inverted-file search for large catalogs, whose recall
against exact search `crossrec-peft index --faiss` reports. See docs/recommender.md.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from .errors import ConfigError, DataError, PackageError, named
from .fsutil import atomic_file, save_safetensors, sha256, update_digest

FORMAT = "crossrec-index/1"


# -- the catalog ------------------------------------------------------------------------------------------------


@dataclass
class Catalog:
    """A domain's items table (the standard layout's items.{parquet,jsonl,csv}), read in place."""

    directory: Path
    items_path: Path
    table: Any  # datasets.Dataset
    item_ids: list[str]
    rows: dict[str, int] = field(repr=False)

    def where(self, row: int) -> str:
        line = {".jsonl": row + 1, ".json": row + 1, ".csv": row + 2}.get(self.items_path.suffix)
        return f"{self.items_path}, line {line}" if line else f"{self.items_path}, row {row + 1}"

    def lookup(self, ids: Iterable[str], what: str = "item ids") -> list[int]:
        """Catalog rows of `ids`; unknown ids raise DataError naming them."""
        ids = [str(i) for i in ids]
        unknown = [i for i in ids if i not in self.rows]
        if unknown:
            raise DataError(f"Unknown {what}: {named(unknown)} (not in {self.items_path}).")
        return [self.rows[i] for i in ids]

    def columns(self, fields: Sequence[str], rows: Sequence[int]) -> dict[str, list]:
        missing = [f for f in fields if f not in self.table.column_names]
        if missing:
            raise DataError(
                f"{self.items_path}: missing column {', '.join(repr(m) for m in missing)}, which the adapter's model reads. "
                f"Columns present: {', '.join(self.table.column_names)}."
            )
        index = np.asarray(rows, dtype=np.int64)
        return {f: self.table.data.column(f).take(index).to_pylist() for f in fields}


def load_catalog(directory: str | Path) -> Catalog:
    """The items table of a standard-layout directory (interactions are not needed to recommend)."""
    from .data.layout import find_table, read_table

    directory = Path(directory).expanduser()
    if not directory.is_dir():
        what = "is a file; give the directory that holds the items table" if directory.exists() else "does not exist"
        raise DataError(f"Catalog directory '{directory}' {what}.")
    items_path = find_table(directory, "items")
    table = read_table(items_path)
    if "item_id" not in table.column_names:
        raise DataError(f"{items_path}: missing column 'item_id'. Columns present: {', '.join(table.column_names)}.")
    raw = table.data.column("item_id").to_pylist()
    catalog = Catalog(directory, items_path, table, [], {})
    ids: list[str] = []
    rows: dict[str, int] = {}
    for row, value in enumerate(raw):
        if value is None or not str(value).strip():
            raise DataError(f"{catalog.where(row)}, field 'item_id': empty value.")
        text = str(value)
        if text in rows:
            raise DataError(f"{catalog.where(row)}, field 'item_id': duplicate item id '{text}' (first at {catalog.where(rows[text])}).")
        rows[text] = row
        ids.append(text)
    catalog.item_ids, catalog.rows = ids, rows
    return catalog


# -- fingerprints and files -------------------------------------------------------------------------------------


def adapter_fingerprint(adapter_dir: str | Path) -> str:
    """sha256 of the package manifest, which records the sha256 of every file of the package."""
    from .package import MANIFEST

    return sha256(Path(adapter_dir) / MANIFEST)


def catalog_fingerprint(catalog: Catalog, file_fields: Sequence[str] = ()) -> str:
    """sha256 over the items table and every file that its `file_fields` (image paths) name."""
    digest = hashlib.sha256()
    digest.update(catalog.items_path.name.encode())
    update_digest(digest, catalog.items_path)
    for f in file_fields:
        if f not in catalog.table.column_names:
            continue
        for value in catalog.table.data.column(f).to_pylist():
            if value is None:
                continue
            path = catalog.directory / str(value)
            digest.update(str(value).encode())
            if path.is_file():
                update_digest(digest, path)
    return digest.hexdigest()


def default_path(domain: str, adapter_sha: str, catalog_sha: str, cache_dir: str | Path | None = None) -> Path:
    from .data.source import cache_root

    return cache_root(str(cache_dir) if cache_dir else None) / "index" / f"{domain}-{adapter_sha[:16]}-{catalog_sha[:16]}.safetensors"


@dataclass
class Index:
    item_ids: list[str]
    content: torch.Tensor  # [items, dim] float32
    meta: dict[str, str]


def save_index(path: str | Path, index: Index) -> Path:
    """Written beside the target and renamed, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {**index.meta, "format": FORMAT, "item_ids": json.dumps(index.item_ids)}
    with atomic_file(path) as tmp:
        save_safetensors({"content": index.content.float().contiguous()}, tmp, metadata=meta)
    return path


def read_index(path: str | Path) -> Index:
    from safetensors import safe_open

    path = Path(path)
    if path.is_dir():
        raise DataError(f"Index file '{path}' is a directory; give the .safetensors file crossrec-peft index wrote.")
    if not path.is_file():
        raise DataError(f"Index file '{path}' does not exist; build it with: crossrec-peft index ADAPTER --data DIR")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
            content = fh.get_tensor("content")
    except Exception as exc:  # safetensors raises its own error types for a bad header
        raise DataError(f"{path}: not a readable safetensors index ({str(exc).splitlines()[0]}).") from None
    if meta.get("format") != FORMAT:
        raise DataError(f"{path}: index format {meta.get('format')!r}, this crossrec-peft reads {FORMAT}; rebuild it with crossrec-peft index.")
    try:
        ids = json.loads(meta.pop("item_ids", "[]"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: metadata 'item_ids' is not valid JSON ({exc}); rebuild it with crossrec-peft index.") from None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        bad = ids if not isinstance(ids, list) else next(i for i in ids if not isinstance(i, str))
        raise DataError(
            f"{path}: metadata 'item_ids' must be a JSON list of item id strings, but holds {json.dumps(bad)[:60]}; "
            "rebuild it with crossrec-peft index."
        )
    if content.dim() != 2:
        raise DataError(f"{path}: tensor 'content' has shape {tuple(content.shape)}, not [items, dim]; rebuild it with crossrec-peft index.")
    if len(ids) != len(content):
        raise DataError(f"{path}: {len(ids)} item ids but {len(content)} vectors; rebuild it with crossrec-peft index.")
    return Index(item_ids=ids, content=content, meta=meta)


def check_outside_package(path: Path, what: str) -> None:
    """Refuse an index path inside an adapter package: a package may hold only the files its crossrec.json lists
    (and documentation), so an index written there would make the package refuse to load."""
    from .package import MANIFEST

    path = Path(path).expanduser().absolute()
    package = next((d for d in path.parents if (d / MANIFEST).is_file()), None)
    if package is not None:
        raise ConfigError(
            f"{what} {path}: inside the adapter package {package}, which may hold only the files its {MANIFEST} "
            f"lists (an unlisted file makes the package refuse to load). Write the index outside it, for example "
            f"{package.parent / (package.name + '-index.safetensors')}, or leave {what} out to keep it in the cache."
        )


def check_index(index: Index, path: Path, *, domain: str, adapter_sha: str, catalog_sha: str | None = None) -> None:
    """Refuse an index built with another adapter (or, when known, another catalog)."""
    if index.meta.get("adapter_sha256") != adapter_sha:
        raise PackageError(
            f"{path}: this index was built with another version of the '{index.meta.get('domain')}' adapter than the one "
            f"loaded for domain '{domain}'; rebuild it with: crossrec-peft index ADAPTER --data DIR"
        )
    if catalog_sha is not None and index.meta.get("catalog_sha256") != catalog_sha:
        raise DataError(f"{path}: this index was built from another version of the catalog; rebuild it with crossrec-peft index.")


# -- search -----------------------------------------------------------------------------------------------------


def exact_top_k(vectors: torch.Tensor, query: torch.Tensor, k: int, exclude: Sequence[int] = (),
                extra: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, scores) of the k highest inner products (plus `extra[row]` where given), best first, leaving out
    the rows in `exclude`."""
    scores = vectors @ query
    if extra is not None:
        scores = scores + extra
    if len(exclude):
        scores[torch.as_tensor(list(exclude), dtype=torch.long)] = float("-inf")
    k = min(k, len(scores) - len(set(exclude)))
    top = torch.topk(scores, max(k, 0))
    return top.indices, top.values


class FaissSearch:
    """Approximate inner-product search with FAISS: an inverted file (IVF-Flat) of about sqrt(N) lists,
    `nprobe` of which are scanned per query. Built in memory from the index's vectors."""

    def __init__(self, vectors: torch.Tensor, *, nlist: int | None = None, nprobe: int = 16, seed: int = 0):
        try:
            import faiss
        except ImportError:
            raise ConfigError("FAISS search needs the optional extra: pip install 'crossrec-peft[faiss]' (faiss-cpu).") from None
        data = np.ascontiguousarray(vectors.detach().float().cpu().numpy())
        n, dim = data.shape
        self.nlist = int(nlist or max(1, min(round(math.sqrt(n)), n // 39 or 1)))
        quantizer = faiss.IndexFlatIP(dim)
        self._quantizer = quantizer  # the IVF index refers to it without owning it
        if self.nlist == 1:  # too few items to cluster (FAISS wants 39 per list): one flat list is exact
            self.index, self.nprobe = quantizer, 1
        else:
            self.index = faiss.IndexIVFFlat(quantizer, dim, self.nlist, faiss.METRIC_INNER_PRODUCT)
            self.index.cp.seed = seed
            self.index.train(data)
            self.nprobe = self.index.nprobe = min(nprobe, self.nlist)
        self.index.add(data)

    def search(self, query: torch.Tensor, k: int, exclude: Sequence[int] = ()) -> tuple[torch.Tensor, torch.Tensor]:
        skip = set(int(e) for e in exclude)
        q = np.ascontiguousarray(query.detach().float().cpu().numpy().reshape(1, -1))
        scores, rows = self.index.search(q, k + len(skip))
        keep = [(int(r), float(s)) for r, s in zip(rows[0], scores[0]) if r >= 0 and int(r) not in skip][:k]
        return torch.tensor([r for r, _ in keep], dtype=torch.long), torch.tensor([s for _, s in keep])


def recall_against_exact(vectors: torch.Tensor, search: FaissSearch, queries: torch.Tensor, k: int) -> float:
    """Mean share of the exact top-k that the approximate search also returns."""
    found = 0
    for q in queries:
        exact = set(exact_top_k(vectors, q, k)[0].tolist())
        approx = set(search.search(q, k)[0].tolist())
        found += len(exact & approx)
    return found / (k * len(queries))
