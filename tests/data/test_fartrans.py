"""The far-trans importer on the real FAR-Trans asset and customer files (skipped when the shared copy is
absent), with a transactions.csv and close_prices.csv written here for real ISINs and customer IDs; asset
risk levels and factsheet images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from crossrec_peft.data import load_layout
from crossrec_peft.data.factsheet import RISK_COLOURS, render_factsheet
from crossrec_peft.data.importers import import_dataset
from crossrec_peft.data.importers.fartrans import asset_risk
from crossrec_peft.errors import ConfigError

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "far-trans"

TRANSACTIONS = (
    "customerID,ISIN,transactionID,transactionType,timestamp,totalValue,units,channel,marketID\n"
    # latest of three rows is the first in the file; Not_Available risk
    "72D82178F352907E8254,GRS498003003,1,Buy,2021-04-01,1000,10,Branch,XATH\n"
    "72D82178F352907E8254,GRF000022001,2,Buy,2021-04-02,500,5,Branch,AEDAK\n"
    "72D82178F352907E8254,XS1085735899,3,Buy,2021-04-03,700,1,Branch,CCLX\n"
    "72D82178F352907E8254,XS1085735899,4,Sell,2021-05-03,700,1,Branch,CCLX\n"
    # Predicted_Aggressive
    "2710967449B038181A20,GRS498003003,5,Buy,2021-04-05,100,1,Internet Banking,XATH\n"
    "2710967449B038181A20,GRF000022001,6,Buy,2021-04-06,100,1,Internet Banking,AEDAK\n"
    "2710967449B038181A20,LU0955662357,7,Buy,2021-04-07,100,1,Internet Banking,CCLX\n"
)
PRICES = "ISIN,timestamp,closePrice\n" + "".join(
    f"GRS498003003,2021-01-{d:02d},{10 + d}\n" for d in range(1, 21)
) + "NOT_IN_CATALOG,2021-01-04,1.0\n"


def need_real() -> Path:
    if not (REAL / "asset_information.csv").is_file() or not (REAL / "customer_information.csv").is_file():
        pytest.skip(f"real FAR-Trans copy not available: {REAL} is absent (see ../shared/data/README.md)")
    return REAL


def ink(path: Path) -> int:
    """Pixels of the price line (dark blue) in the chart area of a factsheet."""
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    chart = pixels[8:]
    return int(((chart[..., 2] > chart[..., 0] + 40) & (chart.sum(-1) < 450)).sum())


def test_real_assets_and_customers(tmp_path):
    real = need_real()
    src = tmp_path / "src"
    src.mkdir()
    (src / "transactions.csv").write_text(TRANSACTIONS, encoding="utf-8")
    (src / "close_prices.csv").write_text(PRICES, encoding="utf-8")
    report = import_dataset("far-trans", src, tmp_path / "out", options={
        "asset_information": str(real / "asset_information.csv"),
        "customer_information": str(real / "customer_information.csv"),
    })
    # Several rows per ISIN / customer over time: the latest is kept, the rest reported as superseded.
    assert report.read["asset_information.csv"] == 836 and report.dropped["items"]["superseded"] == 30
    assert report.read["customer_information.csv"] == 32468
    assert report.dropped["users"]["superseded"] == 32468 - 29090
    assert report.dropped["interactions"] == {"sell": 1}
    assert any("1 prices of assets not in the catalog" in n for n in report.notes)
    out = tmp_path / "out"
    items = {r["item_id"]: r for r in pq.read_table(out / "items.parquet").to_pylist()}
    epsilon = items["GRS498003003"]  # listed 2018 (ENAX), 2020-07-15 (XATH), 2020-07-07 (EBB): the middle row is latest
    assert epsilon["market_id"] == "XATH" and epsilon["risk_level"] == 4
    assert epsilon["description"] == "EPSILON NET S.A. (CR). Stock. Sector: Technology. Industry: Software - Application."
    money = items["GRF000022001"]  # empty sector and industry are left out of the text
    assert money["description"] == "ΔΗΛΟΣ ΒΡΑΧΥΠΡΟΘΕΣΜΩΝ & ΜΕΣΟΠΡΟΘΕΣΜΩΝ ΕΠΕΝΔΥΣΕΩΝ-ΟΜ. MTF, Money Market."
    assert money["sector"] is None or money["sector"] == ""
    assert money["risk_level"] == 1 and items["XS1085735899"]["risk_level"] == 2  # Portugal government bond
    assert all(r["risk_level"] in (1, 2, 3, 4) for r in items.values())  # every real category is mapped
    users = {r["user_id"]: r for r in pq.read_table(out / "users.parquet").to_pylist()}
    assert set(users) == {"72D82178F352907E8254", "2710967449B038181A20"}
    na = users["72D82178F352907E8254"]
    assert na["risk_level"] is None and na["investment_capacity"] is None
    assert na["last_questionnaire_date"] == "2021-03-31"  # the latest row (first in the file), not the 2018 one
    predicted = users["2710967449B038181A20"]
    assert predicted["risk_level"] == "Aggressive" and predicted["risk_level_predicted"] is True
    # Factsheets: one per asset; the one with prices has a price line, the others only the risk band.
    assert (out / epsilon["image"]).is_file() and len(list((out / "images").glob("*.png"))) == len(items)
    assert ink(out / epsilon["image"]) > 20 and ink(out / money["image"]) == 0
    data = load_layout(out, ["description", "image"], min_interactions=3)
    assert data.users is not None and sorted(data.users["user_id"]) == sorted(users)


def test_asset_risk_table_and_overrides(tmp_path):
    assert asset_risk("MTF", "Money Market") == 1 and asset_risk("Bond", "Government") == 2
    assert asset_risk("bond", "corporate") == 3 and asset_risk("Stock", "") == 4 and asset_risk("MTF", "Equity") == 4
    assert asset_risk("MTF", "Something New") == 3 and asset_risk("Crypto", "") is None
    src = tmp_path / "src"
    src.mkdir()
    (src / "asset_information.csv").write_text(
        "ISIN,assetName,assetShortName,assetCategory,assetSubCategory,marketID,sector,industry,timestamp\n"
        "A1,Alpha,UNK_1,Stock,,XATH,Energy,Oil,2020-01-01\n"
        "A2,Beta,UNK_2,Crypto,,XATH,,,2020-01-01\n", encoding="utf-8")
    (src / "transactions.csv").write_text(
        "customerID,ISIN,transactionType,timestamp,totalValue,units\nC1,A1,Buy,2021-01-01,1,1\nC1,A2,Buy,2021-01-02,1,1\n",
        encoding="utf-8")
    import_dataset("far-trans", src, tmp_path / "out", options={"asset_risk": {"Stock": 3}, "factsheets": False})
    items = {r["item_id"]: r for r in pq.read_table(tmp_path / "out" / "items.parquet").to_pylist()}
    assert items["A1"]["risk_level"] == 3 and items["A2"]["risk_level"] is None and "image" not in items["A1"]
    import_dataset("far-trans", src, tmp_path / "out3", options={"asset_risk": {"stock": "2"}, "factsheets": False})  # as -o gives it
    assert pq.read_table(tmp_path / "out3" / "items.parquet")["risk_level"].to_pylist() == [2, None]
    with pytest.raises(ConfigError, match=r"asset_risk\['Stock'\]: 7 is not a risk level 1..4"):
        import_dataset("far-trans", src, tmp_path / "out2", options={"asset_risk": {"Stock": 7}})


def test_factsheet_shows_risk_and_trend(tmp_path):
    rising, falling = tmp_path / "up.png", tmp_path / "down.png"
    render_factsheet(rising, risk_level=4, prices=np.linspace(1, 2, 30))
    render_factsheet(falling, risk_level=1, prices=np.linspace(2, 1, 30))
    up, down = (np.asarray(Image.open(p).convert("RGB")).astype(int) for p in (rising, falling))
    assert up.shape == (32, 32, 3)
    # The band's highlighted cell: the last one (red) for level 4, the first (green) for level 1.
    assert np.abs(up[2, 28] - RISK_COLOURS[3]).sum() < 60 and np.abs(down[2, 3] - RISK_COLOURS[0]).sum() < 60
    # The line ends high for a rise and low for a fall.
    def line_rows(img, col):
        column = img[8:, col]
        return np.flatnonzero((column[:, 2] > column[:, 0] + 40) & (column.sum(-1) < 450)) + 8
    assert line_rows(up, 28).mean() < line_rows(up, 3).mean() and line_rows(down, 28).mean() > line_rows(down, 3).mean()
