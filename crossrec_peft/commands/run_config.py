"""Running a recipe (built-in or a file): shared by `recipe NAME` and `train FILE`."""

from __future__ import annotations

from pathlib import Path


def add_run_options(parser) -> None:
    parser.add_argument("--out", help="run directory (default: runs/<name>)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument(
        "--resume", metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its latest checkpoint (same as --out RUN_DIR train.resume=true)",
    )


def run_config(config_source, overrides: list[str], out: str | None, quiet: bool, name: str | None, resume: str | None = None) -> None:
    from ..config import load_config
    from ..errors import ConfigError
    from ..pipeline import run

    if resume is not None:
        if out is not None and Path(out).resolve() != Path(resume).resolve():
            raise ConfigError(f"--resume {resume} continues that run directory; --out {out} names another. Give one of them.")
        if not Path(resume).is_dir():
            raise ConfigError(f"--resume {resume}: no such run directory.")
        out, overrides = resume, [*overrides, "train.resume=true"]
    cfg = load_config(config_source, overrides, name=name)
    run(cfg, Path(out) if out else Path("runs") / cfg.name, progress=not quiet)
