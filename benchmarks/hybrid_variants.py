"""Variants of the hybrid's co-occurrence term on a finished run's package, all chosen on validation (issue 14).

The hybrid (crossrec_peft/hybrid.py) adds `weight` x the mean, over a history's distinct items, of each
item's cosine co-occurrence similarity to the candidate, with items never bought in training borrowing the
term of their nearest items (`borrow_weight`). This script ranks a grid of variants of that term:

- recency: each distinct history item weighted `decay`^(steps from its last occurrence to the end of the
  history), normalised to sum 1 (decay 1 is the plain mean; `hybrid.decays` in the product);
- the similarity itself (`--similarities`), each table rescaled to the plain cosine's mean similarity so
  that one weight grid serves them all: `cosine` (C_ij / sqrt(n_i n_j), the product's), `shrink:h`
  (C_ij / (sqrt(n_i n_j) + h): discounts pairs seen once between rarely bought items), `asym:a` (the
  asymmetric cosine, C_ij / (n_i^a n_j^(1-a)) from history item i to candidate j: a above 0.5 discounts
  popular history items, below it popular candidates), `iuf:a` (each user's co-occurrences weighted
  1 / |user|^a before the cosine: long histories say less per pair), `rp3:b` (RP3beta, Paudel et al. 2017:
  P(user | i) P(j | user) / n_j^b), `pow:p` (the cosine to the power p: p above 1 sharpens) and `ease:l` (EASE,
  Steck 2019, with L2 weight l: a dense solve over the items bought in training);
- the vectors never-bought items borrow by (`--borrow-from`): the model's item vectors (the product's), the
  untuned backbone's, or both concatenated.
- users' neighbours as a third term (`--users K ...`): each case's K training users of highest overlap with
  its recency-weighted history, divided by the user's length^a (`--user-alpha`), vote for the items they
  bought, the votes normalised to sum 1 per case; added at `--user-weights` on top of the product's term as
  the recipe chose it (its weight, borrowing and decay from the package's manifest); with
  `--user-borrow-weights`, items never bought in training borrow their nearest bought items' votes, as they
  borrow the co-occurrence term.
- the untuned backbone's cosine for rarely bought candidates (`--untuned-rare LAM:C ...`): the run's hybrid plus
  LAM x the cosine of the untuned user (the mean of the history's untuned title embeddings) to each candidate
  with at most C training interactions (C 0: the never-bought ones).
- history items without co-occurrences (`--history-borrow W ...`): at test time every history ends in the
  validation target, and 18% of those were never bought in training, so the term's most recent item adds
  nothing (on validation almost no history item lacks co-occurrences: validation cannot see this). W above 0:
  such an item borrows the rows of its nearest items by the model's vectors (the candidates' borrowing turned
  round), x W; W 0: it is left out of the recency shares instead of diluting them.
- other ways to combine the model and the run's term (`--fusions SPEC ...`): `weight:W` (the sum at another
  weight), `rrf:K:W` (reciprocal rank fusion, 1/(K + model rank) + W/(K + term rank), items the term does not
  score adding nothing), `sqrt:W` (the sum with the term's square root), `agree:A:W` (the term x exp(A x the
  model's cosine): it counts more where the model agrees).
- the model's scores propagated over the co-occurrence neighbours (`--propagate A ...`): the run's hybrid
  plus A x the mean of the model's scores of each candidate's neighbours (the term's table, each row
  normalised to sum 1): a candidate counts more when the items bought with it rank high for the user. With
  `--propagate-skip-history` the history items' own scores are left out of the mean (they are what the term
  already counts). With `--propagate-centred` the candidate's own model score is subtracted from that mean
  (a candidate without neighbours then changes nothing, where the plain mean ranks it below every bought one).

Each item keeps its `hybrid.neighbours` most similar items, as the package does. Every cell of the grid is
ranked on validation and test (the standard protocol of the run's config); validation's best cell is marked.
The first row is the product's own term (`Neighbours`, `hybrid_scorer`); the grid's (cosine, model, decay 1)
cell computes the same term another way and must match it, which the script checks.

    crossrec-peft recipe amazon data.path=sci data.cache_dir=cache --out runs/r
    python benchmarks/hybrid_variants.py --run runs/r

Results: benchmarks/results/hybrid_variants_<run name>[_<tag>].json.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from crossrec_peft.baselines.itemknn import interaction_matrix
from crossrec_peft.evaluation import rank_cases
from crossrec_peft.hybrid import Borrowing, CooccurrenceTerm, Neighbours, hybrid_scorer, recency_shares

sys.path.insert(0, str(Path(__file__).parent))
from _results import write_results  # noqa: E402
from _run_package import load_run  # noqa: E402


def interactions(sequences, num_items: int) -> sp.csr_matrix:
    """The binary users x items matrix of `sequences` (baselines.itemknn's, as scipy for the products below)."""
    x = interaction_matrix(list(sequences), num_items)
    users, items = x.indices().numpy()
    return sp.csr_matrix((x.values().double().numpy(), (users, items)), shape=tuple(x.shape))


def similarity_matrix(spec: str, x: sp.csr_matrix) -> sp.csr_matrix:
    """[items, items], row = history item, column = candidate, for one `--similarities` spec (module doc)."""
    kind, _, param = spec.partition(":")
    a = float(param or 0)
    n = np.maximum(np.asarray(x.sum(0)).ravel(), 1)
    counts = (x.T @ x).tocsr()
    if kind == "cosine":
        return sp.diags(n**-0.5) @ counts @ sp.diags(n**-0.5)
    if kind == "shrink":
        c = counts.tocoo()
        return sp.csr_matrix((c.data / (np.sqrt(n[c.row] * n[c.col]) + a), (c.row, c.col)), shape=c.shape)
    if kind == "asym":
        return sp.diags(n**-a) @ counts @ sp.diags(n ** -(1 - a))
    if kind == "iuf":
        lengths = np.maximum(np.asarray(x.sum(1)).ravel(), 1)
        weighted = (x.T @ sp.diags(lengths**-a) @ x).tocsr()
        d = np.sqrt(np.maximum(weighted.diagonal(), 1e-12))
        return sp.diags(1 / d) @ weighted @ sp.diags(1 / d)
    if kind == "rp3":
        lengths = np.maximum(np.asarray(x.sum(1)).ravel(), 1)
        return (sp.diags(1 / n) @ x.T) @ (sp.diags(1 / lengths) @ x) @ sp.diags(n**-a)
    if kind == "pow":
        table = (sp.diags(n**-0.5) @ counts @ sp.diags(n**-0.5)).tocsr()
        table.data = table.data**a
        return table
    if kind == "ease":
        return ease(x, a)
    raise SystemExit(f"--similarities: unknown kind '{kind}' in '{spec}' (cosine, shrink:h, asym:a, iuf:a, rp3:b, pow:p, ease:l)")


def ease(x: sp.csr_matrix, l2: float, per_item: int = 200) -> sp.csr_matrix:
    """EASE (Steck 2019): B = I - P / diag(P) with P = (X^T X + l2 I)^-1, over the items bought in training,
    each row's `per_item` largest entries kept (the dense [n, n] solve is the cost: n^3 for n bought items)."""
    bought = np.flatnonzero(np.asarray(x.sum(0)).ravel() > 0)
    sub = x[:, bought]
    gram = torch.as_tensor((sub.T @ sub).toarray(), dtype=torch.float32)
    gram.diagonal().add_(l2)
    p = torch.cholesky_inverse(torch.linalg.cholesky(gram))
    del gram
    b = p / (-p.diagonal()).unsqueeze(0)
    b.fill_diagonal_(0.0)
    values, columns = torch.topk(b, per_item, dim=1)
    del p, b
    rows = np.repeat(bought, per_item)
    return sp.csr_matrix((values.numpy().ravel(), (rows, bought[columns.numpy().ravel()])), shape=(x.shape[1], x.shape[1]))


def top_neighbours(table: sp.spmatrix, per_item: int) -> sp.csr_matrix:
    """Each row's `per_item` largest positive entries, the diagonal (an item and itself) left out."""
    c = table.tocoo()
    keep = (c.row != c.col) & (c.data > 0)
    rows, cols, sims = c.row[keep], c.col[keep], c.data[keep]
    # Sort by (row, -similarity), then keep the first per_item of each row.
    order = np.lexsort((-sims, rows))
    rows, cols, sims = rows[order], cols[order], sims[order]
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows, side="left")
    keep = rank < per_item
    return sp.csr_matrix((sims[keep], (rows[keep], cols[keep])), shape=table.shape)


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


def users_scorer(base, x: sp.csr_matrix, k: int, alpha: float, decay: float, weight: float, borrowing: Borrowing | None = None):
    """`base` plus `weight` x the normalised votes of each history's k most similar training users (module doc);
    with `borrowing`, items nobody bought in training borrow their nearest bought items' votes."""
    lengths = np.maximum(np.asarray(x.sum(1)).ravel(), 1)
    by_user = (x.T @ sp.diags(lengths**-alpha)).tocsr()  # items x users, each user's column / length^alpha

    def score(histories):
        rows, cols, vals = [], [], []
        for r, history in enumerate(histories):
            shares = recency_shares([int(item) for item in history], decay)
            rows += [r] * len(shares)
            cols += list(shares)
            vals += list(shares.values())
        q = sp.csr_matrix((vals, (rows, cols)), shape=(len(histories), x.shape[1]))
        similarity = (q @ by_user).toarray()  # cases x users
        if k < similarity.shape[1]:
            kth = -np.partition(-similarity, k - 1, axis=1)[:, k - 1 : k]
            similarity[similarity < kth] = 0
        similarity /= np.maximum(similarity.sum(1, keepdims=True), 1e-12)
        votes = torch.from_numpy((sp.csr_matrix(similarity) @ x).toarray().astype(np.float32))
        if borrowing is not None:
            borrowing.add_to(votes)
        return base(histories) + weight * votes

    return score


def untuned_rare_scorer(base, untuned: torch.Tensor, counts: np.ndarray, most: int, weight: float, max_history: int):
    """`base` plus `weight` x the untuned cosine (user: the mean of the history's unit untuned vectors) for the
    candidates with at most `most` training interactions."""
    unit = torch.nn.functional.normalize(untuned.float(), dim=-1)
    rare = torch.as_tensor(counts <= most, dtype=torch.float32)

    def score(histories):
        users = torch.stack([unit[torch.as_tensor([int(i) for i in h[-max_history:]])].mean(0) for h in histories])
        return base(histories) + weight * (torch.nn.functional.normalize(users, dim=-1) @ unit.T) * rare

    return score


def term_rows(term: CooccurrenceTerm) -> torch.Tensor:
    """The row (history item) of each of the term's stored similarities: its CSR `indptr` spelled out."""
    return torch.repeat_interleave(torch.arange(term.num_items), term.indptr[1:] - term.indptr[:-1])


def history_borrow_scorer(base, term: CooccurrenceTerm, weight: float, lending: Borrowing | None, has_row: torch.Tensor):
    """`base` plus `weight` x the run's term with history items that have no co-occurrences either borrowing
    their nearest items' rows (`lending`, module doc) or, when it is None, left out of the recency shares."""
    n = term.num_items
    rows = term_rows(term)
    table_t = torch.sparse_coo_tensor(torch.stack([term.cols, rows]), term.values, (n, n)).coalesce()
    lend_t = None
    if lending is not None:
        src = torch.stack([lending.sources.reshape(-1), lending.targets.repeat_interleave(lending.sources.shape[1])])
        lend_t = torch.sparse_coo_tensor(src, lending.shares.reshape(-1) * lending.weight, (n, n)).coalesce()

    def score(histories):
        q = torch.zeros(len(histories), n)
        for r, history in enumerate(histories):
            shares = recency_shares([int(item) for item in history], term.decay)
            if lending is None:
                shares = {i: w for i, w in shares.items() if has_row[i]}
            total = sum(shares.values())
            if total:
                q[r, torch.as_tensor(list(shares))] = torch.tensor([w / total for w in shares.values()], dtype=torch.float32)
        if lend_t is not None:
            q = q + torch.sparse.mm(lend_t, q.T).T
        out = torch.sparse.mm(table_t, q.T).T.contiguous()
        return base(histories) + weight * (term.borrowing.add_to(out) if term.borrowing is not None else out)

    return score


def propagate_scorer(base, term: CooccurrenceTerm, term_weight: float, weight: float, skip_history: bool, centred: bool):
    """The run's hybrid (`base` + `term_weight` x `term`) plus `weight` x, for each candidate, the neighbour-weighted
    mean of the model's scores (`base`) of its co-occurrence neighbours (module doc)."""
    n = term.num_items
    rows = term_rows(term)
    sums = torch.zeros(n).index_add_(0, rows, term.values).clamp(min=1e-12)
    table = torch.sparse_coo_tensor(torch.stack([rows, term.cols]), term.values / sums[rows], (n, n)).coalesce()
    has_row = (term.indptr[1:] > term.indptr[:-1]).float()

    def score(histories):
        model = base(histories)  # once: the hybrid, the spread and its centring all read it
        spread_from = model
        if skip_history:
            spread_from = model.clone()
            for r, history in enumerate(histories):
                spread_from[r, torch.as_tensor([int(i) for i in history])] = 0.0
        spread = torch.sparse.mm(table, spread_from.T).T
        if centred:
            spread = (spread - model) * has_row
        return model + term_weight * term.scores(histories) + weight * spread

    return score


def _ranks(scores: torch.Tensor) -> torch.Tensor:
    """Each row's ranks, 1 for the highest score."""
    order = torch.argsort(scores, dim=1, descending=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(1, scores.shape[1] + 1).expand_as(order).contiguous())
    return ranks.float()


def fusion_scorer(base, term, spec: str):
    """The model's scores `base` and the run's term `term` combined as `spec` says (module doc)."""
    kind, *params = spec.split(":")
    values = [float(v) for v in params]
    if kind == "weight" and len(values) == 1:
        return lambda h: base(h) + values[0] * term(h)
    if kind == "sqrt" and len(values) == 1:
        return lambda h: base(h) + values[0] * term(h).clamp(min=0).sqrt()
    if kind == "agree" and len(values) == 2:
        return lambda h: (lambda m: m + values[1] * term(h) * torch.exp(values[0] * m))(base(h))
    if kind == "rrf" and len(values) == 2:
        def rrf(h):
            t = term(h)
            return 1 / (values[0] + _ranks(base(h))) + values[1] * torch.where(t > 0, 1 / (values[0] + _ranks(t)), 0.0)
        return rrf
    raise SystemExit(f"--fusions: unknown spec {spec!r} (weight:W, sqrt:W, agree:A:W, rrf:K:W)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished recipe run directory (config.yaml, adapter/)")
    parser.add_argument("--decays", type=float, nargs="+", default=[1.0, 0.8])
    parser.add_argument("--similarities", nargs="+", default=["cosine", "shrink:10"], help="cosine, shrink:h, asym:a, iuf:a, rp3:b, pow:p, ease:l")
    parser.add_argument("--borrow-from", nargs="+", choices=["model", "untuned", "both"], default=["model"],
                        help="the item vectors never-bought items borrow by")
    parser.add_argument("--borrow-weights", type=float, nargs="+", default=[0.0, 2.0])
    parser.add_argument("--weights", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    parser.add_argument("--users", type=int, nargs="*", default=[], help="users' neighbours: how many per case (none: not run)")
    parser.add_argument("--user-weights", type=float, nargs="+", default=[0.25, 0.5])
    parser.add_argument("--user-alpha", type=float, nargs="+", default=[0.5])
    parser.add_argument("--user-borrow-weights", type=float, nargs="+", default=[0.0],
                        help="items never bought in training borrow this x the votes of their nearest bought items (0: none)")
    parser.add_argument("--untuned-rare", nargs="*", default=[], metavar="LAM:C",
                        help="the run's hybrid + LAM x the untuned cosine for candidates with at most C training interactions")
    parser.add_argument("--history-borrow", type=float, nargs="*", default=[], metavar="W",
                        help="history items without co-occurrences borrow their nearest items' rows x W (0: left out of the shares)")
    parser.add_argument("--fusions", nargs="*", default=[], metavar="SPEC", help="weight:W, sqrt:W, agree:A:W, rrf:K:W")
    parser.add_argument("--propagate", type=float, nargs="*", default=[], metavar="A",
                        help="the run's hybrid + A x the mean model score of each candidate's co-occurrence neighbours")
    parser.add_argument("--propagate-skip-history", action="store_true", help="leave the history items' scores out of that mean")
    parser.add_argument("--propagate-centred", action="store_true", help="subtract the candidate's own model score from that mean")
    parser.add_argument("--tag", default="", help="appended to the results file's name (several grids on one run)")
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
    reference = ranked(hybrid_scorer(loaded.base, term.scores, 1.0))
    report({"term": "the product's (hybrid.py)", "similarity": "cosine", "borrow from": "model", "decay": 1.0,
            "borrow weight": 2.0, "weight": 1.0, **reference})

    x = interactions(split.train, num_items)
    plain = top_neighbours(similarity_matrix("cosine", x), cfg.hybrid.neighbours)
    vectors = {"model": loaded.vectors}
    if {"untuned", "both"} & set(args.borrow_from):
        vectors["untuned"] = loaded.untuned_vectors()
        unit = [torch.nn.functional.normalize(vectors[k].float(), dim=-1) for k in ("model", "untuned")]
        vectors["both"] = torch.cat(unit, dim=1)
    for spec in args.similarities:
        table = plain if spec == "cosine" else top_neighbours(similarity_matrix(spec, x), cfg.hybrid.neighbours)
        table = table * (plain.data.mean() / table.data.mean())
        scored = torch.as_tensor(np.asarray((table != 0).sum(0)).ravel() > 0)
        for source, decay, borrow_weight, weight in itertools.product(args.borrow_from, args.decays, args.borrow_weights, args.weights):
            borrowing = Borrowing.nearest(scored, vectors[source], borrow, borrow_weight) if borrow_weight else None
            row = ranked(variant_scorer(loaded.base, table, decay, borrowing, weight))
            report({"term": "grid", "similarity": spec, "borrow from": source, "decay": decay, "borrow weight": borrow_weight,
                    "weight": weight, **row})
            if (spec, source, decay, borrow_weight, weight) == ("cosine", "model", 1.0, 2.0, 1.0):
                gap = abs(row["validation ndcg@10"] - reference["validation ndcg@10"])
                assert gap < 5e-4, f"the grid's plain cell ({row}) does not reproduce the product's term ({reference})"

    if args.users or args.untuned_rare or args.history_borrow or args.fusions or args.propagate:
        # On top of the product's term as the run chose it (the manifest's hybrid record).
        chosen = loaded.hybrid_record
        decay, lent = float(chosen.get("decay") or 1.0), float(chosen.get("borrow_weight") or 0)
        product = Neighbours.fit(split.train, ids, cfg.hybrid.neighbours).on_catalog(
            ids, loaded.vectors, borrow=int(chosen.get("borrow") or 0), borrow_weight=lent, decay=decay)
        shipped = hybrid_scorer(loaded.base, product.scores, float(chosen["weight"]))
        run_term = {"similarity": "cosine", "borrow from": "model", "decay": decay, "borrow weight": lent, "weight": float(chosen["weight"])}
        report({"term": "the run's hybrid", **run_term, **ranked(shipped)})
        bought = torch.as_tensor(np.asarray(x.sum(0)).ravel() > 0)
        for k, alpha, weight, lend in itertools.product(args.users, args.user_alpha, args.user_weights, args.user_borrow_weights):
            borrowing = Borrowing.nearest(bought, loaded.vectors, borrow, lend) if lend else None
            row = ranked(users_scorer(shipped, x, k, alpha, decay, weight, borrowing))
            lending = f", never-bought items borrowing x{lend:g}" if lend else ""
            report({"term": f"the run's hybrid + {k} users' neighbours x{weight:g} (length^{alpha:g}{lending})", **run_term, **row})
        counts = split.train_item_counts(num_items)
        untuned = loaded.untuned_vectors() if args.untuned_rare else None
        for spec in args.untuned_rare:
            weight, _, most = spec.partition(":")
            row = ranked(untuned_rare_scorer(shipped, untuned, counts, int(most or 0), float(weight), cfg.model.max_history))
            report({"term": f"the run's hybrid + {float(weight):g} x untuned cosine, candidates bought <= {int(most or 0)} times",
                    **run_term, **row})
        has_row = product.indptr[1:] > product.indptr[:-1]
        for lend in args.history_borrow:
            lending = Borrowing.nearest(has_row, loaded.vectors, borrow, lend) if lend else None
            row = ranked(history_borrow_scorer(loaded.base, product, float(chosen["weight"]), lending, has_row))
            how = f"borrowing their nearest items' rows x{lend:g}" if lend else "left out of the shares"
            report({"term": f"the run's hybrid, history items without co-occurrences {how}", **run_term, **row})
        for a in args.propagate:
            row = ranked(propagate_scorer(loaded.base, product, float(chosen["weight"]), a, args.propagate_skip_history, args.propagate_centred))
            skip = (", history items left out" if args.propagate_skip_history else "") + (", centred" if args.propagate_centred else "")
            report({"term": f"the run's hybrid + {a:g} x the model's scores propagated over the neighbours{skip}", **run_term, **row})
        for spec in args.fusions:
            report({"term": f"the model and the run's term fused as {spec}", **run_term, **ranked(fusion_scorer(loaded.base, product.scores, spec))})

    grid = [r for r in rows if r["term"] == "grid"]
    best = max(grid, key=lambda r: r["validation ndcg@10"])
    print(f"\nvalidation's pick: {best['similarity']}, borrowing by the {best['borrow from']} vectors x{best['borrow weight']:g}, "
          f"decay {best['decay']:g}, weight {best['weight']:g}: validation {best['validation ndcg@10']:.4f} (the product's term "
          f"{reference['validation ndcg@10']:.4f}), test {best['ndcg@10']:.4f} ({reference['ndcg@10']:.4f}), "
          f"cold {best['cold ndcg@10']:.4f} ({reference['cold ndcg@10']:.4f})")
    write_results(f"hybrid_variants_{args.run.name}{args.tag and '_' + args.tag}", {"run": str(args.run), "reference": reference, "pick": best, "rows": rows})


if __name__ == "__main__":
    main()
