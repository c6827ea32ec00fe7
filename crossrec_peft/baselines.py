"""Baselines evaluated in the same run as the model, on the same test cases (docs/baselines.md).

- `untuned`: the pretrained backbones' zero-shot embeddings (evaluation.encode_zero_shot), before training.
- `popularity`: items ranked by their number of training interactions.
- `itemknn`: item-based nearest neighbours on the training co-occurrence, cosine-normalised.
- `ids`: an ID-embedding model (MF with the `mean` user encoder, SASRec-with-IDs with `sasrec`) trained
  by the same trainer as the content model.

Each baseline is a `Scorer` (histories -> scores over the catalog), so evaluation treats them like the model.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from .data.split import Split
from .evaluation import HeldOutEvaluation, Scorer, encode_catalog, encode_zero_shot, evaluate_cases, model_scorer, zero_shot_scorer

BASELINES = ("untuned", "popularity", "itemknn", "ids")


def popularity_scorer(counts: np.ndarray) -> Scorer:
    scores = torch.as_tensor(counts, dtype=torch.float32)

    def score(histories: list[np.ndarray]) -> torch.Tensor:
        return scores.expand(len(histories), -1).clone()

    return score


def interaction_matrix(sequences: list[np.ndarray], num_items: int) -> torch.Tensor:
    """Binary users x items matrix (sparse COO, coalesced, float32) of the training sequences; repeats count once."""
    rows = np.concatenate([np.full(len(s), u, dtype=np.int64) for u, s in enumerate(sequences)] or [np.zeros(0, dtype=np.int64)])
    cols = np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences] or [np.zeros(0, dtype=np.int64)])
    pairs = np.unique(rows * num_items + cols)
    index = torch.as_tensor(np.stack([pairs // num_items, pairs % num_items]))
    values = torch.ones(len(pairs), dtype=torch.float32)
    return torch.sparse_coo_tensor(index, values, (len(sequences), num_items), is_coalesced=True, check_invariants=True)


def itemknn_scorer(train_sequences: list[np.ndarray], num_items: int) -> Scorer:
    """Item-kNN on co-occurrence: score(u, j) = sum over the user's distinct history items i != j of
    cos(i, j) = C_ij / sqrt(n_i n_j), with C = X^T X the co-occurrence counts of the binary users x items
    matrix X and n_i = C_ii.

    C is never formed: for a block of users with history indicator H (block x items), the scores are
    D^-1/2 X^T X D^-1/2 H^T minus the self-similarity of the history items, two sparse-dense products with
    X (cost: interactions x block), so memory stays linear in the interactions whatever the catalog size."""
    x = interaction_matrix(train_sequences, num_items)
    xt = x.t().coalesce()
    n = torch.zeros(num_items)
    n.index_add_(0, x.indices()[1], x.values())
    inv_sqrt = torch.where(n > 0, n.clamp(min=1).rsqrt(), torch.zeros_like(n))

    def score(histories: list[np.ndarray]) -> torch.Tensor:
        h = torch.zeros(len(histories), num_items)
        for r, items in enumerate(histories):
            h[r, torch.as_tensor(items, dtype=torch.long)] = 1.0
        scaled = (h * inv_sqrt).T.contiguous()  # items x block
        scores = torch.sparse.mm(xt, torch.sparse.mm(x, scaled)).T * inv_sqrt
        return scores - h * (n > 0).float()  # cos(i, i) = 1 for every item seen in training

    return score


def ids_config(cfg: DictConfig, num_items: int) -> DictConfig:
    """The ID baseline's run config: the run's config with one `ids` modality (method full, fusion mean),
    the same user encoder, history length and heads, the retrieval objective and `eval.ids` training settings."""
    ids = cfg.eval.ids
    raw = OmegaConf.to_container(cfg, resolve=True)
    raw = copy.deepcopy(raw)
    raw["model"]["modalities"] = {
        "ids": {"fields": ["item_id"], "backbone": {"name": "ids", "dim": int(ids.dim), "num_items": int(num_items)}, "method": {"name": "full"}}
    }
    raw["model"]["fusion"] = {"name": "mean"}
    raw["train"].update(epochs=int(ids.epochs), lr=float(ids.lr), objective={"name": "retrieval"})
    if "resume" in raw["train"]:
        raw["train"]["resume"] = False  # the baseline is cheap: it always trains afresh, without checkpoints
    return OmegaConf.create(raw)


def train_ids_model(cfg: DictConfig, split: Split, item_ids: list[str], *, log, progress: bool = False):
    """Build and train the ID baseline with the run's trainer; returns (model, TrainResult, scorer factory).

    It gets an Accelerator of its own: the run's accelerator keeps the content model's state (what its
    checkpoints save), which must not gain a second model."""
    from . import registry
    from .backbones.base import FeatureContext
    from .config import component
    from .model import build_model
    from .train import make_accelerator, train

    num_items = len(item_ids)
    ids_cfg = ids_config(cfg, num_items)
    # make_accelerator: the run's precision fallback on CPU (a second Accelerator asking for another precision
    # than the first fails) and its own gradient-accumulation setting.
    accelerator = make_accelerator(ids_cfg)
    # Its own RNG stream: adding or removing this baseline must not change the content model's training.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(cfg.seed) + 7)
        model = build_model(ids_cfg.model)
        features = model.featurize({"item_id": list(item_ids)}, FeatureContext(item_ids=list(item_ids)))
        model.to(accelerator.device)
        bs, max_history = int(cfg.train.eval_batch_size), int(cfg.model.max_history)

        def scorer_of(m) -> Scorer:
            content = encode_catalog(m, features, num_items, bs, progress=False)
            return model_scorer(m, content, max_history)

        entry, _, options = component(registry.objectives, ids_cfg.train.objective, "eval.ids objective")
        result = train(
            model, split.train, features, entry.factory(options), ids_cfg,
            accelerator=accelerator,
            validate=lambda m: evaluate_cases(scorer_of(m), split.validation, list(cfg.eval.ks), seed=int(cfg.seed), repeats=cfg.eval.repeats),
            log=TaggedLog(log, "ids"),
            progress=progress,
        )
    return model, result, scorer_of


class TaggedLog:
    """A metrics log that marks every record with the system it belongs to (the ID baseline's training)."""

    def __init__(self, log, system: str):
        self.log, self.system = log, system

    def write(self, record: dict) -> None:
        self.log.write({**record, "system": self.system})

    def __getattr__(self, name: str) -> Any:
        return getattr(self.log, name)


def untuned_scorer(model, features: dict, num_items: int, batch_size: int, max_history: int, *, progress: bool = True) -> Scorer:
    """The zero-shot scorer of a model that has not been trained yet."""
    return zero_shot_scorer(encode_zero_shot(model, features, num_items, batch_size, progress=progress), max_history)


def run_baselines(
    cfg: DictConfig,
    split: Split,
    item_ids: list[str],
    evaluation: HeldOutEvaluation,
    *,
    log,
    progress: bool = True,
    console=None,
) -> dict[str, Any]:
    """Evaluate every baseline named in `eval.baselines` except `untuned` (which must run before training:
    see `untuned_scorer`) into `evaluation`. Returns facts the report shows (the ID model's training)."""
    num_items = len(item_ids)
    names = [b for b in cfg.eval.baselines if b != "untuned"]
    extra: dict[str, Any] = {}
    builders: dict[str, Callable[[], Scorer]] = {
        "popularity": lambda: popularity_scorer(split.train_item_counts(num_items)),
        "itemknn": lambda: itemknn_scorer(split.train, num_items),
    }
    for name in names:
        if console is not None:
            console.print(f"  baseline: {name}")
        if name == "ids":
            model, result, scorer_of = train_ids_model(cfg, split, item_ids, log=log, progress=progress)
            evaluation.run("ids", scorer_of(model))
            extra["ids"] = {
                "epochs_run": result.epochs_run, "best_epoch": result.best_epoch, "steps": result.steps,
                "train_seconds": result.seconds, "dim": int(cfg.eval.ids.dim),
                "parameters": sum(p.numel() for p in model.parameters()),
            }
        else:
            evaluation.run(name, builders[name]())
    return extra
