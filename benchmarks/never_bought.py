"""Items never bought in training, and what the hybrid's borrowing gains from them (issue 14).

The hybrid's co-occurrence term is 0 for an item never bought in training; `hybrid.borrow` gives such items
the term of their nearest items (crossrec_peft/hybrid.py). How much that is worth depends on how often a
never-bought item is what a user buys next, which a catalog built from the interactions themselves decides:
Scientific's catalog is every item somebody reviewed, so every item never bought in training is some
user's validation or test target. This script measures that and the hybrid on both sides of it:

1. The catalog: items never bought in the term's source sequences, how many of them are held-out targets,
   and the targets per item against the items that were bought.
2. The run's hybrid (its chosen weight) on the test split with the term fitted on the training sequences
   (what the recipe does) and on training + validation items (the test histories themselves: everything
   known at test time), each without and with the run's borrowing: NDCG@10 overall, on the cold-start
   slice, and on the cases whose target the term cannot score.
3. Dead stock: a catalog where items nobody buys are never bought in training too. A seeded share of the
   users (`--drop-users`) is left out of the term and of the cases; the items only they bought stay in the
   catalog, now bought by nobody left, beside the items that are new for the users kept. The hybrid with and
   without borrowing on the kept users' test cases. (The model itself trained on every user; only the
   term and the cases change.) `--write-dead-stock DIR` also writes that catalog as a data directory (every
   item, the kept users' interactions) for the recipe to train on end to end.

It loads the package of a finished `recipe amazon` run (its config.yaml, its data and layer cache), so
nothing trains:

    crossrec-peft recipe amazon data.path=sci data.cache_dir=cache --out runs/r
    python benchmarks/never_bought.py --run runs/r

Results: benchmarks/results/never_bought_<run name>.json.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from crossrec_peft.data.split import EvalCases
from crossrec_peft.evaluation import rank_cases
from crossrec_peft.hybrid import Neighbours, hybrid_scorer
from crossrec_peft.package import open_package

sys.path.insert(0, str(Path(__file__).parent))
from _results import write_results  # noqa: E402
from _run_package import load_run  # noqa: E402


def catalog_facts(counts: np.ndarray, cases: EvalCases, other: EvalCases | None) -> dict:
    """Items the term's source never saw, and how often they (and the others) are the cases' targets."""
    never = counts == 0
    targets = cases.targets
    on_never = never[targets]
    facts = {
        "items": int(len(counts)),
        "never_bought": int(never.sum()),
        "never_bought_that_are_targets_here": int(len(np.unique(targets[on_never]))),
        "never_bought_that_are_held_out_targets": int(len(np.unique(np.concatenate(
            [targets[on_never], other.targets[never[other.targets]] if other is not None else targets[:0]])))),
        "cases": int(len(targets)),
        "cases_with_never_bought_target": int(on_never.sum()),
        "targets_per_never_bought_item": float(on_never.sum() / max(never.sum(), 1)),
        "targets_per_bought_item": float((~on_never).sum() / max((~never).sum(), 1)),
    }
    if other is not None:  # the other held-out split: are the rest of the never-bought items its targets?
        facts["never_bought_that_are_targets_of_the_other_split"] = int(len(np.unique(other.targets[never[other.targets]])))
    return facts


def write_dead_stock(source: Path, out: Path, users: list[str]) -> None:
    """A data directory with every item of `source` and the interactions of `users` only."""
    interactions = pq.read_table(source / "interactions.parquet")
    kept = interactions.filter(pc.is_in(pc.cast(interactions["user_id"], "string"), value_set=pa.array(users, type=pa.string())))
    out.mkdir(parents=True)
    shutil.copyfile(source / "items.parquet", out / "items.parquet")
    pq.write_table(kept, out / "interactions.parquet")
    print(f"wrote {out}: every item, {kept.num_rows:,} interactions of {len(users):,} users", flush=True)


def hybrid_row(source: str, borrowing: str, scorer, test: EvalCases, validation: EvalCases | None, counts: np.ndarray,
               cold: np.ndarray, cfg) -> dict:
    """One table row: the scorer on validation (where the term's source precedes it) and on test, overall, on
    the cold-start slice (`cold`: a mask over the test cases) and on the cases whose target `counts` (the
    term's source) never saw."""
    ks, seed, repeats = list(cfg.eval.ks), cfg.seed, cfg.eval.repeats
    results, _ = rank_cases(scorer, test, ks, seed=seed, repeats=repeats)
    validated = rank_cases(scorer, validation, ks, seed=seed, repeats=repeats)[0].summary()["ndcg@10"] if validation else ""
    never_target = counts[test.targets] == 0
    row = {
        "term fitted on": source, "borrowing": borrowing, "validation ndcg@10": validated,
        "ndcg@10": results.summary()["ndcg@10"],
        "cold ndcg@10": results.summary(cold)["ndcg@10"],
        "never-bought target ndcg@10": results.summary(never_target)["ndcg@10"],
        "other targets ndcg@10": results.summary(~never_target)["ndcg@10"],
    }
    print(line(row), flush=True)
    return row


def line(row: dict) -> str:
    return "| " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished recipe run directory (config.yaml, adapter/)")
    parser.add_argument("--drop-users", type=float, default=0.3, help="share of users left out for the dead-stock check")
    parser.add_argument("--write-dead-stock", type=Path, metavar="DIR",
                        help="also write the dead-stock catalog (every item, the kept users' interactions) to DIR, a new directory")
    args = parser.parse_args()
    if args.write_dead_stock is not None and args.write_dead_stock.exists():
        raise SystemExit(f"{args.write_dead_stock}: already exists; name a new directory")
    package = open_package(args.run / "adapter")
    chosen = package.manifest.get("hybrid")
    if not chosen:
        raise SystemExit(f"{args.run / 'adapter'}: the package has no hybrid (hybrid.enabled was off)")
    weight, borrow, borrow_weight = float(chosen["weight"]), int(chosen.get("borrow", 0)), float(chosen.get("borrow_weight", 0.0))
    if borrow <= 0 or borrow_weight <= 0:
        borrow, borrow_weight = 5, 2.0  # the run chose no borrowing: measure the recipe's usual pick
    loaded = load_run(args.run)
    cfg, recipe, base, vectors = loaded.cfg, loaded.recipe, loaded.base, loaded.vectors
    split, ids, ks = loaded.split, loaded.item_ids, list(cfg.eval.ks)

    def terms(neighbours: Neighbours, borrow_weights):
        """The term without borrowing and with each borrowing weight, labelled."""
        for b in borrow_weights:
            term = neighbours.on_catalog(ids, vectors, borrow=borrow, borrow_weight=b) if b else neighbours.on_catalog(ids)
            yield (f"{borrow} nearest x{b:g}" if b else "none"), hybrid_scorer(base, term.scores, weight)

    # The term fitted on the training sequences (validation's targets come after them) and on everything known
    # at test time (the test histories: training plus each user's validation item).
    # The cold-start slice as the run defines it: by training interactions.
    cold = split.train_item_counts(recipe.num_items)[split.test.targets] <= cfg.eval.cold_start_max
    facts, rows = {}, []
    for source, sequences in {"training sequences (the recipe)": split.train, "training + validation items": split.test.histories}.items():
        before_validation = sequences is split.train
        counts = np.bincount(np.concatenate(sequences), minlength=recipe.num_items)
        facts[source] = catalog_facts(counts, split.test, split.validation if before_validation else None)
        for label, scorer in terms(Neighbours.fit(sequences, ids, cfg.hybrid.neighbours), (0.0, borrow_weight)):
            rows.append(hybrid_row(source, label, scorer, split.test, split.validation if before_validation else None, counts, cold, cfg))
    model_only, _ = rank_cases(base, split.test, ks, seed=cfg.seed, repeats=cfg.eval.repeats)

    # Dead stock: the kept users' training sequences are the term's source and their test cases the cases.
    keep = np.random.default_rng(cfg.seed).random(len(split.train)) >= args.drop_users
    kept = [s for s, k in zip(split.train, keep) if k]
    cases = EvalCases([h for h, k in zip(split.test.histories, keep) if k], split.test.targets[keep])
    validation = EvalCases([h for h, k in zip(split.validation.histories, keep) if k], split.validation.targets[keep])
    counts = np.bincount(np.concatenate(kept), minlength=recipe.num_items)
    bought_by_kept = np.bincount(np.concatenate([*cases.histories, cases.targets]), minlength=recipe.num_items) > 0
    dead = {"users_kept": int(keep.sum()), "cases": len(cases), "never_bought": int((counts == 0).sum()),
            "bought_by_nobody_kept": int((~bought_by_kept).sum()),
            "cases_with_never_bought_target": int((counts[cases.targets] == 0).sum())}
    if args.write_dead_stock is not None:
        write_dead_stock(Path(cfg.data.path), args.write_dead_stock, [u for u, k in zip(recipe.data.user_ids, keep) if k])
    borrow_weights = sorted({0.0, *map(float, cfg.hybrid.borrow_weights), borrow_weight})
    for label, scorer in terms(Neighbours.fit(kept, ids, cfg.hybrid.neighbours), borrow_weights):
        rows.append(hybrid_row(f"kept users' training sequences ({1 - args.drop_users:.0%})", label, scorer, cases, validation,
                               counts, counts[cases.targets] <= cfg.eval.cold_start_max, cfg))

    print(f"\n{args.run}: hybrid weight {weight:g}; the model alone: test NDCG@10 {model_only.summary()['ndcg@10']:.4f}\n")
    for source, f in facts.items():
        print(f"term fitted on {source}: {f['never_bought']:,} of {f['items']:,} items never bought; "
              f"{f['never_bought_that_are_targets_here']:,} of them are test targets"
              + (f", {f['never_bought_that_are_targets_of_the_other_split']:,} validation targets, {f['never_bought_that_are_held_out_targets']:,} one or the other"
                 if "never_bought_that_are_targets_of_the_other_split" in f else "")
              + f"; test targets per item: {f['targets_per_never_bought_item']:.2f} never bought, {f['targets_per_bought_item']:.2f} bought")
    print(f"dead stock: {dead['users_kept']:,} users kept; {dead['never_bought']:,} items never bought in their training "
          f"sequences, {dead['bought_by_nobody_kept']:,} of them bought by none of them at all; "
          f"{dead['cases_with_never_bought_target']:,} of {dead['cases']:,} cases have a never-bought target")
    print()
    print("| " + " | ".join(rows[0]) + " |")
    print("|" + "---|" * len(rows[0]))
    for row in rows:
        print(line(row))
    write_results(f"never_bought_{args.run.name}", {
        "run": str(args.run), "weight": weight, "borrow": borrow, "borrow_weight": borrow_weight,
        "model_ndcg@10": model_only.summary()["ndcg@10"], "catalog": facts, "dead_stock": {"drop_users": args.drop_users, **dead},
        "rows": rows,
    })


if __name__ == "__main__":
    main()
