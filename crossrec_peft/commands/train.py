"""`crossrec-peft train FILE.yaml [key=value ...]`: run a recipe file of the user's own."""

from __future__ import annotations

from .run_config import add_run_options, run_config

NAME = "train"
HELP = "run a recipe file"
OVERRIDES = "overrides"


def add_arguments(parser) -> None:
    parser.add_argument("config", help="a YAML recipe file")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, dotted (train.epochs=1)")
    add_run_options(parser)


def run(args) -> None:
    run_config(args.config, args.overrides, args.out, args.quiet, None, resume=args.resume)
