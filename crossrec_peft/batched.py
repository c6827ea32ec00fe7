"""Many recommendations at once, whatever their domains: `Recommender.recommend_many` and the server's batches.

    queries = [Query(["E0001", "E0002"], k=5, domain="ecommerce"), Query(["F0007"], k=3, domain="finance")]
    rec.recommend_many(queries)          # [[(item_id, score), ...], [...]]

Each query is checked on its own first (`prepare`: its domain, its item ids, its k), so that a server can answer
a bad request with its own error and still batch the others. `compute` then does the work of the whole batch
in a few tensor operations: the history items given by their fields (new items) of every domain are encoded in
one pass through the shared backbones; per domain, every history is gathered from the catalog index in one
indexing operation, every user is encoded in one call of the user tower, and the catalog is ranked for every
user by one matrix product and one top-k. Results equal `Recommender.recommend` for each query alone (up to
float summation order).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import torch

from .errors import ConfigError, did_you_mean, named
from .hybrid import history_rows

if TYPE_CHECKING:
    from .recommender import Recommender, _Domain


class QueryError(ConfigError):
    """A query the recommender cannot answer, with the request field at fault and a short machine-readable kind
    (unknown_domain, unknown_item, empty_history, k_out_of_range, invalid_item)."""

    def __init__(self, message: str, *, field: str, kind: str):
        super().__init__(message)
        self.field = field
        self.kind = kind


@dataclass
class Query:
    """One recommendation request: a history (item ids of the domain's catalog or item field dicts, oldest
    first), how many items, the domain (None: the active one), and whether history items may come back."""

    history: Sequence[Any]
    k: int = 10
    domain: str | None = None
    exclude_history: bool = True


@dataclass
class Prepared:
    """A checked query: its domain, and per history item of the recent window its index row (ids) or fields."""

    query: Query
    domain: "_Domain"
    recent: list[int | Mapping[str, Any]]  # the last max_history items: index rows, or field dicts (new items)
    excluded: list[int] = field(default_factory=list)  # index rows left out of the results
    k: int = 10
    # The whole history as index rows, oldest first, for the hybrid's term: an item given by fields has a row
    # below 0 of its own (it counts in the term's mean, adding nothing; hybrid.history_rows).
    history_rows: list[int] = field(default_factory=list)


def index_rows(d: "_Domain") -> dict[str, int]:
    """item id -> row of the domain's index (kept beside the index; rebuilt when the index changes)."""
    cached = getattr(d.index, "_rows", None)
    if cached is None:
        cached = {i: r for r, i in enumerate(d.index.item_ids)}
        d.index._rows = cached  # type: ignore[union-attr]  # the same cache Recommender.recommend uses
    return cached


def resolve_domain(rec: "Recommender", name: str | None) -> "_Domain":
    name = name if name is not None else rec.domain
    if name is None:
        raise QueryError("No domain loaded.", field="domain", kind="unknown_domain")
    if name not in rec._domains:
        raise QueryError(
            f"Unknown domain '{name}'.{did_you_mean(name, rec._domains)} Loaded: {', '.join(rec._domains) or 'none'}.",
            field="domain", kind="unknown_domain",
        )
    return rec._domains[name]


def prepare(rec: "Recommender", query: Query) -> Prepared:
    """Check one query against its domain's catalog index (built on first use). Raises QueryError naming the
    field at fault: an unknown domain (with the closest name), an empty history, unknown item ids (each
    named), k below 1 or above the catalog size."""
    d = resolve_domain(rec, query.domain)
    history = list(query.history)
    if not history:
        raise QueryError(f"An empty history for domain '{d.name}': give at least one item.", field="history", kind="empty_history")
    if d.index is None:
        # Before the catalog is encoded (minutes for a real catalog on a CPU): a mistyped id fails at once.
        catalog = rec._catalog(d)
        _unknown_ids(d, [str(i) for i in history if not isinstance(i, Mapping) and str(i) not in catalog.rows], len(catalog.item_ids))
    rec._ensure_index(d)
    assert d.index is not None
    size = len(d.index.item_ids)
    k = query.k
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= size:
        raise QueryError(f"k must be an integer from 1 to {size} (the catalog size of domain '{d.name}'), got {k!r}.",
                         field="k", kind="k_out_of_range")
    rows = index_rows(d)
    unknown: list[str] = []
    resolved: list[int | Mapping[str, Any]] = []
    for position, item in enumerate(history):
        if isinstance(item, Mapping):
            check_fields(d, item, f"history[{position}]")
            resolved.append(item)
            continue
        row = rows.get(str(item))
        if row is None:
            unknown.append(str(item))
        else:
            resolved.append(row)
    _unknown_ids(d, unknown, size)
    known = sorted({r for r in resolved if isinstance(r, int)})
    excluded = known if query.exclude_history else []
    return Prepared(query, d, resolved[-d.max_history :], excluded, k, history_rows(history, rows))


def check_fields(d: "_Domain", item: Mapping[Any, Any], where: str) -> None:
    """An item given by its fields (`where`: its place in the request, as "history[0]"): every field the domain's
    model reads is a string or null, and each text modality gets non-empty text from at least one of its fields.
    QueryError (kind invalid_item) naming the field otherwise: the backbone would turn 5 or ["a"] into text
    silently, and an item without text fails deep in it with a message that does not name the field."""
    if not all(isinstance(key, str) for key in item):
        raise QueryError(f"{where}: an item's field names must be strings.", field=where, kind="invalid_item")
    read: list[str] = []
    for enc in d.model.modalities.values():
        read.extend(f for f in enc.fields if f not in read)
    for key in read:
        value = item.get(key)
        if value is not None and not isinstance(value, str):
            raise QueryError(f"{where}.{key}: must be a string (or null), got {_json_kind(value)}.", field=f"{where}.{key}", kind="invalid_item")
    for enc in d.model.modalities.values():
        if enc.backbone.modality != "text" or any(str(item.get(f) or "").strip() for f in enc.fields):
            continue
        at = next((f for f in enc.fields if f in item), enc.fields[0])
        state = "missing" if at not in item else ("null" if item[at] is None else "empty")
        others = [k for k in item if k not in read and k != "item_id"]
        hint = f" The item has {named(others)}, which domain '{d.name}' does not read." if others else ""
        which = f"at least one of {named(enc.fields)}" if len(enc.fields) > 1 else named(enc.fields)
        raise QueryError(
            f"{where}.{at}: {state}; an item given by its fields needs non-empty text in {which} "
            f"(what domain '{d.name}' reads as text).{hint}", field=f"{where}.{at}", kind="invalid_item",
        )


def _json_kind(value: Any) -> str:
    """How a JSON value of the wrong kind is named in a message: 'a number (5)', 'a list (["a", "b"])'."""
    import json

    kind = ("true/false" if isinstance(value, bool) else "a number" if isinstance(value, (int, float))
            else "a list" if isinstance(value, (list, tuple)) else "an object" if isinstance(value, Mapping) else type(value).__name__)
    shown = json.dumps(value, default=str)
    return f"{kind} ({shown[:60]}{'...' if len(shown) > 60 else ''})"


def _unknown_ids(d: "_Domain", unknown: list[str], size: int) -> None:
    if unknown:
        raise QueryError(f"Unknown item ids in the history for domain '{d.name}': {named(unknown)} (not in its catalog of {size} items).",
                         field="history", kind="unknown_item")


@torch.no_grad()
def compute(rec: "Recommender", batch: Sequence[Prepared]) -> list[list[tuple[str, float]]]:
    """The top-k of every prepared query, best first, as (item_id, score): the cosine, plus the co-occurrence
    term where the domain ranks as a hybrid (as `Recommender.recommend`)."""
    # New items (field dicts) of every query and domain: one pass per shared backbone.
    pairs = [(p.domain, item) for p in batch for item in p.recent if isinstance(item, Mapping)]
    encoded = iter(rec._content_chunked(pairs)) if pairs else iter(())
    fields: list[dict[int, torch.Tensor]] = [
        {j: next(encoded) for j, item in enumerate(p.recent) if isinstance(item, Mapping)} for p in batch
    ]
    out: list[list[tuple[str, float]]] = [[] for _ in batch]
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(batch):
        groups.setdefault(p.domain.name, []).append(i)
    for members in groups.values():
        d = batch[members[0]].domain
        assert d.index is not None and d.vectors is not None
        width = max(len(batch[i].recent) for i in members)
        rows = torch.zeros(len(members), width, dtype=torch.long)
        mask = torch.zeros(len(members), width, dtype=torch.bool)
        for j, i in enumerate(members):
            recent = batch[i].recent
            rows[j, : len(recent)] = torch.tensor([r if isinstance(r, int) else 0 for r in recent])
            mask[j, : len(recent)] = True
        history = d.index.content[rows]  # [B, L, D]: every history of the domain in one gather
        for j, i in enumerate(members):
            for position, vector in fields[i].items():
                history[j, position] = vector.to(history.dtype).cpu()
        users = d.model.user_vectors(history.to(rec.device), mask.to(rec.device)).float()
        scores = users @ d.vectors.T  # [B, N]
        extra = d.extra_scores([batch[i].history_rows for i in members])
        if extra is not None:
            scores = scores + extra.to(scores.device)
        drop_rows = [j for j, i in enumerate(members) for _ in batch[i].excluded]
        drop_cols = [r for i in members for r in batch[i].excluded]
        if drop_rows:
            scores[torch.tensor(drop_rows), torch.tensor(drop_cols)] = float("-inf")
        size = scores.shape[1]
        top = torch.topk(scores, min(max(batch[i].k for i in members), size), dim=1)
        indices, values = top.indices.tolist(), top.values.tolist()
        ids = d.index.item_ids
        for j, i in enumerate(members):
            take = min(batch[i].k, size - len(batch[i].excluded))
            out[i] = [(ids[r], s) for r, s in zip(indices[j][:take], values[j][:take])]
    return out
