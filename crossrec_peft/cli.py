"""The `crossrec-peft` command.

    crossrec-peft recipe ls                      list built-in recipes
    crossrec-peft recipe cp NAME DEST            copy one out for editing
    crossrec-peft recipe NAME [key=value ...]    run a built-in recipe
    crossrec-peft train FILE.yaml [key=value ...] run a recipe file of your own
    crossrec-peft ls [KIND]                      list registered components

Errors in the user's input print one paragraph and exit with code 2 (`--debug` shows the traceback).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from .errors import CrossrecError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crossrec-peft", description="Parameter-efficient fine-tuning for cross-modal recommendation.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    recipe = sub.add_parser("recipe", help="list, copy or run a built-in recipe")
    recipe.add_argument("name", help="a recipe name, or 'ls', or 'cp'")
    recipe.add_argument("args", nargs="*", help="key=value overrides (run) or NAME DEST (cp)")
    recipe.add_argument("--out", help="run directory (default: runs/<name>)")
    recipe.add_argument("--quiet", action="store_true", help="no progress output")

    train = sub.add_parser("train", help="run a recipe file")
    train.add_argument("config", help="a YAML recipe file")
    train.add_argument("overrides", nargs="*", help="key=value overrides, dotted (train.epochs=1)")
    train.add_argument("--out", help="run directory (default: runs/<name>)")
    train.add_argument("--quiet", action="store_true", help="no progress output")

    ls = sub.add_parser("ls", help="list registered backbones, methods, fusions, ...")
    ls.add_argument("kind", nargs="?", help="one kind (backbone, method, fusion, user_encoder, objective, domain)")
    return parser


def _run(config_source, overrides: list[str], out: str | None, quiet: bool, name: str | None) -> None:
    from .config import load_config
    from .pipeline import run

    cfg = load_config(config_source, overrides, name=name)
    run(cfg, Path(out) if out else Path("runs") / cfg.name, progress=not quiet)


def _recipe(args: argparse.Namespace) -> None:
    from . import recipes
    from .errors import ConfigError

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
    _run(recipes.path(args.name), args.args, args.out, args.quiet, args.name)


def _ls(kind: str | None) -> None:
    from . import registry
    from .errors import ConfigError, did_you_mean

    kinds = registry.REGISTRIES
    if kind is not None:
        key = kind[:-1] if kind.endswith("s") and kind[:-1] in kinds else kind
        if key not in kinds:
            raise ConfigError(f"Unknown kind '{kind}'.{did_you_mean(kind, kinds)} Kinds: {', '.join(kinds)}.")
        kinds = {key: kinds[key]}
    for name, reg in kinds.items():
        print(f"{name}:")
        for entry in reg.entries():
            label = f"{entry.name}:<arg>" if entry.takes_argument else entry.name
            print(f"  {label:<14} {entry.description}")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    # Overrides may come after options too (`recipe ecommerce --out DIR train.epochs=1`).
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.command in ("recipe", "train") and all("=" in e and not e.startswith("-") for e in extra):
            (args.args if args.command == "recipe" else args.overrides).extend(extra)
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        import crossrec_peft  # noqa: F401  (registers the built-ins)

        if args.command == "recipe":
            _recipe(args)
        elif args.command == "train":
            _run(args.config, args.overrides, args.out, args.quiet, None)
        elif args.command == "ls":
            _ls(args.kind)
        return 0
    except CrossrecError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        print(
            f"internal error: {type(exc).__name__}: {exc}\nThis is a bug in crossrec-peft or a library it uses; "
            "rerun with --debug for the traceback and report it.",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
