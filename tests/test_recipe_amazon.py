"""The `amazon` recipe end to end at a tiny size: an Amazon-format catalog (items.tsv, users.tsv) the test writes,
imported with `data import amazon-seq`, then `recipe amazon` with the tiny BERT in place of MiniLM. It checks
what the recipe promises: the standard protocol (repeats as misses), text only through the mean fusion, sampled
uniform negatives, every baseline beside the model, and a package that loads in `Recommender`."""

from __future__ import annotations

import json
import random

import pytest
from omegaconf import OmegaConf

from crossrec_peft import recipes
from crossrec_peft.cli import main
from crossrec_peft.config import load_config
from crossrec_peft.recommender import Recommender

WORDS = ["steel", "glass", "beaker", "pipette", "motor", "gauge", "probe", "filter", "tube", "clamp", "lens", "valve"]


def amazon_catalog(directory, *, items: int = 60, users: int = 40, seed: int = 0):
    """Users who buy within one of three word families, so that titles carry the signal."""
    rng = random.Random(seed)
    directory.mkdir()
    titles = {f"B{i:05d}": " ".join(rng.sample(WORDS[(i % 3) * 4 : (i % 3) * 4 + 4], 2)) + f" model {i}" for i in range(items)}
    (directory / "items.tsv").write_text("".join(f"{k}\t{v}\n" for k, v in titles.items()), encoding="utf-8")
    ids = list(titles)
    lines = []
    for u in range(users):
        family = [k for j, k in enumerate(ids) if j % 3 == u % 3]
        lines.append(f"U{u:04d}\t" + " ".join(rng.choice(family) for _ in range(rng.randint(4, 8))))
    (directory / "users.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory


def test_recipe_declares_the_standard_protocol_and_sampled_negatives():
    cfg = load_config(recipes.path("amazon"), name="amazon")
    assert cfg.eval.repeats == "miss"
    assert list(cfg.model.modalities) == ["text"] and cfg.model.fusion.name == "mean"
    assert cfg.train.objective.num_negatives > 0 and cfg.train.objective.sampling == "uniform"


def run_tiny_amazon(tiny_bert, tmp_path, *overrides: str):
    """Import `amazon_catalog` with `data import amazon-seq` and run `recipe amazon` on it at a tiny size (the
    tiny BERT, one epoch) with `overrides` added. Returns (data directory, run directory)."""
    source = amazon_catalog(tmp_path / "src")
    data = tmp_path / "data"
    assert main(["data", "import", "amazon-seq", str(source), "--out", str(data)]) == 0
    out = tmp_path / "run"
    code = main([
        "recipe", "amazon", f"data.path={data}",
        f"model.modalities.text.backbone.name=hf:{tiny_bert}", "model.modalities.text.backbone.max_length=16",
        "model.head_rank=4", "train.epochs=1", "train.batch_size=8", "train.objective.num_negatives=16",
        *overrides, "--out", str(out), "--quiet",
    ])
    assert code == 0
    return data, out


def test_recipe_amazon_runs_end_to_end_on_an_imported_catalog(tiny_bert, tmp_path):
    data, out = run_tiny_amazon(tiny_bert, tmp_path, "eval.ids.epochs=1")
    report = json.loads((out / "report.json").read_text())
    assert report["protocol"]["repeats"] == "miss"
    assert report["data"]["items"] == 60 and report["split_detail"]["test_cases"] == 40
    assert set(report["metrics"]) == {"model", "hybrid", "untuned", "popularity", "itemknn", "ids"}
    assert set(report["validation"]) >= {"model", "hybrid", "untuned", "popularity", "itemknn"}
    # The package serves: its top 5 for a user's history holds no item of that history (masked, as evaluated).
    rec = Recommender.from_pretrained(out / "adapter", data=data)
    history = ["B00000", "B00003"]
    top = rec.recommend(history, k=5)
    assert len(top) == 5 and not set(history) & {item for item, _ in top}


@pytest.mark.parametrize("key, value", [("eval.repeats", "allow"), ("train.objective.num_negatives", 0), ("model.fusion.name", "sum")])
def test_recipe_amazon_options_can_be_overridden(key, value):
    cfg = load_config(recipes.path("amazon"), [f"{key}={value}"], name="amazon")
    assert OmegaConf.select(cfg, key) == value


def test_the_hybrid_is_chosen_on_validation_reported_and_exported(tiny_bert, tmp_path):
    """hybrid.enabled: every weight (and 0) is scored on validation, then at the best weight every borrowing
    weight (and 0), then with both every recency decay (and 1); the best is the reported system "hybrid", and
    the package carries it: the co-occurrence file exactly when the chosen weight is above 0, with the
    borrowing and decay chosen. (The tiny run chooses weight 2 and borrowing: its catalog has items never
    bought in training.)"""
    from crossrec_peft.hybrid import FILE
    from crossrec_peft.package import MANIFEST

    data, out = run_tiny_amazon(tiny_bert, tmp_path, "hybrid.enabled=true", "hybrid.weights=[0.5,2]", "eval.baselines=[itemknn]")
    report = json.loads((out / "report.json").read_text())
    grid = report["hybrid"]["validation_ndcg@10"]
    assert set(grid) == {"0", "0.5", "2"}
    chosen, picked, decay = report["hybrid"]["weight"], report["hybrid"]["borrow_weight"], report["hybrid"]["decay"]
    assert grid[f"{chosen:g}"] == max(grid.values())
    chosen_validation = grid[f"{chosen:g}"]
    if chosen > 0:  # then each borrowing weight, and 0 (the term alone), at that weight
        borrowed = report["hybrid"]["borrow_validation_ndcg@10"]
        assert set(borrowed) == {"0", "1", "2"} and borrowed["0"] == grid[f"{chosen:g}"]
        assert borrowed[f"{picked:g}"] == max(borrowed.values()) and report["hybrid"]["borrow"] == 5
        chosen_validation = borrowed[f"{picked:g}"]
        decays = report["hybrid"]["decay_validation_ndcg@10"]  # the recipe's decays: 0.8, and 1 (the plain mean)
        assert set(decays) == {"0.8", "1"} and decays["1"] == chosen_validation
        assert decays[f"{decay:g}"] == max(decays.values())
        chosen_validation = decays[f"{decay:g}"]
    else:
        assert decay == 1.0 and "decay_validation_ndcg@10" not in report["hybrid"]
    assert chosen_validation == report["validation"]["hybrid"]["ndcg@10"]
    assert grid["0"] == pytest.approx(report["validation"]["model"]["ndcg@10"], abs=1e-9)  # weight 0 is the model
    assert set(report["metrics"]) == {"model", "hybrid", "itemknn"}
    if chosen == 0:
        assert report["metrics"]["hybrid"] == report["metrics"]["model"]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    hybrid_records = [(r["weight"], r["borrow_weight"], r["decay"]) for r in records if r.get("system") == "hybrid"]
    assert hybrid_records == [(chosen, picked, decay), (chosen, picked, decay)]  # validation, test
    manifest = json.loads((out / "adapter" / MANIFEST).read_text())
    assert manifest["hybrid"]["weight"] == chosen and manifest["hybrid"]["neighbours"] == 100
    assert manifest["hybrid"]["borrow_weight"] == picked and manifest["hybrid"]["decay"] == decay
    assert (manifest["hybrid"]["file"] == FILE) == (chosen > 0) == (out / "adapter" / FILE).is_file()
    assert report["hybrid"]["bytes"] == ((out / "adapter" / FILE).stat().st_size if chosen > 0 else 0)
    rec = Recommender.from_pretrained(out / "adapter", data=data)
    assert (rec._domains[rec.domain].hybrid is not None) == (chosen > 0)
    if chosen > 0:
        assert rec._domains[rec.domain].hybrid.borrows == (picked > 0) and rec._domains[rec.domain].hybrid.decay == decay
