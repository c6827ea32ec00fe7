"""Running a recipe (built-in or a file): shared by `recipe NAME` and `train FILE`."""

from __future__ import annotations

from pathlib import Path


def add_run_options(parser) -> None:
    parser.add_argument("--out", help="run directory (default: runs/<name>)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def run_config(config_source, overrides: list[str], out: str | None, quiet: bool, name: str | None) -> None:
    from ..config import load_config
    from ..pipeline import run

    cfg = load_config(config_source, overrides, name=name)
    run(cfg, Path(out) if out else Path("runs") / cfg.name, progress=not quiet)
