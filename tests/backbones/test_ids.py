"""The `ids` backbone as a modality beside content: `min_item_interactions` gives an ID vector only to items
training can learn one for, the others are scored by their content alone, and a saved package knows which
items those are without the training counts."""

from __future__ import annotations

import json

import pytest
import torch

from crossrec_peft.backbones.base import FeatureContext
from crossrec_peft.backbones.ids import IdsBackbone, IdsBackboneOptions
from crossrec_peft.errors import DataError


def featurize(backbone: IdsBackbone, n: int, counts=None) -> dict:
    return backbone.featurize([], FeatureContext(item_ids=[f"i{k}" for k in range(n)], train_counts=counts))


@pytest.mark.parametrize(
    "minimum, counts, known",
    [
        (1, [0, 1, 2, 0, 5], [False, True, True, False, True]),
        (3, [0, 1, 2, 3, 5], [False, False, False, True, True]),
        (2, [2, 2, 2], [True, True, True]),
    ],
)
def test_items_below_the_minimum_lack_the_modality_and_their_rows_are_zero(minimum, counts, known):
    backbone = IdsBackbone(IdsBackboneOptions(dim=4, min_item_interactions=minimum))
    features = featurize(backbone, len(counts), counts)
    assert features["present"].tolist() == known
    rows_set = backbone.embedding.weight.ne(0).any(dim=1).tolist()
    assert rows_set == known
    # Collation carries the flags with the rows it picks.
    picked = IdsBackbone.collate(features, torch.tensor([len(counts) - 1, 0]))
    assert picked["present"].tolist() == [known[-1], known[0]]


def test_without_counts_the_table_itself_says_which_items_are_known():
    """A loaded model has no training counts: the zero rows a run left are its unknown items."""
    trained = IdsBackbone(IdsBackboneOptions(dim=4, min_item_interactions=2))
    featurize(trained, 5, [3, 0, 2, 1, 4])
    loaded = IdsBackbone(IdsBackboneOptions(dim=4, num_items=5, min_item_interactions=2))
    loaded.load_state_dict(trained.state_dict())
    assert featurize(loaded, 5)["present"].tolist() == [True, False, True, False, True]


def test_the_id_baseline_gives_every_item_a_vector():
    backbone = IdsBackbone(IdsBackboneOptions(dim=4))
    features = featurize(backbone, 3, [0, 0, 1])
    assert "present" not in features
    assert bool(backbone.embedding.weight.ne(0).any(dim=1).all())


@pytest.mark.parametrize(
    "options, problem",
    [(IdsBackboneOptions(min_item_interactions=-1), "min_item_interactions must be 0 or more"), (IdsBackboneOptions(dim=0), "dim must be positive")],
)
def test_bad_options_are_named(options, problem):
    assert problem in options.check()


def test_counts_for_another_catalog_are_refused():
    backbone = IdsBackbone(IdsBackboneOptions(dim=4, num_items=3, min_item_interactions=1))
    with pytest.raises(DataError, match="2 training counts for a catalog of 3 items"):
        featurize(backbone, 3, [1, 1])


def test_a_content_and_id_model_keeps_ids_to_trained_items_through_export_and_load(tiny_bert, tmp_path):
    """End to end: the run gives IDs to items with enough training interactions, the package holds zero rows
    for the rest, and `load_package` rebuilds the same presence from the table alone."""
    from crossrec_peft.package import load_package

    from ..test_recipe_amazon import run_tiny_amazon

    data, out = run_tiny_amazon(
        tiny_bert, tmp_path,
        "model.modalities.ids={fields: [item_id], backbone: {name: ids, dim: 8, min_item_interactions: 2}, method: {name: full}}",
        "model.fusion={name: sum, missing: mask}", "eval.baselines=[untuned]",
    )
    report = json.loads((out / "report.json").read_text())
    model, _ = load_package(out / "adapter")
    table = model.modalities["ids"].backbone.embedding.weight
    known = table.ne(0).any(dim=1)
    # The catalog's training counts, from the same split the run made.
    from crossrec_peft import recipes
    from crossrec_peft.config import load_config
    from crossrec_peft.data.source import load_data
    from crossrec_peft.data.split import make_split

    cfg = load_config(recipes.path("amazon"), [f"data.path={data}"], name="amazon")
    split = make_split(load_data(cfg), cfg.data)
    counts = torch.as_tensor(split.train_item_counts(report["data"]["items"]))
    assert 0 < int(known.sum()) < len(known)
    assert known.tolist() == (counts >= 2).tolist()
    assert featurize(model.modalities["ids"].backbone, len(known))["present"].tolist() == known.tolist()
    # ...and serves: Recommender sizes the table from the package as load_package does.
    from crossrec_peft.recommender import Recommender

    top = Recommender.from_pretrained(out / "adapter", data=data).recommend(["B00000", "B00003"], k=5)
    assert len(top) == 5 and not {"B00000", "B00003"} & {item for item, _ in top}


def test_continued_tuning_revives_newly_known_items_and_zeroes_newly_unknown_ones():
    """A parent's table loaded into a run whose counts differ: a zero row the run wants would normalise to
    zero with an unbounded gradient, so it gets a fresh vector; a row the run does not want is zeroed."""
    run = IdsBackbone(IdsBackboneOptions(dim=4, min_item_interactions=1))
    featurize(run, 3, [1, 1, 0])
    parent = torch.tensor([[0.0] * 4, [0.5] * 4, [0.3] * 4])  # item 0 unknown to the parent, item 2 known to it
    with torch.no_grad():
        run.embedding.weight.copy_(parent)
    run.weights_loaded()
    rows = run.embedding.weight
    assert bool(rows[0].ne(0).any()) and torch.equal(rows[1], parent[1]) and not bool(rows[2].ne(0).any())


def test_ids_is_a_catalog_table():
    """The package loader sizes and reconciles backbones through this contract, not by their name."""
    from crossrec_peft.backbones.base import CatalogTable

    assert isinstance(IdsBackbone(IdsBackboneOptions()), CatalogTable)
