"""Content-free baselines on the real datasets in ../shared/data: popularity and item-kNN (sparse, C = X^T X
never formed) under leave-one-out with full ranking, with item-kNN's time and memory against what a dense
item x item similarity matrix would need.

    python benchmarks/baselines.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._results import write_results  # noqa: E402
from crossrec_peft.baselines import interaction_matrix, itemknn_scorer, popularity_scorer  # noqa: E402
from crossrec_peft.data.split import leave_one_out  # noqa: E402
from crossrec_peft.evaluation import HeldOutEvaluation  # noqa: E402


def movielens(root: Path) -> tuple[list[np.ndarray], int]:
    rows = list(csv.DictReader(open(root / "ratings.csv", newline="")))
    items = {m: i for i, m in enumerate(sorted({r["movieId"] for r in rows}, key=int))}
    by_user: dict[str, list[tuple[int, int]]] = {}
    for r in rows:
        by_user.setdefault(r["userId"], []).append((int(r["timestamp"]), items[r["movieId"]]))
    return [np.array([i for _, i in sorted(v)]) for v in by_user.values()], len(items)


def amazon(root: Path) -> tuple[list[np.ndarray], int]:
    items = {line.split("\t")[0]: i for i, line in enumerate(open(root / "items.tsv", encoding="utf-8"))}
    seqs = [np.array([items[t] for t in line.rstrip("\n").split("\t")[1].split()]) for line in open(root / "users.tsv", encoding="utf-8")]
    return seqs, len(items)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(Path(__file__).resolve().parent.parent.parent / "shared" / "data"))
    args = parser.parse_args()
    data = Path(args.data)
    rows = []
    for name, loader, folder in (("movielens-small", movielens, "movielens-small"), ("amazon-scientific", amazon, "amazon-scientific")):
        if not (data / folder).is_dir():
            print(f"skipping {name}: {data / folder} is absent")
            continue
        seqs, num_items = loader(data / folder)
        split = leave_one_out([s for s in seqs if len(s) >= 3])
        counts = split.train_item_counts(num_items)
        evaluation = HeldOutEvaluation(split.test, counts, [10], batch_size=256, sampled_negatives=100)
        evaluation.run("popularity", popularity_scorer(counts))
        started = time.perf_counter()
        knn = itemknn_scorer(split.train, num_items)
        evaluation.run("itemknn", knn)
        knn_seconds = time.perf_counter() - started
        report = evaluation.report()
        nnz = interaction_matrix(split.train, num_items)._nnz()
        row = {
            "dataset": name, "users": len(split.test), "items": num_items,
            "itemknn_seconds": round(knn_seconds, 2),
            "itemknn_sparse_bytes": nnz * (2 * 8 + 4) * 2,  # X and X^T in COO: two int64 indices + a float32
            "dense_similarity_bytes": num_items * num_items * 4,
            "cold_start_cases": report["cold_start"]["cases"],
        }
        for system in ("popularity", "itemknn"):
            full, sampled = report["metrics"][system], report["sampled"]["metrics"][system]
            cold = report["cold_start"]["metrics"].get(system, {})
            row.update({
                f"{system}_ndcg@10": round(full["ndcg@10"], 4), f"{system}_recall@10": round(full["recall@10"], 4),
                f"{system}_sampled100_ndcg@10": round(sampled["ndcg@10"], 4),
                f"{system}_cold_ndcg@10": round(cold.get("ndcg@10", float("nan")), 4),
                f"{system}_coverage@10": round(full["coverage@10"], 4),
            })
        rows.append(row)
        print(
            f"{name}: {row['users']:,} users, {num_items:,} items; item-kNN {knn_seconds:.1f} s, "
            f"{row['itemknn_sparse_bytes'] / 2**20:.1f} MiB sparse vs {row['dense_similarity_bytes'] / 2**20:.0f} MiB dense "
            f"({row['dense_similarity_bytes'] / row['itemknn_sparse_bytes']:.0f}x)"
        )
        print(f"  {'system':<11} {'NDCG@10':>8} {'Recall@10':>10} {'sampled-100 NDCG@10':>20} {'cold NDCG@10':>13} {'coverage@10':>12}")
        for system in ("popularity", "itemknn"):
            print(
                f"  {system:<11} {row[f'{system}_ndcg@10']:>8.4f} {row[f'{system}_recall@10']:>10.4f} "
                f"{row[f'{system}_sampled100_ndcg@10']:>20.4f} {row[f'{system}_cold_ndcg@10']:>13.4f} {row[f'{system}_coverage@10']:>12.4f}"
            )
    write_results("baselines", {"rows": rows})


if __name__ == "__main__":
    main()
