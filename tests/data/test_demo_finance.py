"""The finance demo: deterministic, FAR-Trans files imported by the far-trans importer (the real data's path),
and the latent structure it promises (docs/demo-data.md) really is in the histories."""

from __future__ import annotations

import csv
import hashlib
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from crossrec_peft.cli import main
from crossrec_peft.data import load_layout
from crossrec_peft.data.demo import finance
from crossrec_peft.data.importers import import_dataset
from crossrec_peft.data.importers.fartrans import ASSET_COLUMNS, CUSTOMER_COLUMNS, TRANSACTION_COLUMNS
from crossrec_peft.suitability import risk_rank


def tables(directory):
    return {name: pq.read_table(directory / f"{name}.parquet").to_pylist() for name in ("items", "interactions", "users")}


def digest(paths):
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(paths)]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("finance") / "demo"
    finance.generate(out, num_items=400, num_users=600, seed=0)
    return out


def test_deterministic(demo, tmp_path):
    finance.generate(tmp_path / "again", num_items=400, num_users=600, seed=0)
    assert tables(tmp_path / "again") == tables(demo)
    assert digest((tmp_path / "again" / "images").glob("*.png")) == digest((demo / "images").glob("*.png"))
    finance.write_far_trans(tmp_path / "other", num_items=400, num_users=600, seed=1)
    assert (tmp_path / "other" / "transactions.csv").read_bytes() != (demo / "far-trans" / "transactions.csv").read_bytes()


def test_far_trans_files_import_like_the_real_dataset(demo, tmp_path):
    raw = demo / "far-trans"
    for name, columns in (("asset_information", ASSET_COLUMNS), ("customer_information", CUSTOMER_COLUMNS),
                          ("transactions", TRANSACTION_COLUMNS)):
        header = next(csv.reader((raw / f"{name}.csv").open(encoding="utf-8")))
        assert set(columns) <= set(header), name
    report = json.loads((demo / "import_report.json").read_text())
    assert report["files"]["items"] == str(raw / "asset_information.csv")
    # The bank's quirks are in the demo too: superseded rows, Sells, customers without purchases.
    assert report["dropped"]["items"]["superseded"] > 0 and report["dropped"]["users"]["superseded"] > 0
    assert report["dropped"]["interactions"]["sell"] > 0 and report["dropped"]["users"]["no_interactions"] > 0
    # Importing the files again gives the demo catalog: the demo is exactly an imported FAR-Trans.
    import_dataset("far-trans", raw, tmp_path / "reimported")
    assert tables(tmp_path / "reimported") == tables(demo)
    data = load_layout(demo, ["description", "image"])
    assert len(data.item_ids) == 400 and len(data.user_ids) == 600
    levels = [r["risk_level"] for r in tables(demo)["users"]]
    assert None in levels and {"Conservative", "Income", "Balanced", "Aggressive"} <= set(levels)
    assert any(r["risk_level_predicted"] for r in tables(demo)["users"])


def _latents(demo):
    items = tables(demo)["items"]
    index = {r["item_id"]: i for i, r in enumerate(items)}
    data = load_layout(demo, ["description"])
    users = {r["user_id"]: r for r in tables(demo)["users"]}
    risk = np.array([r["risk_level"] for r in items])
    prices: dict[str, list[float]] = {}
    for row in csv.DictReader((demo / "far-trans" / "close_prices.csv").open(encoding="utf-8")):
        prices.setdefault(row["ISIN"], []).append(float(row["closePrice"]))
    change = np.array([prices[r["item_id"]][-1] / prices[r["item_id"]][0] for r in items])
    return items, index, data, users, risk, change


def _agreement(labels: np.ndarray, sequences, rng) -> tuple[float, float]:
    """Share of item pairs within a history (items with a label >= 0) that have the same label, and the same
    with the labels shuffled over the items."""
    def share(lab):
        same = total = 0
        for s in sequences:
            values = lab[s][lab[s] >= 0]
            counts = np.bincount(values) if len(values) else np.zeros(1)
            same += float((counts * (counts - 1)).sum())
            total += len(values) * (len(values) - 1)
        return same / total
    return share(labels), share(rng.permutation(labels))


def test_latent_structure(demo):
    items, index, data, users, risk, change = _latents(demo)
    profile = np.array([risk_rank(users[u]["risk_level"]) for u in data.user_ids])
    # Riskier profiles buy riskier assets, and few purchases exceed the profile (far fewer than at random).
    mean_risk = [np.mean(np.concatenate([risk[s] for s, p in zip(data.sequences, profile) if p == level])) for level in (1, 2, 3, 4)]
    assert all(a < b for a, b in zip(mean_risk, mean_risk[1:])), mean_risk
    known = np.isfinite(profile)
    over = np.mean(np.concatenate([risk[s] > p for s, p in zip(data.sequences, profile) if np.isfinite(p)]))
    at_random = np.mean([np.mean(risk > p) for p in profile[known]])
    assert over < 0.2 and over < at_random / 2
    rng = np.random.default_rng(0)
    # Sector taste: histories concentrate on a sector far more than if sectors were shuffled over assets.
    # (The sector of a stock is its `sector`, of a corporate bond its `industry`; others are left out.)
    names = sorted(finance.SECTORS)
    sector = np.array([
        names.index(r["sector"]) if r["category"] == "Stock" else names.index(r["industry"]) if r["sector"] == "Corporate" else -1
        for r in items
    ])
    real, shuffled = _agreement(sector, data.sequences, rng)
    assert real > 1.5 * shuffled, (real, shuffled)
    # Trend (only in the factsheet image): the same, for rising / flat / falling prices.
    trend = np.digitize(change, [0.995, 1.005])  # the year's change is exactly the trend's (finance._prices)
    real, shuffled = _agreement(trend, data.sequences, rng)
    assert real > 1.2 * shuffled, (real, shuffled)
    # Fees: the expensive fund tier is bought less than its share of the catalog.
    funds = np.array([r["category"] == "MTF" for r in items])
    premium = np.array(["Premium Active" in r["title"] for r in items])
    bought = np.concatenate(data.sequences)
    assert premium[bought][funds[bought]].mean() < premium[funds].mean() - 0.05


def test_recipe_through_the_cli_at_tiny_size(tmp_path, monkeypatch):
    monkeypatch.setenv("CROSSREC_PEFT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    code = main([
        "recipe", "finance", "data.num_items=120", "data.num_users=150", "train.epochs=1", "train.batch_size=64",
        "eval.baselines=[untuned,popularity]", "model.modalities.text.backbone.max_length=24", "--out", str(out), "--quiet",
    ])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    suit = report["domain_metrics"]
    assert set(suit) == {"model", "untuned", "popularity"}
    for values in suit.values():
        assert 0.0 <= values["over_risk@10"] <= 1.0 and values["profiled_cases"] > 100
    assert "over_risk@10" in (out / "report.md").read_text()
