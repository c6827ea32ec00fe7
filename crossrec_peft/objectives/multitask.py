"""`multitask`: a weighted sum of named objectives that share the towers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict

import torch

from ..errors import ConfigError
from ..model.heads import TaskUncertainty
from ..registry import objectives
from .base import NegativeOptions, Objective, ObjectiveContext

WEIGHTINGS = ("fixed", "uncertainty")


def _task_specs(tasks: dict) -> dict[str, dict]:
    """Task name -> component spec; a task without `name` is the objective of its own name."""
    return {task: {"name": task, **dict(spec or {})} for task, spec in tasks.items()}


def _build_tasks(tasks: dict) -> dict[str, Objective]:
    from ..config import component  # the config module resolves components; imported late (it imports registries)

    built = {}
    for task, spec in _task_specs(tasks).items():
        if spec["name"] == "multitask":
            raise ConfigError(f"'train.objective.tasks.{task}': a multitask objective cannot contain another multitask.")
        entry, _, options = component(objectives, spec, f"train.objective.tasks.{task}")
        objective = objectives.create(entry, options)
        objective.task = task
        built[task] = objective
    return built


@dataclass
class MultitaskOptions:
    # Task name -> the objective's spec ({name: ..., options}); `name` defaults to the task name. No default
    # tasks: a config's tasks would be merged into them, not replace them.
    tasks: Dict[str, Any] = field(default_factory=dict)
    # Fixed weights per task (default 1.0); with weighting: uncertainty they multiply the learned weights.
    weights: Dict[str, float] = field(default_factory=dict)
    weighting: str = "fixed"  # fixed | uncertainty (Kendall et al. 2018)

    def check(self) -> str | None:
        if not self.tasks:
            return "multitask needs at least one task under 'tasks' (for example tasks: {retrieval: {}, ctr: {num_negatives: 4}})."
        if self.weighting not in WEIGHTINGS:
            return f"multitask 'weighting' must be one of {', '.join(WEIGHTINGS)}, got '{self.weighting}'."
        unknown = sorted(set(self.weights) - set(self.tasks))
        if unknown:
            return f"multitask 'weights' names {', '.join(unknown)}, which is not a task (tasks: {', '.join(self.tasks)})."
        negative = [t for t, w in self.weights.items() if not w >= 0]
        if negative:
            return f"multitask weight of '{negative[0]}' must be zero or more, got {self.weights[negative[0]]}."
        try:
            built = _build_tasks(self.tasks)
        except ConfigError as exc:
            return str(exc)
        sampled = {t: o.options for t, o in built.items() if isinstance(o.options, NegativeOptions) and o.options.num_negatives > 0}
        kinds = {(o.sampling, o.alpha if o.sampling == "popularity" else None, o.seen_only) for o in sampled.values()}
        if len(kinds) > 1:
            return (
                "multitask tasks share one set of sampled negatives per batch, but "
                + ", ".join(
                    f"{t} samples {o.sampling}" + (f" (alpha {o.alpha})" if o.sampling == "popularity" else "") + (" (seen only)" if o.seen_only else "")
                    for t, o in sampled.items()
                )
                + ": give them the same sampling, alpha and seen_only."
            )
        return None


@objectives.register("multitask", options=MultitaskOptions)
class Multitask(Objective):
    """Weighted sum of named objectives sharing the towers (fixed or uncertainty weights); logs each task's loss."""

    name = "multitask"

    def __init__(self, options: MultitaskOptions):
        super().__init__(options)
        self.tasks = _build_tasks(options.tasks)
        self.weights = {t: float(options.weights.get(t, 1.0)) for t in self.tasks}
        self.uncertainty: TaskUncertainty | None = None

    def prepare(self, model, context: ObjectiveContext) -> None:
        for objective in self.tasks.values():
            objective.prepare(model, context)
        needs = [o.batch_needs for o in self.tasks.values()]
        merged = needs[0].__class__(seed=context.seed)
        for n in needs:
            merged.values.update(n.values)
            if n.negatives is not None and n.num_negatives > merged.num_negatives:
                # Tasks read the first num_negatives columns of the widest sample (check() made the distributions agree).
                merged.negatives, merged.num_negatives = n.negatives, n.num_negatives
        self.batch_needs = merged
        if self.options.weighting == "uncertainty":
            self.uncertainty = self.attach_head(model, TaskUncertainty(list(self.tasks)))

    def held_out_metrics(self, model, content, data, split, max_history) -> dict:
        out = {}
        for task, objective in self.tasks.items():
            found = objective.held_out_metrics(model, content, data, split, max_history)
            if found:
                out[task] = found
        return out

    def __call__(self, outputs: dict, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        losses, logs = [], {}
        for task, objective in self.tasks.items():
            loss, task_logs = objective(outputs, batch)
            losses.append(self.weights[task] * loss)
            logs.update({f"{task}/{key}": value for key, value in task_logs.items()})
        stacked = torch.stack(losses)
        if self.uncertainty is not None:
            total = self.uncertainty(stacked)
            for task, log_var in zip(self.tasks, self.uncertainty.log_vars.detach()):
                logs[f"{task}/weight"] = float(torch.exp(-log_var)) * self.weights[task]
        else:
            total = stacked.sum()
        logs["loss"] = float(total.detach())
        return total, logs
