"""A run directory's life: refused when it holds a finished run, written only once the run really starts.

A run writes `config.yaml`, `metrics.jsonl`, `checkpoints/`, `adapter/` and `report.json` into its directory.
Nothing there may change before the inputs (config, data, images, model, init_from package) have been
loaded and checked: a run that fails on a typo must leave the directory, and any finished run in it, as it
was. So `check_run_dir` runs first (before anything is loaded) and only refuses; `start_run_dir` runs at the
point the run starts (after every check) and is the first write. A directory that holds anything but an
earlier run is refused too: the run's config.yaml and metrics.jsonl would overwrite files of the same names.

A run is finished when its report.json is there: the report is the run's last write (after the adapter package),
and is written whole or not at all (report.py), so a run killed before or while writing it has none. Resuming a
finished run with the same config changes nothing (`finished_report`); with another config it is refused.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from omegaconf import DictConfig

from .errors import ConfigError, DataError
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
            "directory with --out DIR, or move it away first."
        )


def finished_report(run_dir: Path, cfg: DictConfig) -> dict | None:
    """What resuming `run_dir` with `cfg` finds: None when the run there has not finished (no report.json: the
    resume completes it), else the finished run's report, read as `crossrec-peft report` reads it. A finished
    run whose config.yaml differs from `cfg` in anything but the keys a resume may change is refused: its report
    and package answer the config it was run with, and resuming never starts another run over them."""
    run_dir = Path(run_dir)
    if not (run_dir / REPORT).is_file():
        return None
    from .checkpoint import RESUMABLE_CHANGES, changed_keys
    from .config import flat_keys, to_yaml
    from .report import load_run

    path = run_dir / CONFIG
    try:
        saved = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        saved = exc
    if not isinstance(saved, dict):
        if isinstance(saved, OSError):
            why = saved.strerror or type(saved).__name__
        else:
            why = type(saved).__name__ if isinstance(saved, Exception) else f"it holds a {type(saved).__name__}, not a run's config"
        raise ConfigError(
            f"Run directory '{run_dir}' holds a finished run ({REPORT}) but its {CONFIG} cannot be read ({why}), so "
            "whether that run is this config's cannot be told. Nothing was changed; start a new run with --out DIR."
        )
    # Both sides as config.yaml holds them (to_yaml), so that a number or a null compares as written.
    before, now = flat_keys(saved), flat_keys(yaml.safe_load(to_yaml(cfg)))
    changed = changed_keys({k: v for k, v in before.items() if k not in RESUMABLE_CHANGES},
                           {k: v for k, v in now.items() if k not in RESUMABLE_CHANGES}, "run")
    if changed:
        raise ConfigError(
            f"Run directory '{run_dir}' holds a finished run ({REPORT}) made with another configuration: {changed}. "
            f"--resume completes an interrupted run and never reruns a finished one; nothing was changed. That run's "
            f"config is {path}; to run this one, give another directory with --out DIR."
        )
    try:
        return load_run(run_dir)
    except DataError as exc:  # edited, or left half-written by a version that did not write it whole
        raise ConfigError(
            f"{exc} Resuming cannot tell whether the run in '{run_dir}' finished; nothing was changed. Move "
            f"{run_dir / REPORT} away to let --resume complete the run."
        ) from None


def start_run_dir(run_dir: Path, cfg: DictConfig) -> None:
    """The first write of a run, made once its inputs are checked: the directory, its config.yaml and a fresh
    metrics.jsonl (a resumed run's log starts again; its checkpoints are kept)."""
    from .config import to_yaml

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    (run_dir / "metrics.jsonl").unlink(missing_ok=True)
