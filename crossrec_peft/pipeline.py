"""One run, end to end: the recipe class a config names (`recipe_class`, default `Recipe`) runs it.

The steps themselves (data -> model -> baselines -> training -> evaluation -> adapter package -> report) are
the methods of `crossrec_peft.recipe_class.Recipe`; `quiet_libraries` and `catalog_features` live there too
and are importable from here, as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig

from .recipe_class import Recipe, catalog_features, quiet_libraries, recipe_class

__all__ = ["Recipe", "catalog_features", "quiet_libraries", "run"]


def run(
    cfg: DictConfig,
    run_dir: str | Path,
    *,
    progress: bool = True,
    summary: bool = True,
    on_validation: Callable[[int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run `cfg` into `run_dir` and return its report. `on_validation(epoch, record)` is called after each
    epoch's validation record is logged (the sweep's pruning hook; an exception it raises stops the run). The
    class named by `recipe_class` is imported and checked before anything is loaded or written."""
    cls = recipe_class(cfg.get("recipe_class"))
    return cls(cfg, run_dir, progress=progress, summary=summary, on_validation=on_validation).run()
