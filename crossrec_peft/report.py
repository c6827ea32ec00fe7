"""Run reports: report.json (schema in docs/report-schema.md), report.md and the closing console table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SYSTEMS = ("model", "untuned", "popularity")
HEADLINE = ("recall@10", "ndcg@10", "mrr@10")


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def write_report(run_dir: Path, report: dict[str, Any]) -> None:
    (run_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (run_dir / "report.md").write_text(markdown(report))


def markdown(report: dict[str, Any]) -> str:
    ks = sorted({int(k.split("@")[1]) for k in report["metrics"]["model"]})
    names = [f"{m}@{k}" for k in ks for m in ("recall", "ndcg", "mrr")]
    lines = [
        f"# Run `{report['name']}` ({report['domain']})",
        "",
        f"Test split, full ranking over {report['data']['items']:,} items for {report['data']['users']:,} users "
        "(leave-one-out; history items excluded). `untuned` scores with the pretrained backbones' zero-shot "
        "embeddings (before training; towers trained from scratch left out); `popularity` ranks by training interactions.",
        "",
        "| system | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for system in SYSTEMS:
        values = report["metrics"][system]
        lines.append(f"| {system} | " + " | ".join(f"{values[n]:.4f}" for n in names) + " |")
    p = report["params"]
    lines += [
        "",
        "## Before and after fine-tuning",
        "",
        f"NDCG@10: untuned {report['metrics']['untuned']['ndcg@10']:.4f} -> tuned {report['metrics']['model']['ndcg@10']:.4f} "
        f"(best epoch {report['best_epoch']} of {report['epochs_run']}).",
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


def print_summary(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{report['name']}: test metrics ({report['data']['users']:,} users, {report['data']['items']:,} items)")
    table.add_column("system")
    for name in HEADLINE:
        table.add_column(name.replace("recall", "Recall").replace("ndcg", "NDCG").replace("mrr", "MRR"), justify="right")
    for system in SYSTEMS:
        values = report["metrics"][system]
        table.add_row(system, *(f"{values[n]:.4f}" for n in HEADLINE))
    console = Console()
    console.print(table)
    p = report["params"]
    console.print(
        f"trainable parameters: {p['trainable']:,} / {p['total']:,} ({100 * p['share']:.2f}%)   "
        f"adapter on disk: {human_bytes(report['adapter_bytes'])} "
        f"({100 * report['adapter_bytes'] / max(1, report['backbone_bytes']):.2f}% of the backbone)   "
        f"train time: {report['train_seconds']:.0f} s"
    )
    if report.get("adapter_dir"):
        console.print(f"adapter package: {report['adapter_dir']}   report: {report['run_dir']}/report.md")
