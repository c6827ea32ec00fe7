"""The `crossrec-peft` command.

    crossrec-peft recipe ls                      list built-in recipes
    crossrec-peft recipe cp NAME DEST            copy one out for editing
    crossrec-peft recipe NAME [key=value ...]    run a built-in recipe
    crossrec-peft train FILE.yaml [key=value ...] run a recipe file of your own
    crossrec-peft ls [KIND]                      list registered components

Each subcommand lives in its own module under crossrec_peft/commands/. Errors in the user's input print
one paragraph and exit with code 2 (`--debug` shows the traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from . import interrupts
from .commands import COMMANDS
from .errors import CrossrecError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crossrec-peft", description="Parameter-efficient fine-tuning for cross-modal recommendation.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_arguments(sub.add_parser(command.NAME, help=command.HELP, description=command.__doc__))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    # Overrides may come after options too (`recipe ecommerce --out DIR train.epochs=1`).
    args, extra = parser.parse_known_args(argv)
    command = next(c for c in COMMANDS if c.NAME == args.command)
    if extra:
        collects = getattr(command, "OVERRIDES", None)
        if collects and all("=" in e and not e.startswith("-") for e in extra):
            getattr(args, collects).extend(extra)
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        import crossrec_peft  # noqa: F401  (registers the built-ins)

        with interrupts.remembered():
            command.run(args)
        return 0
    except CrossrecError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`crossrec-peft data stats DIR --json | head`): not an error of ours. Point
        # stdout at devnull so the interpreter's final flush does not raise again (Python's documented recipe).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
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
