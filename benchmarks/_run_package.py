"""A finished recipe run's package loaded back with its data and layer cache, for benchmarks that rank with it.

Nothing trains and nothing is written into the run directory: the recipe's data, model and cache are built
as the run built them (its config.yaml), the adapter is loaded from the package, and the catalog encoded once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from crossrec_peft.config import load_config
from crossrec_peft.evaluation import encode_zero_shot, model_scorer
from crossrec_peft.package import MANIFEST, init_from_package
from crossrec_peft.recipe_class import Recipe
from crossrec_peft.train import make_accelerator


@dataclass
class LoadedRun:
    run: Path
    cfg: object
    recipe: Recipe
    base: object  # the model's scorer (histories -> [cases, items])
    vectors: torch.Tensor  # the model's item vectors of the catalog's rows (what borrowing compares)

    @property
    def split(self):
        return self.recipe.split

    @property
    def item_ids(self) -> list:
        return list(self.recipe.data.item_ids)

    @property
    def hybrid_record(self) -> dict:
        """What the run chose for the hybrid (the package manifest's `hybrid`: weight, borrowing, decay)."""
        manifest = json.loads((self.run / "adapter" / MANIFEST).read_text())
        if not manifest.get("hybrid"):
            raise SystemExit(f"{self.run}: the run's package has no hybrid (hybrid.enabled was off)")
        return manifest["hybrid"]

    def untuned_vectors(self) -> torch.Tensor:
        """The untuned backbone's item vectors of the catalog's rows: a fresh model of the run's config, whose
        methods are all still the identity (evaluation.encode_zero_shot)."""
        fresh = _built(self.cfg, self.run)
        return encode_zero_shot(fresh.model, fresh.features, fresh.num_items, self.cfg.train.eval_batch_size, progress=False)


def _built(cfg, run: Path) -> Recipe:
    """The run's data and an untrained model, built as the run built them."""
    recipe = Recipe(cfg, run / "unused", progress=False)  # setup() is never called: "unused" is never made
    recipe.accelerator = make_accelerator(cfg)
    recipe.setup_data()
    recipe.setup_model()
    return recipe


def load_run(run: Path) -> LoadedRun:
    cfg = load_config(run / "config.yaml")
    recipe = _built(cfg, run)
    init_from_package(recipe.model, run / "adapter", cfg)
    recipe.model.eval()
    content = recipe.encode(recipe.model, "encode items")
    base = model_scorer(recipe.model, content, cfg.model.max_history)
    with torch.no_grad():
        vectors = recipe.model.item_vectors(content).float().cpu()
    return LoadedRun(run, cfg, recipe, base, vectors)
