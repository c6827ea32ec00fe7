"""Item co-occurrence added to the model's ranking: a hybrid of the content model with item-kNN.

    score(u, j) = cos(user u, item j) + weight * mean over u's distinct history items i of sim(i, j)

`sim(i, j) = C_ij / sqrt(n_i n_j)` is the item-kNN baseline's cosine on the training co-occurrences (C = X^T X
of the binary users x items matrix of the training sequences, n_i = C_ii), kept for each item's `neighbours`
most similar items (item-kNN's usual truncation). On Amazon Scientific the trained content model and these
counts know different things about the items bought before, and the sum ranks better than either
(docs/real-data.md). The mean over the history (not item-kNN's sum) keeps one weight right for short and long
histories alike; `hybrid.weights` are tried on the validation split after training and the best one (0, the
model alone, included) is kept.

What the package keeps is item-level only: for each training item its neighbours and their similarities
(`Neighbours`, one safetensors file, item ids in its metadata), no user and no sequence.

An item without co-occurrences of its own (never bought in training, or new to the catalog) would score 0
on the term while every bought item scores above 0, so the sum would rank it down for that alone. With
`borrow` set, such an item borrows the term of its `borrow` nearest items that have co-occurrences, by the
model's own item vectors (cosine, shares proportional to the positive similarities), times `borrow_weight`
(`Borrowing`). On Scientific, where a fifth of the test targets were never bought in training, this is what
lifts the hybrid above the untuned backbone on the cold-start slice (docs/real-data.md).

With a recency `decay` below 1 the mean is weighted: each distinct history item counts decay^(steps from its
last occurrence to the end of the history) (`recency_shares`). What a user bought last says most about what
comes next; on Scientific decay 0.8 gains on validation and test on two catalogs (docs/real-data.md).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import torch

from .errors import PackageError
from .fsutil import save_safetensors

FILE = "hybrid_neighbours.safetensors"


@dataclass
class Neighbours:
    """Each item's most similar items on the training co-occurrences, as a sparse row-per-item table (CSR):
    item `item_ids[i]`'s neighbours are `index[indptr[i]:indptr[i+1]]` (positions in `item_ids`) with
    similarities `similarity[...]`, most similar first."""

    item_ids: list[str]
    per_item: int  # at most this many neighbours per item (fewer where fewer items co-occur with it)
    indptr: torch.Tensor  # [N + 1] int64
    index: torch.Tensor  # [nnz] int64
    similarity: torch.Tensor  # [nnz] float32

    @classmethod
    def fit(cls, sequences: Sequence[np.ndarray], item_ids: Sequence[str], k: int, *, block: int | None = None) -> "Neighbours":
        """The `k` most similar items of each item (similarity > 0, the item itself left out), computed a block
        of items at a time: two dense block x items and users x block products, the block sized (by default)
        to keep each under 2^26 floats (256 MB), whatever the catalog size."""
        from .baselines.itemknn import interaction_matrix

        num_items = len(item_ids)
        block = block or max(1, min(1024, 2**26 // max(1, num_items, len(sequences))))
        x = interaction_matrix(list(sequences), num_items)
        xt = x.t().coalesce()
        n = torch.zeros(num_items)
        n.index_add_(0, x.indices()[1], x.values())
        inv_sqrt = torch.where(n > 0, n.clamp(min=1).rsqrt(), torch.zeros_like(n))
        counts, index, similarity = [], [], []
        for start in range(0, num_items, block):
            rows = torch.arange(start, min(start + block, num_items))
            scaled = torch.zeros(num_items, len(rows))
            scaled[rows, torch.arange(len(rows))] = inv_sqrt[rows]
            sims = (torch.sparse.mm(xt, torch.sparse.mm(x, scaled)).T * inv_sqrt).contiguous()  # [block, items]
            sims[torch.arange(len(rows)), rows] = 0.0  # an item is not its own neighbour
            top = torch.topk(sims, min(k, num_items), dim=1)
            keep = top.values > 0
            counts.append(keep.sum(1))
            index.append(top.indices[keep])
            similarity.append(top.values[keep])
        indptr = torch.zeros(num_items + 1, dtype=torch.long)
        if counts:
            indptr[1:] = torch.cumsum(torch.cat(counts), 0)
        return cls(list(map(str, item_ids)), int(k), indptr, torch.cat(index) if index else torch.zeros(0, dtype=torch.long),
                   torch.cat(similarity).float() if similarity else torch.zeros(0))

    @property
    def pairs(self) -> int:
        return int(self.index.numel())

    # -- the package's file ----------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        tensors = {"indptr": self.indptr.contiguous(), "index": self.index.to(torch.int32).contiguous(),
                   "similarity": self.similarity.to(torch.float16).contiguous()}  # 3 significant digits: enough to rank
        save_safetensors(tensors, path, metadata={
            "format": "pt", "item_ids": json.dumps(self.item_ids), "per_item": str(self.per_item)})

    @classmethod
    def load(cls, path: str | Path) -> "Neighbours":
        """Read a saved table (safetensors only); PackageError naming the file when it does not hold one."""
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
                item_ids, per_item = json.loads(metadata["item_ids"]), int(metadata["per_item"])
                indptr, index, similarity = (f.get_tensor(name) for name in ("indptr", "index", "similarity"))
        except Exception as exc:  # SafetensorError, OSError, a missing key, bad JSON
            raise PackageError(f"{path}: not a readable co-occurrence table ({type(exc).__name__}: {exc}).") from None
        table = cls([str(i) for i in item_ids], per_item, indptr.long(), index.long(), similarity.float())
        table.check(path)
        return table

    def check(self, where: str | Path) -> None:
        n, nnz = len(self.item_ids), self.index.numel()
        problems = []
        if self.indptr.shape != (n + 1,) or int(self.indptr[0]) != 0 or int(self.indptr[-1]) != nnz or bool((self.indptr.diff() < 0).any()):
            problems.append(f"indptr must rise from 0 to {nnz} over {n + 1} entries")
        if self.similarity.shape != self.index.shape:
            problems.append(f"{self.similarity.numel()} similarities for {nnz} neighbours")
        if nnz and (int(self.index.min()) < 0 or int(self.index.max()) >= n):
            problems.append(f"neighbour positions must lie in 0..{n - 1}")
        if problems:
            raise PackageError(f"{where}: an inconsistent co-occurrence table: {'; '.join(problems)}.")

    # -- scoring -------------------------------------------------------------------------------------------
    def on_catalog(self, catalog_ids: Sequence[str], vectors: torch.Tensor | None = None, *, borrow: int = 0,
                   borrow_weight: float = 0.0, decay: float = 1.0) -> "CooccurrenceTerm":
        """The term on a catalog's rows: neighbours are matched by item id, so the catalog may differ from the
        training one (items it lacks are dropped). Its items without neighbours score 0, unless `vectors` (the
        model's item vectors of the catalog's rows) are given with `borrow` and `borrow_weight` above 0: then
        they borrow the term of their nearest items that have neighbours (`Borrowing`). `decay`: the history
        items' recency weighting (`recency_shares`; 1, the plain mean)."""
        position = {item: row for row, item in enumerate(catalog_ids)}
        rows_of = torch.tensor([position.get(item, -1) for item in self.item_ids], dtype=torch.long)
        source = torch.repeat_interleave(torch.arange(len(self.item_ids)), self.indptr.diff())
        src, dst = rows_of[source], rows_of[self.index] if self.index.numel() else self.index
        keep = (src >= 0) & (dst >= 0)
        borrowed = None
        if vectors is not None and borrow > 0 and borrow_weight > 0:
            if len(vectors) != len(catalog_ids):
                raise ValueError(f"{len(vectors)} item vectors for a catalog of {len(catalog_ids)} items")
            # Rows the term can score: those that are some item's neighbour. The others always score 0 on it.
            scored = torch.bincount(dst[keep], minlength=len(catalog_ids)) > 0
            borrowed = Borrowing.nearest(scored, vectors, borrow, borrow_weight)
        return CooccurrenceTerm(src[keep], dst[keep], self.similarity[keep], len(catalog_ids), borrowed, decay)


@dataclass
class Borrowing:
    """Items the term cannot score (no item has them as a neighbour) borrow the term of their nearest items
    that it can: the term of target row `targets[m]` is `weight` x the sum over j of `shares[m, j]` x the term
    of row `sources[m, j]`."""

    targets: torch.Tensor  # [M] catalog rows the term cannot score
    sources: torch.Tensor  # [M, k] their nearest rows it can, nearest first
    shares: torch.Tensor  # [M, k] positive similarities normalised to sum 1 (a row of zeros: nothing similar)
    weight: float
    num_items: int

    @classmethod
    def nearest(cls, scored: torch.Tensor, vectors: torch.Tensor, k: int, weight: float, *, block: int = 1024) -> "Borrowing | None":
        """Each row not `scored` and its `k` most similar `scored` rows, by cosine of `vectors`; a block of
        targets at a time (block x sources similarities), so any catalog size fits in memory."""
        targets = torch.nonzero(~scored).view(-1)
        pool = torch.nonzero(scored).view(-1)
        if not len(targets) or not len(pool):
            return None
        unit = torch.nn.functional.normalize(vectors.detach().float().cpu(), dim=-1)
        k = min(int(k), len(pool))
        sources, shares = [], []
        for start in range(0, len(targets), block):
            top = torch.topk(unit[targets[start : start + block]] @ unit[pool].T, k, dim=1)
            positive = top.values.clamp(min=0)
            sources.append(pool[top.indices])
            shares.append(positive / positive.sum(1, keepdim=True).clamp(min=1e-12))
        return cls(targets, torch.cat(sources), torch.cat(shares), float(weight), len(scored))

    def of(self, row: int) -> list[tuple[int, float]]:
        """(source row, share) of one target row, nearest first; [] when the row borrows nothing."""
        hit = (self.targets == row).nonzero().view(-1)
        if not len(hit):
            return []
        m = int(hit[0])
        return [(int(s), float(w)) for s, w in zip(self.sources[m], self.shares[m]) if w > 0]

    def add_to(self, out: torch.Tensor) -> torch.Tensor:
        """`out` [users, num_items] (each user's own term) with every target's borrowed term added in place."""
        matrix = torch.sparse_coo_tensor(
            torch.stack([self.targets.repeat_interleave(self.sources.shape[1]), self.sources.reshape(-1)]),
            self.shares.reshape(-1) * self.weight, (self.num_items, self.num_items), check_invariants=False,
        )
        # Targets' own columns are 0 and no source is a target, so one product adds it all.
        out += torch.sparse.mm(matrix, out.T).T
        return out


def recency_shares(history: Sequence[Hashable], decay: float = 1.0) -> dict[Hashable, float]:
    """Each distinct item of a history (oldest first) and its share of the term's mean: decay^(steps from its
    last occurrence to the end), normalised to sum 1. Decay 1 gives every distinct item 1 / their number."""
    last: dict[Hashable, int] = {}
    for age, item in enumerate(reversed(history)):
        last.setdefault(item, age)
    weights = {item: decay**age for item, age in last.items()}
    total = sum(weights.values())
    return {item: w / total for item, w in weights.items()}


class CooccurrenceTerm:
    """sim(i, j) over one catalog's rows, ready to score histories: the mean over the distinct history items,
    weighted by recency when `decay` is below 1 (`recency_shares`)."""

    def __init__(self, rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, num_items: int,
                 borrowing: Borrowing | None = None, decay: float = 1.0):
        self.num_items, self.borrowing, self.decay = num_items, borrowing, float(decay)
        # Row-sorted (CSR): a history item's neighbours are one contiguous slice, gathered without a matrix product.
        order = torch.argsort(rows, stable=True)
        self.cols, self.values = cols[order], values[order].float()
        self.indptr = torch.zeros(num_items + 1, dtype=torch.long)
        self.indptr[1:] = torch.cumsum(torch.bincount(rows, minlength=num_items), 0)

    def with_decay(self, decay: float) -> "CooccurrenceTerm":
        """The same term (neighbours and borrowing shared, not rebuilt) with another recency decay."""
        other = copy.copy(self)
        other.decay = float(decay)
        return other

    def scores(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        """[len(histories), num_items]: each history's (recency-weighted) mean similarity to every catalog item,
        histories given as catalog rows, oldest first. A row below 0 is an item this catalog lacks (a new item
        given by its fields): it counts in the mean and adds nothing; equal negative rows are one item
        (`history_rows`)."""
        users, items, shares = [], [], []
        for r, history in enumerate(histories):
            kept = [(row, share) for row, share in recency_shares([int(row) for row in history], self.decay).items() if row >= 0]
            users.append(np.full(len(kept), r, dtype=np.int64))
            items.append(np.fromiter((row for row, _ in kept), dtype=np.int64, count=len(kept)))
            shares.append(np.fromiter((share for _, share in kept), dtype=np.float32, count=len(kept)))
        out = torch.zeros(len(histories), self.num_items)
        if not histories or not sum(map(len, items)):
            return out
        items_t = torch.as_tensor(np.concatenate(items), dtype=torch.long)
        lengths = self.indptr[items_t + 1] - self.indptr[items_t]
        # For every (history, history item) pair, that item's slice of neighbours, all in one gather.
        first = torch.repeat_interleave(self.indptr[items_t], lengths)
        offsets = torch.arange(int(lengths.sum())) - torch.repeat_interleave(torch.cumsum(lengths, 0) - lengths, lengths)
        at = first + offsets
        weight = torch.repeat_interleave(torch.as_tensor(np.concatenate(shares)), lengths)
        rows = torch.repeat_interleave(torch.as_tensor(np.concatenate(users), dtype=torch.long), lengths)
        out.index_put_((rows, self.cols[at]), self.values[at] * weight, accumulate=True)
        return self.borrowing.add_to(out) if self.borrowing is not None else out


class HybridRanking:
    """A loaded package's co-occurrence term, weight and borrowing (`Recommender`): the term on whatever catalog
    the domain ranks, built once per catalog, and by item id for scoring given candidates."""

    def __init__(self, neighbours: Neighbours, weight: float, borrow: int = 0, borrow_weight: float = 0.0, decay: float = 1.0):
        self.neighbours, self.weight = neighbours, float(weight)
        self.borrow, self.borrow_weight, self.decay = int(borrow), float(borrow_weight), float(decay)
        self.position = {item: i for i, item in enumerate(neighbours.item_ids)}
        self._own = neighbours.on_catalog(neighbours.item_ids, decay=self.decay)
        self._on: tuple[Sequence[str], torch.Tensor | None, CooccurrenceTerm, dict[str, int]] | None = None

    @property
    def borrows(self) -> bool:
        """Whether items without co-occurrences borrow their nearest items' term (which needs item vectors)."""
        return self.borrow > 0 and self.borrow_weight > 0

    def on(self, catalog_ids: Sequence[str], vectors: torch.Tensor | None = None) -> CooccurrenceTerm:
        """The term on this catalog's rows (kept for the last catalog asked for); `vectors`, the model's item
        vectors of those rows, for the borrowing."""
        if self._on is None or self._on[0] is not catalog_ids or self._on[1] is not vectors:
            term = self.neighbours.on_catalog(catalog_ids, vectors, borrow=self.borrow, borrow_weight=self.borrow_weight, decay=self.decay)
            self._on = (catalog_ids, vectors, term, {item: row for row, item in enumerate(catalog_ids)})
        return self._on[2]

    def by_ids(self, history: Sequence[Any], candidate_ids: Sequence[str],
               catalog: tuple[Sequence[str], torch.Tensor] | None = None) -> torch.Tensor:
        """[len(candidate_ids)]: weight x the (recency-weighted) mean similarity of each candidate to a history
        (oldest first) of item ids and items given by their fields (mappings): those, and ids without
        neighbours, count, adding nothing. With borrowing, `catalog` (its item ids and item vectors) is where
        candidates borrow from; a candidate outside it borrows nothing."""
        if self.borrows and catalog is not None:
            term, position = self.on(*catalog), self._on[3]  # type: ignore[index]
        else:
            term, position = self._own, self.position
        row = term.scores([history_rows(history, position)])[0]
        return self.weight * torch.tensor([float(row[position[c]]) if c in position else 0.0 for c in candidate_ids])

    def borrowed_from(self, candidate_id: str, catalog: tuple[Sequence[str], torch.Tensor] | None) -> list[tuple[str, float]]:
        """The items whose term `candidate_id` borrows, with their shares (explanations); [] when it borrows none."""
        if not self.borrows or catalog is None:
            return []
        term = self.on(*catalog)
        row = self._on[3].get(candidate_id)  # type: ignore[index]
        if term.borrowing is None or row is None:
            return []
        return [(str(catalog[0][s]), share) for s, share in term.borrowing.of(row)]

    def history_shares(self, history: Sequence[Any]) -> dict[str, float]:
        """Each distinct history item given by id and its share of the term's mean (explanations); items given
        by their fields take theirs too, and are left out here."""
        keys = [("fields", p) if isinstance(item, Mapping) else str(item) for p, item in enumerate(history)]
        return {k: v for k, v in recency_shares(keys, self.decay).items() if isinstance(k, str)}

    def per_history_item(self, history_ids: Sequence[str], candidate_id: str) -> dict[str, float]:
        """sim(h, candidate) for each distinct history item h (explanations); 0 where h has no such neighbour."""
        nb, c = self.neighbours, self.position.get(candidate_id)
        out = {}
        for h in dict.fromkeys(history_ids):
            p = self.position.get(h)
            if p is None or c is None:
                out[h] = 0.0
                continue
            lo, hi = int(nb.indptr[p]), int(nb.indptr[p + 1])
            hit = (nb.index[lo:hi] == c).nonzero().view(-1)
            out[h] = float(nb.similarity[lo + int(hit[0])]) if len(hit) else 0.0
        return out


def history_rows(history: Sequence[Any], position: Mapping[str, int]) -> list[int]:
    """A history of item ids and items given by their fields (mappings), oldest first, as rows for
    `CooccurrenceTerm.scores`: an id's row in `position`; below 0 for what has none, so that it counts in the
    mean: each item given by fields an item of its own, an id without a row one item however often it occurs."""
    rows, first = [], {}
    for p, item in enumerate(history):
        if isinstance(item, Mapping):
            rows.append(-1 - p)
        else:
            rows.append(position[str(item)] if str(item) in position else -1 - first.setdefault(str(item), p))
    return rows


@dataclass
class HybridChoice:
    """What a run decided: the neighbours, the weight validation chose, and every weight's validation metrics;
    then, at that weight, the borrowing weight validation chose (0: none) and each one's metrics; then, with
    both, the recency decay validation chose (1: the plain mean) and each one's metrics."""

    neighbours: Neighbours
    weight: float
    validation: dict[float, dict[str, float]]
    borrow: int = 0
    borrow_weight: float = 0.0
    borrow_validation: dict[float, dict[str, float]] = field(default_factory=dict)
    decay: float = 1.0
    decay_validation: dict[float, dict[str, float]] = field(default_factory=dict)

    @property
    def chosen(self) -> dict[str, float]:
        """The validation metrics of what was chosen (the weight, with its borrowing and decay where tried)."""
        return self.decay_validation.get(self.decay) or self.borrow_validation.get(self.borrow_weight) or self.validation[self.weight]

    def record(self) -> dict:
        """The manifest's and the report's `hybrid` section (docs/package-format.md)."""
        out = {
            "weight": self.weight, "neighbours": self.neighbours.per_item, "items": len(self.neighbours.item_ids),
            "pairs": self.neighbours.pairs, "chosen_on": "validation",
            "validation_ndcg@10": {f"{w:g}": m["ndcg@10"] for w, m in sorted(self.validation.items())},
            "borrow": self.borrow, "borrow_weight": self.borrow_weight, "decay": self.decay,
        }
        if self.borrow_validation:
            out["borrow_validation_ndcg@10"] = {f"{w:g}": m["ndcg@10"] for w, m in sorted(self.borrow_validation.items())}
        if self.decay_validation:
            out["decay_validation_ndcg@10"] = {f"{d:g}": m["ndcg@10"] for d, m in sorted(self.decay_validation.items())}
        return out


def best_weight(validation: dict[float, dict[str, float]]) -> float:
    """The weight with the highest validation NDCG@10; on a tie the smallest (the least change to the model)."""
    return max(validation, key=lambda w: (validation[w]["ndcg@10"], -w))


def best_decay(validation: dict[float, dict[str, float]]) -> float:
    """The decay with the highest validation NDCG@10; on a tie the largest (1 is the plain mean: no change)."""
    return max(validation, key=lambda d: (validation[d]["ndcg@10"], d))


def hybrid_scorer(base, term, weight: float):
    """An evaluation scorer (histories -> [users, items]): the model's scores `base` plus `weight` times the
    term's scores `term` (`CooccurrenceTerm.scores`, or a `BatchShared` of it when several weights share it)."""
    if weight == 0:
        return base

    def score(histories):
        return base(histories) + weight * term(histories)

    return score
