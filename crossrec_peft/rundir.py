"""A run directory's life: refused when it holds a finished run, written only once the run really starts.

A run writes `config.yaml`, `metrics.jsonl`, `checkpoints/`, `adapter/` and `report.json` into its directory.
Nothing there may change before the inputs (config, data, images, model, init_from package) have been
loaded and checked: a run that fails on a typo must leave the directory, and any finished run in it, as it
was. So `check_run_dir` runs first (before anything is loaded) and only refuses; `start_run_dir` runs at the
point the run starts (after every check) and is the first write. A directory that holds anything but an
earlier run is refused too: the run's config.yaml and metrics.jsonl would overwrite files of the same names.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from omegaconf import DictConfig

from .errors import ConfigError
from .fsutil import check_can_create

REPORT = "report.json"
CONFIG = "config.yaml"


def holds_a_run(run_dir: Path) -> bool:
    """Whether `run_dir` holds an earlier run, finished or not: the config.yaml a run writes first, a mapping
    with `model` and `train` sections (a file of that name that is anything else is the user's own)."""
    try:
        config = yaml.safe_load((run_dir / CONFIG).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(config, dict) and isinstance(config.get("model"), dict) and isinstance(config.get("train"), dict)


def check_run_dir(run_dir: Path, *, resume: bool) -> None:
    """Refuse a directory that is not a directory, or, unless the run resumes it: one that holds files but no
    earlier run (they could be overwritten), or a finished run (its report.json), whose record and adapter a
    new run would overwrite."""
    run_dir = Path(run_dir)
    try:
        is_file = run_dir.is_file()
    except OSError:  # a name the file system refuses: check_can_create names it
        is_file = False
    if is_file:
        raise ConfigError(f"Run directory '{run_dir}' is a file, not a directory: choose another --out DIR.")
    check_can_create(run_dir)  # under a file, or a name the file system refuses: now, not after loading everything
    # Resuming reads the directory's checkpoints (refused with their own message when there are none).
    if not resume and run_dir.is_dir() and any(run_dir.iterdir()) and not holds_a_run(run_dir):
        raise ConfigError(
            f"Run directory '{run_dir}' is not empty and holds no earlier run (no run's {CONFIG}); a run writes "
            f"{CONFIG}, metrics.jsonl, checkpoints/ and adapter/ there. Choose another directory with --out DIR, or empty it."
        )
    if not resume and (run_dir / REPORT).is_file():
        raise ConfigError(
            f"Run directory '{run_dir}' holds a finished run ({REPORT}); a new run would overwrite it. Choose another "
            f"directory with --out DIR, continue that run's training with --resume {run_dir}, or move it away first."
        )


def start_run_dir(run_dir: Path, cfg: DictConfig) -> None:
    """The first write of a run, made once its inputs are checked: the directory, its config.yaml and a fresh
    metrics.jsonl (a resumed run's log starts again; its checkpoints are kept)."""
    from .config import to_yaml

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    (run_dir / "metrics.jsonl").unlink(missing_ok=True)
