"""`ids`: an ID-embedding model (MF with the `mean` user encoder, SASRec-with-IDs with `sasrec`) trained by
the same trainer as the content model, so the comparison isolates what content brings."""

from __future__ import annotations

import copy
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ..registry import baselines
from .base import Baseline, BaselineContext, Scorer


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


def train_ids_model(cfg: DictConfig, split, item_ids: list[str], *, log, progress: bool = False):
    """Build and train the ID baseline with the run's trainer; returns (model, TrainResult, scorer factory).

    It gets an Accelerator of its own: the run's accelerator keeps the content model's state (what its
    checkpoints save), which must not gain a second model."""
    from .. import registry
    from ..backbones.base import FeatureContext
    from ..config import component
    from ..evaluation import encode_catalog, evaluate_cases, model_scorer
    from ..model import build_model
    from ..train import make_accelerator, train

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
            model, split.train, features, registry.objectives.create(entry, options), ids_cfg,
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


@baselines.register("ids")
class Ids(Baseline):
    """an ID-embedding model (no content) trained by the same trainer: MF with the mean user encoder, SASRec-with-IDs with sasrec"""

    def scorer(self, context: BaselineContext) -> Scorer:
        cfg = context.cfg
        model, result, scorer_of = train_ids_model(cfg, context.split, context.item_ids, log=context.log, progress=context.progress)
        context.details["ids"] = {
            "epochs_run": result.epochs_run, "best_epoch": result.best_epoch, "steps": result.steps,
            "train_seconds": result.seconds, "dim": int(cfg.eval.ids.dim),
            "parameters": sum(p.numel() for p in model.parameters()),
        }
        return scorer_of(model)
