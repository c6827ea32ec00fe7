"""One module per `crossrec-peft` subcommand.

Each module defines NAME, HELP, `add_arguments(parser)` and `run(args)`; a module whose command takes
`key=value` overrides names the argument that collects them in OVERRIDES (overrides may then also come
after options). Adding a command is one module and one line in COMMANDS.
"""

from __future__ import annotations

from . import cache, data, index, ls, push, recipe, recommend, report, serve, sweep, train

COMMANDS = [recipe, train, sweep, ls, data, report, push, recommend, index, cache, serve]
