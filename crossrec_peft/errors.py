"""User-facing errors.

Everything the user can get wrong (a name, a config value, a data file) raises `CrossrecError`; the CLI prints
its message as one paragraph and exits with code 2, without a traceback. Any other exception is a bug in
crossrec-peft or a library, and the CLI says so.
"""

from __future__ import annotations

import difflib
from typing import Iterable


class CrossrecError(Exception):
    """An error caused by the user's input, with a message meant to be read by that user."""

    exit_code = 2


class ConfigError(CrossrecError):
    """A recipe or config value is unknown, of the wrong type, or inconsistent."""


class DataError(CrossrecError):
    """A data file is missing, malformed, or inconsistent with the others."""


class PackageError(CrossrecError):
    """An adapter package is missing files, was tampered with, or does not fit the backbone."""


class CheckpointError(CrossrecError):
    """A checkpoint is missing, corrupt, or was written by a run that this one cannot continue (checkpoint.py)."""


class OutputError(CrossrecError):
    """An output path cannot be written: under a file, without permission, a name the file system refuses."""


def named(values: Iterable[object], limit: int = 10) -> str:
    """The distinct `values`, quoted, in order of first appearance: the first `limit` of them, then how many
    more ("'a', 'b' and 3 more"), so that a message listing bad ids stays one readable line."""
    names = list(dict.fromkeys(str(v) for v in values))
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def closest(name: str, choices: Iterable[str]) -> str | None:
    """The most similar of `choices` to `name`, or None when nothing is reasonably close."""
    found = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return found[0] if found else None


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' Did you mean 'x'?' or an empty string."""
    match = closest(name, choices)
    return f" Did you mean '{match}'?" if match else ""
