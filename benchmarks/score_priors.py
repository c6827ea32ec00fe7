"""A fixed score term beside the trained model, on the real catalogs (issue 14): measured, not adopted.

The `amazon` recipe trains with one fixed term added to every retrieval logit (the objective's `prior` hook,
crossrec_peft/objectives/retrieval.py), so the towers learn what the term does not already say; validation
picks the epoch with the training weight; afterwards the same model ranks with a grid of weights on the
validation and the test split (overall and the cold-start slice). Terms:

- `popularity`: weight * log(1 + the item's training interactions), a fixed popularity prior as in PDA
  (Zhang et al., SIGIR 2021). Training with it frees the towers from learning popularity; ranking with a
  smaller weight than in training deconfounds it (weight 0: content relevance alone). `--weight 0` trains the
  recipe itself and adds the prior after training only.
- `untuned`: weight * cos(mean of the history's untuned title embeddings, the item's untuned embedding), the
  untuned MiniLM baseline's own score, in the logits' units (times the learned logit scale). The towers then
  learn the residual over the untuned backbone.
- `cooc`: the hybrid's own co-occurrence term (crossrec_peft/hybrid.py: the recency-weighted mean cosine
  co-occurrence of the candidate with the history's items, decay 0.8), in the logits' units, with each
  training pair's own user left out of its target's counts so that the term cannot give the target away. The towers
  then learn what the co-occurrences do not say. The run keeps the product's hybrid choice after training
  (weight, borrowing and decay chosen on validation, `hybrid` in the results) beside the grid.
- `itemknn`: the item-kNN baseline's score (co-occurrence cosines to the history's items), added to the
  ranking only (a hybrid with collaborative filtering; in training it would give the target away).
  `itemknn-mean` divides it by the number of distinct history items.

Protocol as in docs/real-data.md: leave-one-out, full ranking, repeats as misses; one seed per run. Data:
`--dataset sci` (Amazon Scientific, the default) or `movielens`, imported and configured as
benchmarks/real_data.py does.

    python benchmarks/score_priors.py --term popularity --weight 1 --grid 0 0.25 0.5 0.75 1 1.25
    python benchmarks/score_priors.py --term popularity --weight 0 --grid -0.5 -0.25 -0.1 0 0.1 0.25
    python benchmarks/score_priors.py --term untuned --weight 0.3 --grid 0 0.15 0.3 0.5 1
    python benchmarks/score_priors.py --term cooc --weight 1 --grid 0 0.5 1 2
    python benchmarks/score_priors.py --term itemknn --weight 0 --grid 0 0.02 0.05 0.1 0.2 0.5
    python benchmarks/score_priors.py --dataset movielens --term itemknn --weight 0 --grid 0 0.001 0.002 0.005 0.01 0.02 0.05
    python benchmarks/score_priors.py --table benchmarks/results/score_priors_*.json

Results: benchmarks/results/score_priors_<dataset>_<term>_<weight>.json. The data is imported into --work (kept).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from crossrec_peft.baselines.itemknn import interaction_matrix, itemknn_scorer
from crossrec_peft.evaluation import HeldOutEvaluation, encode_zero_shot, model_scorer, zero_shot_scorer
from crossrec_peft.hybrid import Neighbours, recency_shares
from crossrec_peft.model.user_encoders import MeanUserEncoder
from crossrec_peft.objectives import objective_context
from crossrec_peft.objectives.retrieval import InBatchSoftmax
from crossrec_peft.recipe_class import Recipe

sys.path.insert(0, str(Path(__file__).parent))
from real_data import DATASETS, import_dataset  # noqa: E402  (the same data, imported the same way)


# -- the terms: what the logits get while training, and what the ranking gets after ----------------------------
class PopularityTerm:
    """log(1 + training interactions) of each item."""

    def __init__(self, recipe: Recipe):
        self.log_counts = torch.log1p(torch.as_tensor(recipe.split.train_item_counts(recipe.num_items), dtype=torch.float32))

    def logits(self, outputs: dict, batch: dict, items: torch.Tensor) -> torch.Tensor:
        return self.log_counts.to(items.device)[items]

    def scores(self, histories: list, scale: float) -> torch.Tensor:
        """In the cosine units the model's scorer returns: logits / scale."""
        return (self.log_counts / scale).view(1, -1)


class UntunedTerm:
    """The untuned baseline's cosine, times the model's logit scale (so the weight reads in cosine units)."""

    def __init__(self, recipe: Recipe):
        cfg = recipe.cfg
        # Before training, every method is the identity: these are MiniLM's own title embeddings.
        vectors = encode_zero_shot(recipe.model, recipe.features, recipe.num_items, cfg.train.eval_batch_size, progress=False)
        self.items = F.normalize(vectors, dim=-1)
        self.untuned = zero_shot_scorer(self.items, cfg.model.max_history)
        self.mean = MeanUserEncoder(None, self.items.shape[1])

    def logits(self, outputs: dict, batch: dict, items: torch.Tensor) -> torch.Tensor:
        vectors = self.items.to(items.device)
        window, mask = batch["sequence_items"], batch["sequence_mask"]
        # The untuned user at each position is the running mean of the window's untuned title vectors: the mean
        # user encoder's prefixes, taken in the pair order of TwoTowerModel.forward.
        running = self.mean.prefixes(vectors[window.clamp(min=0)], mask)
        users = F.normalize(running[:, :-1][mask[:, 1:]], dim=-1)
        return outputs["logit_scale"] * users @ vectors[items].T

    def scores(self, histories: list, scale: float) -> torch.Tensor:
        return self.untuned(histories)


class CooccurrenceTerm:
    """The hybrid's co-occurrence term (`hybrid.Neighbours`, recency decay 0.8), in the logits while training.

    A training pair's history and target come from one user's window, and that user's sequence is part of the
    counts: C_ij holds 1 from this user for every history item i and the target j, so the plain term would
    point at the target. For the pair's own target the similarity is computed with the user left out,
    (C_ij - 1) / sqrt((n_i - 1)(n_j - 1)) (0 where an item is left with no buyer), from the stored cosine and
    the item counts. Every other candidate in the user's window is masked as an accidental hit by the
    objective, so only the target needs it; candidates this user bought outside the window keep the user's
    count (a small inflation of items that are not the answer)."""

    keeps_hybrid = True  # the product's hybrid choice runs after training too
    DECAY = 0.8

    def __init__(self, recipe: Recipe):
        ids = list(recipe.data.item_ids)
        neighbours = Neighbours.fit(recipe.split.train, ids, recipe.cfg.hybrid.neighbours)
        self.term = neighbours.on_catalog(ids, decay=self.DECAY)
        x = interaction_matrix(list(recipe.split.train), len(ids))
        n = torch.zeros(len(ids))
        n.index_add_(0, x.indices()[1], x.values())
        self.n, self.num_items = n.double().numpy(), len(ids)
        # (row, neighbour) keys, sorted, to look up one stored similarity by binary search.
        rows = torch.repeat_interleave(torch.arange(len(ids)), neighbours.indptr.diff()).numpy().astype(np.int64)
        keys = rows * len(ids) + neighbours.index.numpy().astype(np.int64)
        order = np.argsort(keys)
        self.keys, self.sims = keys[order], neighbours.similarity.double().numpy()[order]
        self._last: tuple = (None, None)

    def _similarity(self, history: np.ndarray, target: int) -> np.ndarray:
        keys = history * self.num_items + target
        at = np.clip(np.searchsorted(self.keys, keys), 0, len(self.keys) - 1)
        return np.where(self.keys[at] == keys, self.sims[at], 0.0)

    def _pairs(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The term of every pair of the batch against every item, and against its own target with the user
        left out; computed once per batch (the objective asks for the in-batch and the sampled candidates)."""
        if self._last[0] is batch:
            return self._last[1]
        window, mask = batch["sequence_items"].cpu().numpy(), batch["sequence_mask"].cpu().numpy()
        histories, own = [], []
        for r in range(len(window)):  # pairs in TwoTowerModel.forward's order: window by window, position by position
            for t in range(int(mask[r].sum()) - 1):
                history, target = window[r, : t + 1].astype(np.int64), int(window[r, t + 1])
                histories.append(history)
                shares = recency_shares(history.tolist(), self.DECAY)
                items = np.fromiter(shares, dtype=np.int64, count=len(shares))
                weights = np.fromiter(shares.values(), dtype=np.float64, count=len(shares))
                counts = np.rint(self._similarity(items, target) * np.sqrt(self.n[items] * self.n[target]))
                norm = np.sqrt(np.maximum(self.n[items] - 1, 0) * max(self.n[target] - 1, 0))
                left_out = np.where((norm > 0) & (counts >= 1) & (items != target), (counts - 1) / np.maximum(norm, 1e-12), 0.0)
                own.append(float(weights @ left_out))
        out = (self.term.scores(histories), torch.tensor(own, dtype=torch.float32))
        self._last = (batch, out)
        return out

    def logits(self, outputs: dict, batch: dict, items: torch.Tensor) -> torch.Tensor:
        full, own = self._pairs(batch)
        term = full[:, items.cpu()]
        if items.shape == outputs["target_item"].shape and torch.equal(items, outputs["target_item"]):
            term = term.clone()
            term[torch.arange(len(own)), torch.arange(len(own))] = own  # pair p's own target is column p
        return outputs["logit_scale"] * term.to(outputs["users"].device)

    def scores(self, histories: list, scale: float) -> torch.Tensor:
        return self.term.scores(histories)


class ItemKnnTerm:
    """The item-kNN baseline's score (summed co-occurrence cosines to the history's items): ranking only. In
    training a pair's own sequence is part of the co-occurrence counts, so the term would give the target
    away; --weight must be 0 for it."""

    trains = False

    def __init__(self, recipe: Recipe):
        self.knn = itemknn_scorer(recipe.split.train, recipe.num_items)

    def logits(self, outputs: dict, batch: dict, items: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("the itemknn term ranks only (train with --weight 0)")

    def scores(self, histories: list, scale: float) -> torch.Tensor:
        return self.knn(histories)


class ItemKnnMeanTerm(ItemKnnTerm):
    """The item-kNN score divided by the number of distinct history items (a mean instead of a sum), so that
    a weight means the same for short and long histories."""

    def scores(self, histories: list, scale: float) -> torch.Tensor:
        lengths = torch.tensor([max(1, len(set(h.tolist()))) for h in histories], dtype=torch.float32)
        return self.knn(histories) / lengths.view(-1, 1)


TERMS = {"popularity": PopularityTerm, "untuned": UntunedTerm, "cooc": CooccurrenceTerm, "itemknn": ItemKnnTerm, "itemknn-mean": ItemKnnMeanTerm}


class WithPrior(InBatchSoftmax):
    """The recipe's retrieval objective with weight * term added to every logit."""

    def __init__(self, options, term, weight: float):
        super().__init__(options)
        self.term, self.weight = term, weight

    def prior(self, outputs, batch, items):
        return None if self.weight == 0 else self.weight * self.term.logits(outputs, batch, items)


class ScorePriorRecipe(Recipe):
    """The recipe, trained beside a fixed term and ranked with it; `evaluate` adds the grid of weights."""

    def __init__(self, cfg, run_dir, *, term: str, weight: float, grid: list[float], **kwargs):
        super().__init__(cfg, run_dir, **kwargs)
        self.term_name, self.weight, self.grid = term, weight, grid

    def setup_model(self) -> None:
        super().setup_model()
        self.term = TERMS[self.term_name](self)
        self.objective = WithPrior(self.objective.options, self.term, self.weight)
        self.objective.prepare(self.model, objective_context(self.data, self.split, self.cfg.seed))

    def ranked_with(self, model, content: torch.Tensor, weight: float):
        base = model_scorer(model, content, self.cfg.model.max_history)
        scale = float(model.logit_scale.detach())

        def score(histories):
            return base(histories) + weight * self.term.scores(histories, scale)

        return score

    def scorer(self, model, desc: str):  # validation (the best epoch) ranks with the training weight
        return self.ranked_with(model, self.encode(model, desc), self.weight)

    def evaluate(self) -> None:
        super().evaluate()
        cfg = self.cfg
        content = self.encode(self.model, "grid: encode items")
        counts = self.split.train_item_counts(self.num_items)
        self.grid_rows = []
        for weight in self.grid:
            row = {"weight": weight}
            for name, cases in (("validation", self.split.validation), ("test", self.split.test)):
                held_out = HeldOutEvaluation(cases, counts, list(cfg.eval.ks), seed=cfg.seed, repeats=cfg.eval.repeats,
                                             cold_start_max=cfg.eval.cold_start_max)
                held_out.run("model", self.ranked_with(self.model, content, weight))
                report = held_out.report()
                row[name] = report["metrics"]["model"]["ndcg@10"]
                row[f"{name}_cold"] = report["cold_start"]["metrics"]["model"]["ndcg@10"]
            self.grid_rows.append(row)
            print(json.dumps(row), flush=True)


def table(results: list[dict]) -> str:
    lines = []
    for r in results:
        epochs = ", ".join(f"{v:.4f}" for v in r["validation_by_epoch"])
        lines += [
            f"{r.get('dataset', 'sci')}: term {r['term']}, trained with weight {r['weight']:g} (validation NDCG@10 by epoch: {epochs}; best epoch {r['best_epoch']})",
            "",
            "| ranked with weight | validation NDCG@10 | validation cold | test NDCG@10 | test cold |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {g['weight']:g} | {g['validation']:.4f} | {g['validation_cold']:.4f} | {g['test']:.4f} | {g['test_cold']:.4f} |"
            for g in r["grid"]
        ]
        if "hybrid" in r:
            h = r["hybrid"]
            lines += ["", f"the product's hybrid after training (chosen on validation: weight {h['weight']:g}, borrowing x{h['borrow_weight']:g}, "
                          f"decay {h['decay']:g}): test NDCG@10 {h['test']:.4f}, test cold {h['test_cold']:.4f}"]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=list(DATASETS), default="sci", help="as in benchmarks/real_data.py")
    parser.add_argument("--term", choices=list(TERMS), default="popularity")
    parser.add_argument("--weight", type=float, default=1.0, help="the term's weight while training (and validating)")
    parser.add_argument("--grid", type=float, nargs="+", default=[0.0, 0.5, 1.0], help="weights to rank with after training")
    parser.add_argument("--work", help="where the imported data and the layer cache are kept (default: a temporary directory)")
    parser.add_argument("--table", nargs="+", metavar="JSON", help="print the tables of earlier results and exit")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the amazon recipe")
    args = parser.parse_args()
    if args.weight != 0 and not getattr(TERMS[args.term], "trains", True):
        parser.error(f"--term {args.term} ranks only: train with --weight 0")
    if args.table:
        print(table([json.loads(Path(p).read_text()) for p in args.table]))
        return

    from _results import write_results

    from crossrec_peft import recipes
    from crossrec_peft.config import load_config

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="score_priors_"))
    data = import_dataset(args.dataset, work)
    keeps_hybrid = str(getattr(TERMS[args.term], "keeps_hybrid", False)).lower()
    _, _, fields, dataset_overrides = DATASETS[args.dataset]
    cfg = load_config(recipes.path("amazon"), [
        f"data.path={data}", f"data.cache_dir={work / 'cache'}", f"model.modalities.text.fields=[{','.join(fields)}]",
        # The built-in hybrid (hybrid.enabled) is left out, the grid here measures such terms itself; except
        # beside the `cooc` term, which is the hybrid's own: the product's choice after training is the comparison.
        "eval.baselines=[untuned]", "export.enabled=false", f"hybrid.enabled={keeps_hybrid}", *dataset_overrides, *args.overrides,
    ], name="amazon")
    run_dir = Path(tempfile.mkdtemp(prefix=f"{args.term}_", dir=work)) / "run"
    recipe = ScorePriorRecipe(cfg, run_dir, term=args.term, weight=args.weight, grid=args.grid, progress=False)
    recipe.run()
    result = {
        "dataset": args.dataset, "term": args.term, "weight": args.weight, "best_epoch": recipe.result.best_epoch,
        "validation_by_epoch": [h["ndcg@10"] for h in recipe.state.history],
        "untuned": {"test": recipe.evaluated["metrics"]["untuned"]["ndcg@10"],
                    "test_cold": recipe.evaluated["cold_start"]["metrics"]["untuned"]["ndcg@10"]},
        "grid": recipe.grid_rows,
    }
    if recipe.hybrid is not None:
        result["hybrid"] = {**recipe.hybrid.record(), "test": recipe.evaluated["metrics"]["hybrid"]["ndcg@10"],
                            "test_cold": recipe.evaluated["cold_start"]["metrics"]["hybrid"]["ndcg@10"]}
    write_results(f"score_priors_{args.dataset}_{args.term}_{args.weight:g}", result)
    print("\n" + table([result]))


if __name__ == "__main__":
    main()
