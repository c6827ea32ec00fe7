"""The baseline contract and how a run measures baselines (docs/baselines.md).

A baseline is a registry entry (`registry.baselines`, kind `baseline`): a `Baseline` subclass in its own
module, registered in one line, whose docstring's first line is the description the report prints. It
builds a `Scorer` (histories -> scores over the catalog) from a `BaselineContext`, so evaluation treats it
like the model. Two class attributes say when a run measures it:

- `before_training`: its scorer needs the model before it trains (`untuned`): built and measured on the
  test split before training;
- `validated`: cheap enough to be measured on the validation split before training too, the yardstick the
  model's validation scores are read against.

Everything else is measured on the test split after training, in `eval.baselines` order (`run_baselines`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np
import torch
from omegaconf import DictConfig

from .. import registry

Scorer = Callable[[list], torch.Tensor]  # evaluation.Scorer: histories -> [len(histories), num_items]


@dataclass
class BaselineContext:
    """What a baseline is built from: the run's config, split and catalog, and (for `untuned`) the model
    before it trains with its prepared catalog features."""

    cfg: DictConfig
    split: Any  # data.split.Split
    item_ids: list[str]
    log: Any = None  # the run's MetricsLog
    model: Any = None
    features: dict | None = None
    progress: bool = False
    details: dict[str, Any] = field(default_factory=dict)  # baseline -> facts the report shows

    @property
    def num_items(self) -> int:
        return len(self.item_ids)


class Baseline(ABC):
    before_training: ClassVar[bool] = False
    validated: ClassVar[bool] = False

    def __init__(self, options: Any = None):
        self.options = options

    @abstractmethod
    def scorer(self, context: BaselineContext) -> Scorer:
        """The baseline's scorer (it may record facts for the report in `context.details[name]`)."""


registry.baselines.set_contract(Baseline)


def run_baselines(
    cfg: DictConfig,
    split,
    item_ids: list[str],
    evaluation,
    *,
    log,
    progress: bool = True,
    console=None,
    context: BaselineContext | None = None,
    scorers: dict[str, Scorer] | None = None,
) -> dict[str, Any]:
    """Measure every baseline named in `eval.baselines` that is not measured before training into
    `evaluation` (reusing `scorers` built earlier). Returns facts the report shows (the ID model's training)."""

    context = context or BaselineContext(cfg, split, list(item_ids), log=log, progress=progress)
    scorers = scorers or {}
    for name in cfg.eval.baselines:
        baseline = registry.baselines.create(name)
        if baseline.before_training:
            continue
        if console is not None:
            console.print(f"  baseline: {name}")
        evaluation.run(name, scorers.get(name) or baseline.scorer(context))
    return context.details
