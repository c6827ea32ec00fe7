"""`untuned`: the pretrained backbones' zero-shot embeddings, measured before training."""

from __future__ import annotations

from ..registry import baselines
from .base import Baseline, BaselineContext, Scorer


def untuned_scorer(model, features: dict, num_items: int, batch_size: int, max_history: int, *, progress: bool = True) -> Scorer:
    """The zero-shot scorer of a model that has not been trained yet."""
    from ..evaluation import encode_zero_shot, zero_shot_scorer

    return zero_shot_scorer(encode_zero_shot(model, features, num_items, batch_size, progress=progress), max_history)


@baselines.register("untuned")
class Untuned(Baseline):
    """the pretrained backbones' zero-shot embeddings, before training (towers trained from scratch left out); users = mean of their history"""

    before_training = True
    validated = True

    def scorer(self, context: BaselineContext) -> Scorer:
        if context.model is None or context.features is None:
            raise ValueError("the untuned baseline needs the model before training and its catalog features")
        cfg = context.cfg
        return untuned_scorer(context.model, context.features, context.num_items, int(cfg.train.eval_batch_size),
                              int(cfg.model.max_history), progress=context.progress)
