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
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .errors import PackageError

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
        from safetensors.torch import save_file

        tensors = {"indptr": self.indptr.contiguous(), "index": self.index.to(torch.int32).contiguous(),
                   "similarity": self.similarity.to(torch.float16).contiguous()}  # 3 significant digits: enough to rank
        save_file(tensors, str(path), metadata={
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
                   borrow_weight: float = 0.0) -> "CooccurrenceTerm":
        """The term on a catalog's rows: neighbours are matched by item id, so the catalog may differ from the
        training one (items it lacks are dropped). Its items without neighbours score 0, unless `vectors` (the
        model's item vectors of the catalog's rows) are given with `borrow` and `borrow_weight` above 0: then
        they borrow the term of their nearest items that have neighbours (`Borrowing`)."""
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
        return CooccurrenceTerm(src[keep], dst[keep], self.similarity[keep], len(catalog_ids), borrowed)


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


class CooccurrenceTerm:
    """sim(i, j) over one catalog's rows, ready to score histories: mean over the distinct history items."""

    def __init__(self, rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, num_items: int,
                 borrowing: Borrowing | None = None):
        self.num_items, self.borrowing = num_items, borrowing
        # Row-sorted (CSR): a history item's neighbours are one contiguous slice, gathered without a matrix product.
        order = torch.argsort(rows, stable=True)
        self.cols, self.values = cols[order], values[order].float()
        self.indptr = torch.zeros(num_items + 1, dtype=torch.long)
        self.indptr[1:] = torch.cumsum(torch.bincount(rows, minlength=num_items), 0)

    def scores(self, histories: Sequence[Sequence[int]], sizes: Sequence[int] | None = None) -> torch.Tensor:
        """[len(histories), num_items]: each history's mean similarity to every catalog item. The mean is over
        the history's distinct items, or over `sizes[r]` items where given (a history that also holds items
        this catalog lacks, such as new items given by their fields: they count, with no neighbours)."""
        users, items, shares = [], [], []
        for r, history in enumerate(histories):
            distinct = np.unique(np.asarray(history, dtype=np.int64))
            size = len(distinct) if sizes is None else max(int(sizes[r]), len(distinct))
            users.append(np.full(len(distinct), r))
            items.append(distinct)
            shares.append(np.full(len(distinct), 1.0 / max(size, 1), dtype=np.float32))
        out = torch.zeros(len(histories), self.num_items)
        if not histories:
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

    def __init__(self, neighbours: Neighbours, weight: float, borrow: int = 0, borrow_weight: float = 0.0):
        self.neighbours, self.weight = neighbours, float(weight)
        self.borrow, self.borrow_weight = int(borrow), float(borrow_weight)
        self.position = {item: i for i, item in enumerate(neighbours.item_ids)}
        self._own = neighbours.on_catalog(neighbours.item_ids)
        self._on: tuple[Sequence[str], torch.Tensor | None, CooccurrenceTerm, dict[str, int]] | None = None

    @property
    def borrows(self) -> bool:
        """Whether items without co-occurrences borrow their nearest items' term (which needs item vectors)."""
        return self.borrow > 0 and self.borrow_weight > 0

    def on(self, catalog_ids: Sequence[str], vectors: torch.Tensor | None = None) -> CooccurrenceTerm:
        """The term on this catalog's rows (kept for the last catalog asked for); `vectors`, the model's item
        vectors of those rows, for the borrowing."""
        if self._on is None or self._on[0] is not catalog_ids or self._on[1] is not vectors:
            term = self.neighbours.on_catalog(catalog_ids, vectors, borrow=self.borrow, borrow_weight=self.borrow_weight)
            self._on = (catalog_ids, vectors, term, {item: row for row, item in enumerate(catalog_ids)})
        return self._on[2]

    def by_ids(self, history_ids: Sequence[str], size: int, candidate_ids: Sequence[str],
               catalog: tuple[Sequence[str], torch.Tensor] | None = None) -> torch.Tensor:
        """[len(candidate_ids)]: weight x the mean similarity of each candidate to a history of `size` distinct
        items of which `history_ids` are the ones given by id (ids without neighbours count, adding nothing).
        With borrowing, `catalog` (its item ids and item vectors) is where candidates borrow from; a candidate
        outside it borrows nothing."""
        if self.borrows and catalog is not None:
            term = self.on(*catalog)
            position = self._on[3]  # type: ignore[index]
            row = term.scores([[position[i] for i in dict.fromkeys(history_ids) if i in position]], [size])[0]
            return self.weight * torch.tensor([float(row[position[c]]) if c in position else 0.0 for c in candidate_ids])
        known = [self.position[i] for i in dict.fromkeys(history_ids) if i in self.position]
        row = self._own.scores([known], [size])[0]
        return self.weight * torch.tensor([float(row[self.position[c]]) if c in self.position else 0.0 for c in candidate_ids])

    def borrowed_from(self, candidate_id: str, catalog: tuple[Sequence[str], torch.Tensor] | None) -> list[tuple[str, float]]:
        """The items whose term `candidate_id` borrows, with their shares (explanations); [] when it borrows none."""
        if not self.borrows or catalog is None:
            return []
        term = self.on(*catalog)
        row = self._on[3].get(candidate_id)  # type: ignore[index]
        if term.borrowing is None or row is None:
            return []
        return [(str(catalog[0][s]), share) for s, share in term.borrowing.of(row)]

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


def history_ids(history: Sequence[Any]) -> tuple[list[str], int]:
    """A history's items given by id, and its size for the term's mean: the distinct ids plus every item given
    by its fields (a new item counts, adding nothing)."""
    ids = [str(h) for h in history if not isinstance(h, Mapping)]
    return ids, len(set(ids)) + sum(isinstance(h, Mapping) for h in history)


@dataclass
class HybridChoice:
    """What a run decided: the neighbours, the weight validation chose, and every weight's validation metrics;
    then, at that weight, the borrowing weight validation chose (0: none) and each one's metrics."""

    neighbours: Neighbours
    weight: float
    validation: dict[float, dict[str, float]]
    borrow: int = 0
    borrow_weight: float = 0.0
    borrow_validation: dict[float, dict[str, float]] = field(default_factory=dict)

    @property
    def chosen(self) -> dict[str, float]:
        """The validation metrics of what was chosen (the weight, with its borrowing where there is some)."""
        return self.borrow_validation.get(self.borrow_weight) or self.validation[self.weight]

    def record(self) -> dict:
        """The manifest's and the report's `hybrid` section (docs/package-format.md)."""
        out = {
            "weight": self.weight, "neighbours": self.neighbours.per_item, "items": len(self.neighbours.item_ids),
            "pairs": self.neighbours.pairs, "chosen_on": "validation",
            "validation_ndcg@10": {f"{w:g}": m["ndcg@10"] for w, m in sorted(self.validation.items())},
            "borrow": self.borrow, "borrow_weight": self.borrow_weight,
        }
        if self.borrow_validation:
            out["borrow_validation_ndcg@10"] = {f"{w:g}": m["ndcg@10"] for w, m in sorted(self.borrow_validation.items())}
        return out


def best_weight(validation: dict[float, dict[str, float]]) -> float:
    """The weight with the highest validation NDCG@10; on a tie the smallest (the least change to the model)."""
    return max(validation, key=lambda w: (validation[w]["ndcg@10"], -w))


def hybrid_scorer(base, term: CooccurrenceTerm, weight: float):
    """An evaluation scorer (histories -> [users, items]): the model's scores plus `weight` times the term."""
    if weight == 0:
        return base

    def score(histories):
        return base(histories) + weight * term.scores(histories)

    return score
