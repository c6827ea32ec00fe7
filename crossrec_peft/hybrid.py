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
(`Neighbours`, one safetensors file, item ids in its metadata), no user and no sequence. A new item (not in
the training data) has no neighbours and is scored by the model alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
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
    def on_catalog(self, catalog_ids: Sequence[str]) -> "CooccurrenceTerm":
        """The term on a catalog's rows: neighbours are matched by item id, so the catalog may differ from the
        training one (items it lacks are dropped; its items without neighbours score 0)."""
        position = {item: row for row, item in enumerate(catalog_ids)}
        rows_of = torch.tensor([position.get(item, -1) for item in self.item_ids], dtype=torch.long)
        source = torch.repeat_interleave(torch.arange(len(self.item_ids)), self.indptr.diff())
        src, dst = rows_of[source], rows_of[self.index] if self.index.numel() else self.index
        keep = (src >= 0) & (dst >= 0)
        return CooccurrenceTerm(src[keep], dst[keep], self.similarity[keep], len(catalog_ids))


class CooccurrenceTerm:
    """sim(i, j) over one catalog's rows, ready to score histories: mean over the distinct history items."""

    def __init__(self, rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, num_items: int):
        self.num_items = num_items
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
        return out


class HybridRanking:
    """A loaded package's co-occurrence term and weight (`Recommender`): the term on whatever catalog the
    domain ranks, built once per catalog, and by item id for scoring given candidates."""

    def __init__(self, neighbours: Neighbours, weight: float):
        self.neighbours, self.weight = neighbours, float(weight)
        self.position = {item: i for i, item in enumerate(neighbours.item_ids)}
        self._own = neighbours.on_catalog(neighbours.item_ids)
        self._on: tuple[Sequence[str], CooccurrenceTerm] | None = None

    def on(self, catalog_ids: Sequence[str]) -> CooccurrenceTerm:
        """The term on this catalog's rows (kept for the last catalog asked for)."""
        if self._on is None or self._on[0] is not catalog_ids:
            self._on = (catalog_ids, self.neighbours.on_catalog(catalog_ids))
        return self._on[1]

    def by_ids(self, history_ids: Sequence[str], size: int, candidate_ids: Sequence[str]) -> torch.Tensor:
        """[len(candidate_ids)]: weight x the mean similarity of each candidate to a history of `size` distinct
        items of which `history_ids` are the ones given by id (ids without neighbours count, adding nothing)."""
        known = [self.position[i] for i in dict.fromkeys(history_ids) if i in self.position]
        row = self._own.scores([known], [size])[0]
        return self.weight * torch.tensor([float(row[self.position[c]]) if c in self.position else 0.0 for c in candidate_ids])

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
    """What a run decided: the neighbours, the weight validation chose, and every weight's validation metrics."""

    neighbours: Neighbours
    weight: float
    validation: dict[float, dict[str, float]]

    def record(self) -> dict:
        """The manifest's and the report's `hybrid` section (docs/package-format.md)."""
        return {
            "weight": self.weight, "neighbours": self.neighbours.per_item, "items": len(self.neighbours.item_ids),
            "pairs": self.neighbours.pairs, "chosen_on": "validation",
            "validation_ndcg@10": {f"{w:g}": m["ndcg@10"] for w, m in sorted(self.validation.items())},
        }


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
