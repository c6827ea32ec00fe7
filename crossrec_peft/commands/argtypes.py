"""Argument types and output checks shared by the subcommands: numbers are checked by argparse (exit 2,
naming the option) before anything runs, and output files are checked before anything is computed or printed."""

from __future__ import annotations

import argparse
from pathlib import Path

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1 (`--batch-size 0` is refused by the parser, naming the option)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def positive_float(text: str) -> float:
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number, got '{text}'") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def split_named(spec: str) -> tuple[str | None, str]:
    """`NAME=PATH` -> (NAME, PATH); a plain path (or one that exists as written, '=' and all) -> (None, spec).
    How `recommend` and `serve` read a package argument: NAME loads it under that domain name."""
    name, sep, path = spec.partition("=")
    if not sep or Path(spec).exists() or not name or "/" in name or spec.startswith("hf://"):
        return None, spec
    return name, path


def check_plot_path(option: str, value: str | Path, *, protect: Path | None = None) -> Path:
    """A PNG file that a command may write: suffix .png, not a directory, not inside `protect` (the data
    directory: its tables and images are the user's), and, when it exists, a PNG (an earlier plot), never
    another file of the user's. ConfigError naming the option otherwise; checked before any work is done."""
    from ..errors import ConfigError

    path = Path(value).expanduser()
    if path.suffix.lower() != ".png":
        raise ConfigError(f"{option} must name a .png file, got '{path}'.")
    if path.is_dir():
        raise ConfigError(f"{option} {path}: is a directory; name a .png file.")
    if protect is not None and protect.is_dir():
        try:
            path.resolve().relative_to(protect.resolve())
            raise ConfigError(f"{option} {path}: is inside the data directory {protect}; write the plot elsewhere (files there are the data's).")
        except ValueError:
            pass
    if path.is_file():
        with open(path, "rb") as fh:
            head = fh.read(len(PNG_MAGIC))
        if head != PNG_MAGIC:
            raise ConfigError(f"{option} {path}: exists and is not a PNG image; crossrec-peft does not overwrite it. Choose another file.")
    return path
