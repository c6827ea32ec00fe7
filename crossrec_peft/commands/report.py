"""`crossrec-peft report RUN_DIR [RUN_DIR ...] [--plot FILE]`: several runs side by side.

Prints one table (each run's model and baselines: Recall/NDCG/MRR@10 and cold-start NDCG@10) and writes a
bar chart of the runs' model metrics (default: runs-comparison.png in the current directory).
"""

from __future__ import annotations

from pathlib import Path

NAME = "report"
HELP = "compare the reports of several runs side by side"


def add_arguments(parser) -> None:
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (each holds a report.json)")
    parser.add_argument("--plot", default="runs-comparison.png", help="where to write the comparison plot (PNG)")
    parser.add_argument("--no-plot", action="store_true", help="print the table only")


def run(args) -> None:
    from rich.console import Console
    from rich.table import Table

    from ..plots import plot_runs
    from ..report import HEADLINE, comparison_rows, load_run, run_labels

    from .argtypes import check_plot_path

    # Before anything is printed: a refused --plot leaves no half output.
    plot = None if args.no_plot else check_plot_path("--plot", args.plot)
    run_dirs = [Path(d) for d in args.run_dirs]
    reports = [load_run(d) for d in run_dirs]
    labels = run_labels(run_dirs, reports)
    columns, rows = comparison_rows(reports, labels)
    table = Table(title=f"{len(reports)} run(s), test metrics (full ranking)")
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i < 2 else "right")
    for row in rows:
        table.add_row(*row)
    console = Console()
    console.print(table)
    if plot is None:
        return
    plot_runs({label: r["metrics"]["model"] for label, r in zip(labels, reports)}, list(HEADLINE), plot)
    console.print(f"comparison plot: {plot}")
