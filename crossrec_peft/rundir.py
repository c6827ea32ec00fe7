"""A run directory's life: refused when it holds a finished run, written only once the run really starts.

A run writes `config.yaml`, `metrics.jsonl`, `checkpoints/`, `adapter/` and `report.json` into its directory.
Nothing there may change before the inputs (config, data, images, model, init_from package) have been
loaded and checked: a run that fails on a typo must leave the directory, and any finished run in it, as it
was. So `check_run_dir` runs first (before anything is loaded) and only refuses; `start_run_dir` runs at the
point the run starts (after every check) and is the first write.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from .errors import ConfigError

REPORT = "report.json"


def check_run_dir(run_dir: Path, *, resume: bool) -> None:
    """Refuse a directory that is not a directory, or that holds a finished run (its report.json) unless the
    run resumes it: a new run there would overwrite that run's record and adapter."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"Run directory '{run_dir}' is a file, not a directory: choose another --out DIR.")
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
