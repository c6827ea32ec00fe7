"""`crossrec-peft sweep RECIPE [key=value ...] --trials N [--timeout MIN]`: search the recipe's `sweep.space`
with Optuna (TPE, median pruning on the per-epoch validation metric), judged on the validation split only.

RECIPE is a built-in recipe name or a YAML file. The study is stored in SQLite in the sweep directory
(default runs/<name>-sweep), so running the same command again continues it up to N finished trials.
"""

from __future__ import annotations

from .argtypes import positive_float, positive_int

from pathlib import Path

NAME = "sweep"
HELP = "search a recipe's declared space on the validation split (Optuna)"
OVERRIDES = "overrides"


def add_arguments(parser) -> None:
    parser.add_argument("recipe", help="a built-in recipe name or a YAML recipe file")
    parser.add_argument("overrides", nargs="*", help="key=value overrides applied to every trial")
    parser.add_argument("--trials", type=positive_int, default=20, help="finished trials (complete or pruned) the study should hold (default 20)")
    parser.add_argument("--timeout", type=positive_float, metavar="MIN", help="stop starting trials after this many minutes")
    parser.add_argument("--out", help="sweep directory (default: runs/<name>-sweep)")
    parser.add_argument("--quiet", action="store_true", help="no per-trial lines")


def run(args) -> None:
    from .. import recipes
    from ..config import load_config
    from ..sweep import print_summary, run_sweep

    as_file = Path(args.recipe)
    if as_file.suffix in (".yaml", ".yml") or as_file.is_file():
        source, name = as_file, None
    else:
        source, name = recipes.path(args.recipe), args.recipe
    if args.out:
        out = Path(args.out)
    else:
        out = Path("runs") / f"{load_config(source, args.overrides, name=name).name}-sweep"
    summary = run_sweep(source, args.overrides, out, trials=args.trials, timeout_minutes=args.timeout, name=name, progress=not args.quiet)
    print_summary(summary)
    print(f"study: {out / 'study.db'}   trials: {out}/trial-NNN   summary: {out / 'sweep.json'}")
