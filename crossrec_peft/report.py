"""Run reports: report.json (schema in docs/report-schema.md), report.md with its PNG plots, the closing
console table, and the side-by-side comparison of several runs (`crossrec-peft report`)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

from .config import flat_keys
from .errors import DataError
from .fsutil import atomic_file

HEADLINE = ("recall@10", "ndcg@10", "mrr@10")
FAMILIES = ("recall", "ndcg", "mrr", "map", "coverage")
SLICE_METRICS = ("recall@10", "ndcg@10", "mrr@10")
DESCRIPTIONS = {  # the systems that are not baselines; a baseline's description is its registry entry's
    "model": "the fine-tuned model",
    "hybrid": "the fine-tuned model plus the item co-occurrence term (hybrid.enabled), its weight chosen on validation",
    "parent": "the parent package's model (init_from), before this run's training",
}


def describe(system: str) -> str:
    from .registry import baselines

    if system in DESCRIPTIONS:
        return DESCRIPTIONS[system]
    return baselines.get(system).description if system in baselines else ""


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def systems(report: dict[str, Any]) -> list[str]:
    """The report's systems: the model first (and its hybrid), then the baselines in the order they were run."""
    names = list(report["metrics"])
    first = [s for s in ("model", "hybrid") if s in names]
    return first + [s for s in names if s not in first]


def ks_of(metrics: dict[str, float]) -> list[int]:
    return sorted({int(k.split("@")[1]) for k in metrics if "@" in k})


def _fmt(value: Any) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def write_plots(run_dir: Path, report: dict[str, Any]) -> dict[str, str]:
    """The run's PNGs under run_dir/plots; returns their paths relative to run_dir by kind."""
    from .plots import plot_by_history, plot_systems, plot_training, read_metrics_log

    written: dict[str, str] = {}
    training = plot_training(read_metrics_log(run_dir / "metrics.jsonl"), run_dir / "plots" / "training.png")
    if training:
        written["training"] = "plots/training.png"
    model = report["metrics"].get("model", {})
    # Accuracy only: coverage is another scale (a share of the catalog) and MAP equals MRR with one target.
    names = [f"{f}@{k}" for k in ks_of(model) for f in ("recall", "ndcg", "mrr") if f"{f}@{k}" in model]
    plot_systems({s: report["metrics"][s] for s in systems(report)}, names, run_dir / "plots" / "systems.png", title="test metrics (full ranking)")
    written["systems"] = "plots/systems.png"
    if report.get("by_history") and plot_by_history(report["by_history"], "ndcg@10", run_dir / "plots" / "history_length.png"):
        written["history_length"] = "plots/history_length.png"
    return written


def write_report(run_dir: Path, report: dict[str, Any], *, plots: bool = True) -> None:
    """report.json, report.md and (with `plots`) the PNGs they point to. report.json comes last and whole (a
    temporary file renamed into place): its presence is what marks a run finished (rundir.finished_report), so
    a run killed before or while writing it is left unfinished, for --resume to complete."""
    run_dir = Path(run_dir)
    if plots:
        report["plots"] = write_plots(run_dir, report)
    (run_dir / "report.md").write_text(markdown(report))
    with atomic_file(run_dir / "report.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")


def _system_table(metrics: dict[str, dict[str, float]], order: Sequence[str], names: Sequence[str]) -> list[str]:
    lines = ["| system | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for system in order:
        values = metrics.get(system, {})
        lines.append(f"| {system} | " + " | ".join(_fmt(values.get(n)) for n in names) + " |")
    return lines


def _delta_row(name: str, before: float | None, after: float | None) -> str:
    if before is None or after is None:
        return f"| {name} | {_fmt(before)} | {_fmt(after)} | – | – |"
    relative = f"{100 * (after - before) / before:+.1f}%" if before else "–"
    return f"| {name} | {before:.4f} | {after:.4f} | {after - before:+.4f} | {relative} |"


def protocol_line(report: dict[str, Any]) -> str:
    """How a target already in the history was counted (reports before the option have no `protocol`)."""
    protocol = report.get("protocol") or {"repeats": "allow"}
    count = protocol.get("repeat_cases")
    cases = f" ({count:,} test cases are repeats)" if count is not None else ""
    if protocol["repeats"] == "miss":
        return f"repeats counted as misses: every history item is excluded, the target too{cases}; the standard protocol"
    return f"repeats allowed: history items are excluded except the user's own target{cases}"


def below_untuned(report: dict[str, Any]) -> str | None:
    """A plain sentence when the tuned model's best validation NDCG@10 is below the untuned backbone's on the
    same validation cases (fine-tuning made the recommendations worse), else None."""
    validation = report.get("validation") or {}
    model, untuned = validation.get("model", {}).get("ndcg@10"), validation.get("untuned", {}).get("ndcg@10")
    if model is None or untuned is None or model >= untuned:
        return None
    return (
        f"Fine-tuning made validation worse: the tuned model's best validation NDCG@10 {model:.4f} is below the "
        f"untuned backbone's {untuned:.4f} ({100 * (model / untuned - 1):+.1f}%). The untuned backbone would "
        "recommend better; see docs/training.md for what to try."
    )


def markdown(report: dict[str, Any]) -> str:
    order = systems(report)
    model = report["metrics"]["model"]
    ks = ks_of(model)
    split = str(report.get("split", "leave-one-out")).replace("_", "-")
    lines = [
        f"# Run `{report['name']}` ({report['domain']})",
        "",
        f"Test split ({split}): full ranking over all {report['data']['items']:,} items for "
        f"{report.get('split_detail', {}).get('test_cases', report['data']['users']):,} users; {protocol_line(report)}; ties broken by a "
        "seeded random draw. Metric formulas: docs/metrics.md.",
        "",
        "## Model and baselines",
        "",
    ]
    for system in order:
        lines.append(f"- `{system}`: {describe(system)}")
    hybrid = report.get("hybrid")
    if hybrid:
        grid = ", ".join(f"{w}: {v:.4f}" for w, v in hybrid["validation_ndcg@10"].items())
        lines += ["", f"The hybrid's weight {hybrid['weight']:g} was chosen on the validation split (NDCG@10 by weight: {grid}; "
                  f"0 is the model alone), over {hybrid['pairs']:,} co-occurrence neighbours ({hybrid['neighbours']} at most per item)."]
    for k in ks:
        names = [f"{f}@{k}" for f in FAMILIES if f"{f}@{k}" in model]
        lines += ["", f"### @{k}", "", *_system_table(report["metrics"], order, names)]
    plots = report.get("plots") or {}
    if "systems" in plots:
        lines += ["", f"![model and baselines]({plots['systems']})"]

    lines += ["", "## Before and after fine-tuning", ""]
    warning = below_untuned(report)
    if warning:
        lines += [f"**{warning}**", ""]
    validation = {k: v for k, v in (report.get("validation") or {}).items() if v}
    if len(validation) > 1:
        lines += [
            "Validation split (the model at its best epoch; the baselines before training):",
            "",
            *_system_table(validation, [s for s in order if s in validation], [n for n in ("recall@10", "ndcg@10") if n in model]),
            "",
        ]
    untuned = report["metrics"].get("untuned")
    if untuned:
        lines += [
            f"NDCG@10: untuned {untuned['ndcg@10']:.4f} -> tuned {model['ndcg@10']:.4f} "
            f"(best epoch {report['best_epoch']} of {report['epochs_run']}).",
            "",
            "| metric | untuned (before) | tuned (after) | delta | relative |",
            "|---|---:|---:|---:|---:|",
        ]
        lines += [_delta_row(n, untuned.get(n), model.get(n)) for n in model]
    else:
        lines.append("The untuned baseline was not run (`eval.baselines`), so there is no before/after comparison.")

    sampled = report.get("sampled")
    if sampled:
        n = sampled["negatives"]
        names = [f"{f}@{k}" for k in ks for f in ("recall", "ndcg") if f"{f}@{k}" in model]
        lines += [
            "",
            f"## Sampled-candidate evaluation ({n} sampled negatives): overstates quality",
            "",
            f"Each target ranked against {n} items drawn uniformly from those the user has not interacted with, "
            "not against the whole catalog. These numbers are higher than the full-ranking ones above and can "
            "order systems differently (docs/metrics.md); they are here for comparison with papers that use them.",
            "",
            *_system_table(sampled["metrics"], [s for s in order if s in sampled["metrics"]], names),
        ]

    cold = report.get("cold_start")
    if cold:
        lines += [
            "",
            "## Cold start",
            "",
            f"{cold['cases']:,} test users ({100 * cold.get('share', 0):.1f}%) whose target item has at most "
            f"{cold['max_train_interactions']} training interactions. An ID model knows little about such items; "
            "content models see their text and images.",
        ]
        if cold["cases"]:
            lines += ["", *_system_table(cold["metrics"], order, SLICE_METRICS)]

    history = report.get("by_history")
    if history and history.get("buckets"):
        lines += [
            "",
            "## By history length (NDCG@10)",
            "",
            "| system | " + " | ".join(f"{b} ({n:,})" for b, n in zip(history["buckets"], history["cases"])) + " |",
            "|---|" + "---:|" * len(history["buckets"]),
        ]
        for system in order:
            per = history["metrics"].get(system, {})
            lines.append(f"| {system} | " + " | ".join(_fmt(per.get(b, {}).get("ndcg@10")) for b in history["buckets"]) + " |")
        lines.append("")
        lines.append("Columns: items in the user's history (users in the bucket).")
        if "history_length" in plots:
            lines += ["", f"![NDCG@10 by history length]({plots['history_length']})"]

    lines += _domain_section(report, order)

    objective = report.get("objective_metrics")
    if objective:
        lines += ["", "## Objective metrics (test)", "", "| metric | value |", "|---|---:|"]
        rows = flat_keys(objective).items()  # nested per task of a multitask objective
        lines += [f"| {name} | {value:.4f} |" if isinstance(value, float) else f"| {name} | {value} |" for name, value in rows]

    lines += ["", "## Training", ""]
    if "training" in plots:
        lines += [f"![training and validation curves]({plots['training']})", ""]
    details = (report.get("baseline_details") or {}).get("ids")
    if details:
        lines.append(
            f"- ID baseline: {details['parameters']:,} parameters (dim {details['dim']}), best epoch {details['best_epoch']} "
            f"of {details['epochs_run']}, {details['steps']} steps, {details['train_seconds']:.0f} s"
        )
    p = report["params"]
    lines += [
        f"- model: best epoch {report['best_epoch']} of {report['epochs_run']} ({report['steps']} steps"
        f"{', stopped early' if report.get('stopped_early') else ''})",
        "",
        "## Cost",
        "",
        f"- trainable parameters: {p['trainable']:,} of {p['total']:,} ({100 * p['share']:.2f}%)",
        f"- adapter weights on disk: {human_bytes(report['adapter_bytes'])} "
        f"({100 * report['adapter_bytes'] / max(1, report['backbone_bytes']):.2f}% of the backbone's {human_bytes(report['backbone_bytes'])})",
        f"- training time: {report['train_seconds']:.0f} s ({report['steps']} steps); whole run {report['total_seconds']:.0f} s",
        "",
    ]
    return "\n".join(lines)


def _domain_section(report: dict[str, Any], order: Sequence[str]) -> list[str]:
    """The domain's extra metrics (finance: suitability, docs/report-schema.md), one row per system."""
    extra = report.get("domain_metrics") or {}
    if not extra:
        return []
    names = list(dict.fromkeys(n for values in extra.values() for n in values))
    lines = ["", f"## {report['domain']} metrics", ""]
    if any(n.startswith("over_risk@") for n in names):
        first = next(iter(extra.values()))
        lines += [
            f"Suitability: `over_risk@K` is the share of top-K recommendations whose risk level is above the "
            f"customer's risk profile, over the {first.get('profiled_cases', 0):,} test customers with a known profile "
            f"(lower is safer). `held_out_over_risk`: the same share among the assets those customers actually bought next.",
            "",
        ]
    shown = [n for n in names if n != "profiled_cases"]
    return lines + _system_table(extra, [s for s in order if s in extra], shown)


def print_summary(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{report['name']}: test metrics ({report['data']['users']:,} users, {report['data']['items']:,} items)")
    table.add_column("system")
    for name in HEADLINE:
        table.add_column(name.replace("recall", "Recall").replace("ndcg", "NDCG").replace("mrr", "MRR"), justify="right")
    cold = report.get("cold_start") or {}
    if cold.get("cases"):
        table.add_column(f"cold NDCG@10 ({cold['cases']:,})", justify="right")
    for system in systems(report):
        values = report["metrics"][system]
        row = [_fmt(values.get(n)) for n in HEADLINE]
        if cold.get("cases"):
            row.append(_fmt(cold["metrics"].get(system, {}).get("ndcg@10")))
        table.add_row(system, *row)
    console = Console()
    console.print(table)
    console.print(f"protocol: {protocol_line(report)}")
    warning = below_untuned(report)
    if warning:
        console.print(f"[bold red]{warning}[/]")
    p = report["params"]
    console.print(
        f"trainable parameters: {p['trainable']:,} / {p['total']:,} ({100 * p['share']:.2f}%)   "
        f"adapter on disk: {human_bytes(report['adapter_bytes'])} "
        f"({100 * report['adapter_bytes'] / max(1, report['backbone_bytes']):.2f}% of the backbone)   "
        f"train time: {report['train_seconds']:.0f} s"
    )
    extra = report.get("domain_metrics") or {}
    if any("over_risk@10" in v for v in extra.values()):
        console.print("over-risk share of top-10 (suitability, lower is safer): " + "   ".join(
            f"{system} {_fmt(extra[system].get('over_risk@10'))}" for system in systems(report) if system in extra
        ))
    if report.get("adapter_dir"):
        console.print(f"adapter package: {report['adapter_dir']}   report: {report['run_dir']}/report.md")


# -- several runs ------------------------------------------------------------------------------------------------


def load_run(run_dir: Path) -> dict[str, Any]:
    """A run directory's report.json, checked for what a comparison reads."""
    run_dir = Path(run_dir)
    path = run_dir / "report.json"
    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: {'is a file, not a run directory' if run_dir.exists() else 'no such run directory'}.")
    if not path.is_file():
        raise DataError(f"{run_dir}: no report.json; is this a finished run directory (crossrec-peft recipe/train writes one)?")
    try:
        report = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc}).") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc}).") from None
    metrics = report.get("metrics") if isinstance(report, dict) else None
    if not isinstance(metrics, dict) or not isinstance(metrics.get("model"), dict):
        raise DataError(f"{path}: field 'metrics.model' is missing; not a crossrec-peft run report.")
    for system, values in metrics.items():
        if not isinstance(values, dict) or not all(_is_number(v) for v in values.values()):
            raise DataError(f"{path}: field 'metrics.{system}' must map metric names to numbers, not {_short_json(values)}.")
    # The run's label in the comparison table, where a list or a number would show as its Python form (['a']).
    name = report.get("name")
    if name is not None and not isinstance(name, str):
        raise DataError(
            f"{path}: field 'name' must be a text (the run's name), not {_json_kind(name)} {_short_json(name)}; this "
            "report.json was edited or not written by crossrec-peft."
        )
    _check_cold_start(path, report.get("cold_start"))
    return report


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)  # JSON true is no metric value


def _json_kind(value: Any) -> str:
    kinds = {bool: "a boolean", int: "a number", float: "a number", str: "a text", list: "a list", dict: "an object"}
    return kinds.get(type(value), type(value).__name__)


def _check_cold_start(path: Path, cold: Any) -> None:
    """The optional 'cold_start' section, as the comparison table reads it: an object whose 'metrics' (when
    present) maps system names to {metric: number}. Anything else is a DataError naming the file and field."""
    if cold is None:
        return
    if not isinstance(cold, dict):
        raise DataError(
            f"{path}: field 'cold_start' must be an object (with 'cases' and 'metrics'), not {_json_kind(cold)} "
            f"{_short_json(cold)}; this report.json was edited or not written by crossrec-peft."
        )
    metrics = cold.get("metrics")
    if metrics is None:
        return
    if not isinstance(metrics, dict):
        raise DataError(
            f"{path}: field 'cold_start.metrics' must map system names to metrics, not {_json_kind(metrics)} "
            f"{_short_json(metrics)}; this report.json was edited or not written by crossrec-peft."
        )
    for system, values in metrics.items():
        if not isinstance(values, dict) or not all(_is_number(v) for v in values.values()):
            raise DataError(
                f"{path}: field 'cold_start.metrics.{system}' must map metric names to numbers, not "
                f"{_short_json(values)}; this report.json was edited or not written by crossrec-peft."
            )


def _short_json(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def comparison_rows(reports: Sequence[dict[str, Any]], labels: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """Columns and rows of the side-by-side table: one row per run and system (model, then baselines)."""
    columns = ["run", "system", *HEADLINE, "cold NDCG@10"]
    rows = []
    for label, report in zip(labels, reports):
        cold = (report.get("cold_start") or {}).get("metrics", {})
        for system in systems(report):
            values = report["metrics"][system]
            rows.append([label, system, *(_fmt(values.get(n)) for n in HEADLINE), _fmt(cold.get(system, {}).get("ndcg@10"))])
    return columns, rows


def run_labels(run_dirs: Sequence[Path], reports: Sequence[dict[str, Any]]) -> list[str]:
    """Run names, made unique with the directory name where two runs share one."""
    names = [r.get("name") or Path(d).name for d, r in zip(run_dirs, reports)]  # load_run: a text or null
    labels = [n if names.count(n) == 1 else f"{n} ({Path(d).name})" for n, d in zip(names, run_dirs)]
    return [f"{label} #{i + 1}" if labels.count(label) > 1 else label for i, label in enumerate(labels)]
