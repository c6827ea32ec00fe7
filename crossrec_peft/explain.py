"""Why an item is recommended: the history items that drove its score and the part each modality played.

    rec.explain(["E0001", "E0002", "E0003"], "E0420")
    {"item_id": "E0420", "score": 0.61, "method": "exact",
     "history": [{"item_id": "E0002", "contribution": 0.33, "share": 0.54}, ...],   # largest first
     "modality_method": "masking",
     "modalities": [{"modality": "text", "contribution": 0.41, "share": 0.77}, {"modality": "image", ...}]}

History items. The score is cos(u, e) with u = normalize(head(sum_i w_i h_i)) when the user encoder pools the
history with weights w (`pooling_weights`: 1/n for `mean`, the attention weights for `attention`). The user
head is linear, so with g_i = head(h_i) and z = sum_i w_i g_i the score is sum_i w_i (e . g_i) / |z|: one exact
term per history item, which sum to the score (method "exact"; checked numerically at run time, and the
explanation falls back to leave-one-out when the identity does not hold). An encoder without pooling weights
(`sasrec`) is explained by leaving each item out: its contribution is the score minus the score of the history
without it (method "leave_one_out"; these need not sum to the score). `share` is each contribution over the sum
of the contributions (for "exact", over the score).

Modalities. Each modality's contribution is the candidate's score minus its score with that modality marked
missing in the candidate item, through the fusion's own missing-modality path (its learned placeholder or its
mask), the user staying as the full history makes it: the items are re-encoded once, the fusion's inputs
captured, and the fusion run again per masked modality (modality_method "masking"). Masking a modality in
the history as well would make every item look alike through the shared placeholder and raise every score,
which says nothing about the item. `share` is each contribution over the sum of their
absolute values. Without a catalog to re-encode from (an index used alone), modalities are left out and
modality_method says why.

Co-occurrence. A domain that ranks as a hybrid (crossrec_peft/hybrid.py) adds weight x the item's mean
co-occurrence similarity to the history's items: `score` is then the sum `recommend` ranks by, `model_score`
the cosine explained above, and `cooccurrence` the term with each history item's similarity to the item. An
item that borrows the term (no neighbour list holds it) also has `borrowed_from`, the items it borrows from
with their shares, and `borrow_weight`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import torch
import torch.nn.functional as F

from .batched import Query, QueryError, index_rows, prepare
from .errors import DataError, named

if TYPE_CHECKING:
    from .recommender import Recommender, _Domain


def _name(item: Any, position: int) -> str:
    if isinstance(item, Mapping):
        return str(item.get("item_id", f"history[{position}]"))
    return str(item)


def _share(values: list[float], total: float) -> list[float | None]:
    return [v / total if abs(total) > 1e-12 else None for v in values]


@torch.no_grad()
def explain_items(rec: "Recommender", history: Sequence[Any], item_ids: Sequence[str], *, domain: str | None = None,
                  modalities: bool = True) -> list[dict[str, Any]]:
    """One explanation per item of `item_ids` (catalog ids of the domain) for a user with this history."""
    prepared = prepare(rec, Query(list(history), k=1, domain=domain, exclude_history=False))
    d = prepared.domain
    assert d.index is not None and d.vectors is not None
    positions = index_rows(d)
    unknown = [str(i) for i in item_ids if str(i) not in positions]
    if unknown:
        raise QueryError(f"Unknown item ids to explain for domain '{d.name}': {named(unknown)}.",
                         field="item_id", kind="unknown_item")
    rows = [positions[str(i)] for i in item_ids]
    recent = prepared.recent
    names = [_name(item, p) for p, item in enumerate(list(history))][-len(recent) :]
    content = _history_content(rec, d, recent)  # [n, D]
    items = d.vectors[torch.as_tensor(rows, dtype=torch.long)] if rows else d.vectors[:0]  # [C, D]
    scores, contributions, method = _history_terms(d, content, items)

    out: list[dict[str, Any]] = []
    for c, item_id in enumerate(item_ids):
        terms = contributions[:, c].tolist()
        total = float(scores[c]) if method == "exact" else sum(terms)
        shares = _share(terms, total)
        ranked = sorted(zip(names, terms, shares), key=lambda t: -t[1])
        out.append({
            "item_id": str(item_id), "score": float(scores[c]), "method": method,
            "history": [{"item_id": n, "contribution": t, "share": s} for n, t, s in ranked],
        })
    if d.hybrid is not None:
        _add_cooccurrence(d, list(history), out)
    if modalities and item_ids:
        try:
            parts = _modality_terms(rec, d, recent, rows)
            for c, entry in enumerate(out):
                terms = [(m, float(v[c])) for m, v in parts.items()]
                shares = _share([t for _, t in terms], sum(abs(t) for _, t in terms))
                entry["modality_method"] = "masking"
                entry["modalities"] = [{"modality": m, "contribution": t, "share": s} for (m, t), s in zip(terms, shares)]
        except DataError as exc:  # no catalog to re-encode the items from
            for entry in out:
                entry["modality_method"] = f"unavailable: {exc}"
                entry["modalities"] = []
    return out


def _add_cooccurrence(d: "_Domain", history: list, out: list[dict[str, Any]]) -> None:
    """A hybrid domain's co-occurrence term (hybrid.py) beside the model's score: `score` becomes what
    `recommend` ranks by, `model_score` keeps the cosine the history and modality terms explain, and
    `cooccurrence` gives the term and each history item's similarity to the item (the term is `weight` times
    their mean over the distinct history items, each with its `share` of that mean: equal shares, or more for
    recent items where the run chose a recency decay)."""
    assert d.hybrid is not None
    ids = [str(h) for h in history if not isinstance(h, Mapping)]
    shares = d.hybrid.history_shares(history)
    catalog = d.hybrid_catalog()
    for entry in out:
        term = float(d.hybrid.by_ids(history, [entry["item_id"]], catalog)[0])
        similar = [(h, v) for h, v in d.hybrid.per_history_item(ids, entry["item_id"]).items() if v > 0]
        entry["model_score"] = entry["score"]
        entry["score"] = entry["model_score"] + term
        entry["cooccurrence"] = {
            "weight": d.hybrid.weight, "contribution": term,
            "history": [{"item_id": h, "similarity": v, "share": shares[h]} for h, v in sorted(similar, key=lambda t: -t[1])],
        }
        borrowed = d.hybrid.borrowed_from(entry["item_id"], catalog)
        if borrowed:  # an item no neighbour list holds: its term is its nearest items' (hybrid.py Borrowing)
            entry["cooccurrence"]["borrowed_from"] = [{"item_id": i, "share": w} for i, w in borrowed]
            entry["cooccurrence"]["borrow_weight"] = d.hybrid.borrow_weight


def _history_content(rec: "Recommender", d: "_Domain", recent: list) -> torch.Tensor:
    fields = [item for item in recent if isinstance(item, Mapping)]
    encoded = iter(rec._content_chunked([(d, f) for f in fields])) if fields else iter(())
    rows = [d.index.content[r] if isinstance(r, int) else next(encoded).float().cpu() for r in recent]
    return torch.stack(rows).to(rec.device)


def _history_terms(d: "_Domain", content: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(scores [C], contributions [n, C], method) of the candidate item vectors `items` for the history `content`."""
    model = d.model
    mask = torch.ones(1, len(content), dtype=torch.bool, device=content.device)
    user = model.user_vectors(content.unsqueeze(0), mask)[0].float()
    scores = items.float() @ user
    pooling = getattr(model.user_encoder, "pooling_weights", None)
    if callable(pooling):
        weights = pooling(content.unsqueeze(0), mask)[0].float()  # [n]
        heads = model.user_head(content).float()  # [n, D]: the head is linear, so head(sum w h) = sum w head(h)
        z = (weights.unsqueeze(1) * heads).sum(0)
        norm = z.norm()
        if norm > 0 and torch.allclose(F.normalize(z, dim=0), user, atol=1e-4):
            terms = weights.unsqueeze(1) * (heads @ items.float().T) / norm  # [n, C]
            return scores, terms, "exact"
    # Leave one out: every history without one of its items, encoded in one call.
    n = len(content)
    if n == 1:
        return scores, scores.unsqueeze(0).clone(), "leave_one_out"  # without its only item the user is empty
    keep = ~torch.eye(n, dtype=torch.bool, device=content.device)
    without = content.unsqueeze(0).expand(n, n, -1)[keep].view(n, n - 1, -1)
    users = model.user_vectors(without, torch.ones(n, n - 1, dtype=torch.bool, device=content.device)).float()
    return scores, scores.unsqueeze(0) - users @ items.float().T, "leave_one_out"


def _modality_terms(rec: "Recommender", d: "_Domain", recent: list, rows: list[int]) -> dict[str, torch.Tensor]:
    """Per modality: the score of each candidate minus its score with that modality missing everywhere."""
    catalog_rows = rec._rows_of(d, [d.index.item_ids[r] if isinstance(r, int) else r for r in recent]
                                + [d.index.item_ids[r] for r in rows], "item ids")
    captured: list[tuple] = []
    hook = d.model.fusion.register_forward_pre_hook(lambda module, args: captured.append(args))
    try:
        rec._content([(d, r) for r in catalog_rows])  # one pass; the hook keeps the fusion's inputs
    finally:
        hook.remove()
    embeddings, present = captured[-1]
    n = len(recent)

    content = d.model.fusion(embeddings, present).float()
    mask = torch.ones(1, n, dtype=torch.bool, device=content.device)
    user = d.model.user_vectors(content[:n].unsqueeze(0), mask)[0].float()

    def scores(present_now: dict[str, torch.Tensor]) -> torch.Tensor:
        return (d.model.item_vectors(d.model.fusion(embeddings, present_now)[n:].float()).float() @ user).cpu()

    full = scores(present)
    out = {}
    for modality in present:
        masked = dict(present)
        off = present[modality].clone()
        off[n:] = False  # the candidates only: the user (from the full history) stays as it is
        masked[modality] = off
        out[modality] = full - scores(masked)
    return out


def explain(rec: "Recommender", history: Sequence[Any], item_id: str | Sequence[str], domain: str | None = None) -> Any:
    """`Recommender.explain`: one explanation (a dict) for one item id, a list of them for a list of ids."""
    if isinstance(item_id, (str, int)):
        return explain_items(rec, history, [str(item_id)], domain=domain)[0]
    return explain_items(rec, history, [str(i) for i in item_id], domain=domain)

