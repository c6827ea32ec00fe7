"""PNG plots of runs, drawn with matplotlib's object API (Figure + Agg canvas: no pyplot global state, no
display needed).

- `plot_training`: training loss per step (each task's loss when the objective logs several) and validation
  metrics per epoch, for the model and the ID baseline.
- `plot_systems`: grouped bars of the model beside the baselines per metric.
- `plot_by_history`: one metric per history-length bucket for each system.
- `plot_runs`: several runs side by side (`crossrec-peft report`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

VALIDATION_METRICS = ("ndcg@10", "recall@10")
NOT_LOSSES = {"epoch", "step", "lr", "split", "system"}


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def read_metrics_log(path: Path) -> list[dict[str, Any]]:
    """Records of a run's metrics.jsonl (an absent file has none; a line that is not JSON is skipped: the
    last line of a killed run may be cut)."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def loss_keys(records: Sequence[dict]) -> list[str]:
    """Keys of step records that are losses: `loss` and each task's (`loss/<task>`, `<task>_loss`, ...)."""
    keys: list[str] = []
    for r in records:
        if "step" in r and r.get("split") is None:
            for k, v in r.items():
                if k not in NOT_LOSSES and "loss" in k and isinstance(v, (int, float)) and k not in keys:
                    keys.append(k)
    return keys


def plot_training(records: Sequence[dict], path: Path) -> Path | None:
    """Loss per step (left) and validation metrics per epoch (right), one line per system and task.
    None when the log holds no training records."""
    steps = [r for r in records if "step" in r and r.get("split") is None]
    validation = [r for r in records if r.get("split") == "validation"]
    if not steps and not validation:
        return None
    fig = _figure(11, 4)
    left, right = fig.subplots(1, 2)
    for system in sorted({r.get("system", "model") for r in steps}):
        rows = [r for r in steps if r.get("system", "model") == system]
        for key in loss_keys(rows):
            points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
            if points:
                x, y = zip(*points)
                left.plot(x, y, label=f"{system}: {key}", linewidth=1.2)
    left.set(title="training loss", xlabel="step", ylabel="loss")
    for system in sorted({r.get("system", "model") for r in validation}):
        rows = [r for r in validation if r.get("system", "model") == system]
        for metric in VALIDATION_METRICS:
            points = [(r["epoch"], r[metric]) for r in rows if metric in r]
            if len(points) == 1 and points[0][0] == 0:  # a baseline, measured once before training: a level
                right.axhline(points[0][1], linestyle="--", linewidth=1, label=f"{system}: {metric}")
            elif points:
                x, y = zip(*points)
                right.plot(x, y, marker="o", label=f"{system}: {metric}")
    right.set(title="validation", xlabel="epoch", ylabel="metric")
    for ax in (left, right):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return _save(fig, path)


def _grouped_bars(ax, groups: Sequence[str], series: dict[str, Sequence[float]]) -> None:
    width = 0.8 / max(1, len(series))
    x = np.arange(len(groups))
    for i, (name, values) in enumerate(series.items()):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=name)
    ax.set_xticks(x, groups)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def plot_systems(metrics: dict[str, dict[str, float]], names: Sequence[str], path: Path, *, title: str = "test metrics") -> Path:
    """Grouped bars: one group per metric name, one bar per system (in the order of `metrics`)."""
    fig = _figure(max(6, 1.6 * len(names)), 4)
    ax = fig.subplots()
    _grouped_bars(ax, list(names), {s: [values.get(n, np.nan) for n in names] for s, values in metrics.items()})
    ax.set(title=title, ylabel="value")
    return _save(fig, path)


def plot_by_history(by_history: dict[str, Any], metric: str, path: Path) -> Path | None:
    """`metric` per history-length bucket, one line per system; None without buckets."""
    buckets = by_history.get("buckets") or []
    if not buckets:
        return None
    fig = _figure(7, 4)
    ax = fig.subplots()
    for system, per_bucket in by_history["metrics"].items():
        ax.plot(range(len(buckets)), [per_bucket[b].get(metric, np.nan) for b in buckets], marker="o", label=system)
    labels = [f"{b}\n({n:,} users)" for b, n in zip(buckets, by_history["cases"])]
    ax.set_xticks(range(len(buckets)), labels, fontsize=8)
    ax.set(title=f"{metric} by history length", xlabel="items in the user's history", ylabel=metric)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_runs(runs: dict[str, dict[str, float]], names: Sequence[str], path: Path) -> Path:
    """Several runs' model metrics side by side: one group per metric, one bar per run."""
    return plot_systems(runs, names, path, title="runs compared (model, test)")
