"""`crossrec-peft recipe ls | cp NAME DEST | NAME [key=value ...]`: the built-in recipes."""

from __future__ import annotations

from .run_config import add_run_options, run_config

NAME = "recipe"
HELP = "list, copy or run a built-in recipe"
OVERRIDES = "args"


def add_arguments(parser) -> None:
    parser.add_argument("name", help="a recipe name, or 'ls', or 'cp'")
    parser.add_argument("args", nargs="*", help="key=value overrides (run) or NAME DEST (cp)")
    add_run_options(parser)


def run(args) -> None:
    from .. import recipes
    from ..errors import ConfigError

    if args.name == "ls":
        for name, description in recipes.describe():
            print(f"{name:<16} {description}")
        return
    if args.name == "cp":
        if len(args.args) != 2:
            raise ConfigError("Usage: crossrec-peft recipe cp NAME DEST")
        dest = recipes.copy(*args.args)
        print(f"copied recipe '{args.args[0]}' to {dest}; run it with: crossrec-peft train {dest}")
        return
    run_config(recipes.path(args.name), args.args, args.out, args.quiet, args.name, resume=args.resume)
