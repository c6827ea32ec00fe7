"""Variants of the hybrid's co-occurrence term on a finished run's package, all chosen on validation (issue 14).

The hybrid (crossrec_peft/hybrid.py) adds `weight` x the mean, over a history's distinct items, of each
item's cosine co-occurrence similarity to the candidate, with items never bought in training borrowing the
term of their nearest items (`borrow_weight`). This script ranks a grid of two variants of that term on top:

- recency: each distinct history item weighted `decay`^(steps from its last occurrence to the end of the
  history), normalised to sum 1 (decay 1 is the plain mean the product uses);
- shrinkage: the similarity C_ij / (sqrt(n_i n_j) + h), which discounts pairs seen once between rarely bought
  items (h 0 is the plain cosine); each shrunk table is rescaled to the plain cosine's mean similarity so that
  one weight grid serves every h.

Each item keeps its `hybrid.neighbours` most similar items, as the package does. Every cell of the grid is
ranked on validation and test (the standard protocol of the run's config); validation's best cell is marked.
The first row is the product's own term (`Neighbours`, `hybrid_scorer`); the grid's (decay 1, h 0) cell
computes the same term another way and must match it, which the script checks.

    crossrec-peft recipe amazon data.path=sci data.cache_dir=cache --out runs/r
    python benchmarks/hybrid_variants.py --run runs/r

Results: benchmarks/results/hybrid_variants_<run name>.json.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from crossrec_peft.evaluation import rank_cases
from crossrec_peft.hybrid import Borrowing, Neighbours, hybrid_scorer, recency_shares

sys.path.insert(0, str(Path(__file__).parent))
from _results import write_results  # noqa: E402
from _run_package import load_run  # noqa: E402


def shrunk_neighbours(sequences, num_items: int, shrink: float, per_item: int) -> sp.csr_matrix:
    """[items, items]: each item's `per_item` largest C_ij / (sqrt(n_i n_j) + shrink), the item itself left out,
    on the binary users x items matrix of `sequences`."""
    users = np.concatenate([np.full(len(np.unique(s)), u) for u, s in enumerate(sequences)])
    items = np.concatenate([np.unique(s) for s in sequences])
    x = sp.csr_matrix((np.ones(len(items), dtype=np.float64), (users, items)), shape=(len(sequences), num_items))
    c = (x.T @ x).tocoo()
    off = c.row != c.col
    n = np.asarray(x.sum(0)).ravel()
    rows, cols = c.row[off], c.col[off]
    sims = c.data[off] / (np.sqrt(n[rows] * n[cols]) + shrink)
    # Keep each row's `per_item` largest: sort by (row, -similarity), then the first per_item of each row.
    order = np.lexsort((-sims, rows))
    rows, cols, sims = rows[order], cols[order], sims[order]
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows, side="left")
    keep = rank < per_item
    return sp.csr_matrix((sims[keep], (rows[keep], cols[keep])), shape=(num_items, num_items))


def variant_scorer(base, table: sp.csr_matrix, decay: float, borrowing: Borrowing | None, weight: float):
    """The model's scores plus `weight` x the recency-weighted mean of the history items' rows of `table`."""
    coo = table.T.tocoo()  # term = Q @ table, computed as (table^T @ Q^T)^T with a sparse table^T
    table_t = torch.sparse_coo_tensor(np.vstack([coo.row, coo.col]), coo.data.astype(np.float32), coo.shape).coalesce()

    def score(histories):
        q = torch.zeros(len(histories), table.shape[0])
        for r, history in enumerate(histories):
            shares = recency_shares([int(item) for item in history], decay)  # the product's weighting
            q[r, torch.as_tensor(list(shares))] = torch.tensor(list(shares.values()), dtype=torch.float32)
        term = torch.sparse.mm(table_t, q.T).T.contiguous()
        if borrowing is not None:
            borrowing.add_to(term)
        return base(histories) + weight * term

    return score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished recipe run directory (config.yaml, adapter/)")
    parser.add_argument("--decays", type=float, nargs="+", default=[1.0, 0.8])
    parser.add_argument("--shrinks", type=float, nargs="+", default=[0.0, 10.0])
    parser.add_argument("--borrow-weights", type=float, nargs="+", default=[0.0, 2.0])
    parser.add_argument("--weights", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    args = parser.parse_args()
    loaded = load_run(args.run)
    cfg, split, ids = loaded.cfg, loaded.split, loaded.item_ids
    num_items, ks, borrow = len(ids), list(cfg.eval.ks), int(cfg.hybrid.borrow) or 5
    cold = split.train_item_counts(num_items)[split.test.targets] <= cfg.eval.cold_start_max

    def ranked(scorer) -> dict:
        val = rank_cases(scorer, split.validation, ks, seed=cfg.seed, repeats=cfg.eval.repeats)[0].summary()["ndcg@10"]
        test = rank_cases(scorer, split.test, ks, seed=cfg.seed, repeats=cfg.eval.repeats)[0]
        return {"validation ndcg@10": val, "ndcg@10": test.summary()["ndcg@10"], "cold ndcg@10": test.summary(cold)["ndcg@10"]}

    rows = []

    def report(row: dict) -> None:
        rows.append(row)
        print("| " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()) + " |", flush=True)

    # The product's own term at weight 1 with the recipe's borrowing x2: the reference the grid must reproduce.
    term = Neighbours.fit(split.train, ids, cfg.hybrid.neighbours).on_catalog(ids, loaded.vectors, borrow=borrow, borrow_weight=2.0)
    reference = ranked(hybrid_scorer(loaded.base, term, 1.0))
    report({"term": "the product's (hybrid.py)", "decay": 1.0, "shrink": 0.0, "borrow weight": 2.0, "weight": 1.0, **reference})

    plain = shrunk_neighbours(split.train, num_items, 0.0, cfg.hybrid.neighbours)
    for shrink in args.shrinks:
        table = plain
        if shrink:
            table = shrunk_neighbours(split.train, num_items, shrink, cfg.hybrid.neighbours)
            table = table * (plain.data.mean() / table.data.mean())
        scored = torch.as_tensor(np.asarray((table != 0).sum(0)).ravel() > 0)
        for decay, borrow_weight, weight in itertools.product(args.decays, args.borrow_weights, args.weights):
            borrowing = Borrowing.nearest(scored, loaded.vectors, borrow, borrow_weight) if borrow_weight else None
            row = ranked(variant_scorer(loaded.base, table, decay, borrowing, weight))
            report({"term": "grid", "decay": decay, "shrink": shrink, "borrow weight": borrow_weight, "weight": weight, **row})
            if (decay, shrink, borrow_weight, weight) == (1.0, 0.0, 2.0, 1.0):
                gap = abs(row["validation ndcg@10"] - reference["validation ndcg@10"])
                assert gap < 5e-4, f"the grid's plain cell ({row}) does not reproduce the product's term ({reference})"

    grid = [r for r in rows if r["term"] == "grid"]
    best = max(grid, key=lambda r: r["validation ndcg@10"])
    print(f"\nvalidation's pick: decay {best['decay']:g}, shrink {best['shrink']:g}, borrow x{best['borrow weight']:g}, "
          f"weight {best['weight']:g}: validation {best['validation ndcg@10']:.4f} (the product's term "
          f"{reference['validation ndcg@10']:.4f}), test {best['ndcg@10']:.4f} ({reference['ndcg@10']:.4f}), "
          f"cold {best['cold ndcg@10']:.4f} ({reference['cold ndcg@10']:.4f})")
    write_results(f"hybrid_variants_{args.run.name}", {"run": str(args.run), "reference": reference, "pick": best, "rows": rows})


if __name__ == "__main__":
    main()
