"""A deterministic finance demo catalog, written as FAR-Trans files and imported with the far-trans importer.

Stocks, bonds and funds (mutual funds and ETFs: FAR-Trans category `MTF`) with names that carry the fund's
fee tier and ongoing charges; customers with a risk profile (Conservative, Income, Balanced, Aggressive,
some `Predicted_`, a few `Not_Available`, older rows superseded by newer ones, as in the bank's file); Buy
and Sell transactions; weekly close prices. `generate` writes `asset_information.csv`,
`customer_information.csv`, `transactions.csv` and `close_prices.csv` to `<directory>/far-trans/` and
imports them into `<directory>` exactly as `crossrec-peft data import far-trans` imports the real dataset,
so the demo and the real data have the same columns and a recipe moves from one to the other by a path.

A customer's chance to buy an asset (see docs/demo-data.md):

    p ∝ popularity^0.5 · exp( 2.5·[asset's sector among the customer's 2]
                              − 3.0·max(0, asset risk − customer risk) − 0.7·max(0, customer risk − asset risk)
                              − fee_sensitivity·fee tier                  (funds only; half the customers 0, half 1.2)
                              + 1.0·[asset category is the customer's preferred one]
                              + 2.0·[price trend is the customer's preferred one] )

The price trend (rising, flat, falling over the year shown) is visible only in the factsheet image.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np

SECTORS: dict[str, list[str]] = {
    "Technology": ["Software", "Semiconductors", "IT Services"],
    "Healthcare": ["Biotechnology", "Medical Devices", "Pharmaceuticals"],
    "Energy": ["Oil & Gas Integrated", "Renewable Utilities", "Oil & Gas Midstream"],
    "Financial Services": ["Banks", "Insurance", "Asset Management"],
    "Utilities": ["Electric Utilities", "Water Utilities", "Gas Utilities"],
    "Real Estate": ["REIT - Residential", "REIT - Office", "Real Estate Services"],
    "Consumer Cyclical": ["Auto Manufacturers", "Restaurants", "Travel Services"],
    "Industrials": ["Aerospace & Defense", "Railroads", "Engineering & Construction"],
    "Communication Services": ["Telecom Services", "Entertainment", "Internet Content"],
    "Basic Materials": ["Chemicals", "Steel", "Gold"],
}
SECTOR_NAMES = list(SECTORS)
COMPANY_WORDS = ["Norvik", "Lumora", "Brightway", "Tesselo", "Kavari", "Omnix", "Pellago", "Zentro", "Quillon", "Marlow",
                 "Vextra", "Hollis", "Sundara", "Corvane", "Ardent", "Fenwick", "Iverly", "Joventa", "Kestrel", "Orlin"]
SECTOR_WORDS = {
    "Technology": "Systems", "Healthcare": "Therapeutics", "Energy": "Energy", "Financial Services": "Capital",
    "Utilities": "Power", "Real Estate": "Properties", "Consumer Cyclical": "Brands", "Industrials": "Industries",
    "Communication Services": "Telecom", "Basic Materials": "Materials",
}
LEGAL = ["SA", "AG", "PLC", "NV", "SpA"]
FUND_HOUSES = ["Aurelia", "Bluecrest", "Cedarline", "Delos", "Everwell", "Fairhaven", "Granite", "Harbor"]
COUNTRIES = ["Greece", "Germany", "France", "Italy", "Spain", "Portugal", "Netherlands", "Austria"]
RISK_NAMES = ["Conservative", "Income", "Balanced", "Aggressive"]
TRENDS = ["rising", "flat", "falling"]
# (name words, ongoing-charges range in %): the fee tier is in every fund's name.
FEE_TIERS = [("Index UCITS ETF", (0.07, 0.30)), ("Fund", (0.80, 1.20)), ("Premium Active Fund", (1.60, 2.20))]

# (assetCategory, assetSubCategory, share of the catalog): the far-trans importer derives the risk level
# (1..4) from these (DEFAULT_ASSET_RISK) exactly as for the real data.
KINDS = [
    ("Stock", "", 0.22), ("Stock", "Large Cap", 0.08),
    ("Bond", "Government", 0.10), ("Bond", "Corporate", 0.14),
    ("MTF", "Money Market", 0.08), ("MTF", "Bond", 0.12), ("MTF", "Balanced", 0.10), ("MTF", "Equity", 0.16),
]
MARKETS = {"Stock": ["XATH", "XETR", "XPAR", "XNYS"], "Bond": ["CCLX", "XATH", "XLUX"], "MTF": ["AEDAK", "CCLX"]}
PRICE_POINTS = 52  # weekly close prices over a year
PRICE_START = np.datetime64("2021-01-04")
TX_START = np.datetime64("2022-01-03")

SECTOR_WEIGHT, OVER_RISK, UNDER_RISK, FEE_WEIGHT, CATEGORY_WEIGHT, TREND_WEIGHT = 2.5, 3.0, 0.7, 1.2, 1.0, 2.0


def _assets(rng: np.random.Generator, n: int) -> dict[str, np.ndarray | list]:
    """Latent attributes and FAR-Trans asset rows."""
    from ..importers.fartrans import asset_risk

    shares = np.array([k[2] for k in KINDS])
    kind = rng.choice(len(KINDS), size=n, p=shares / shares.sum())
    sector = rng.integers(0, len(SECTORS), size=n)
    trend = rng.integers(0, len(TRENDS), size=n)
    tier = rng.integers(0, len(FEE_TIERS), size=n)
    width = len(str(n))
    rows, risk, has_sector, fund_tier, fees = [], [], [], [], []
    for i in range(n):
        category, sub, _ = KINDS[kind[i]]
        sec = SECTOR_NAMES[sector[i]]
        industry = SECTORS[sec][rng.integers(3)]
        word = COMPANY_WORDS[rng.integers(len(COMPANY_WORDS))]
        sector_col = industry_col = ""
        themed, t = True, -1
        if category == "Stock":
            name = f"{word} {SECTOR_WORDS[sec]} {LEGAL[rng.integers(len(LEGAL))]}"
            sector_col, industry_col = sec, industry
        elif sub == "Government":
            year, coupon = 2024 + int(rng.integers(12)), rng.uniform(0.5, 4.5)
            name = f"{COUNTRIES[rng.integers(len(COUNTRIES))]} Government Bond {coupon:.2f}% {year}"
            sector_col, themed = "Sovereign", False
        elif category == "Bond":
            year, coupon = 2024 + int(rng.integers(10)), rng.uniform(2.0, 7.5)
            name = f"{word} {SECTOR_WORDS[sec]} {coupon:.2f}% {year} Bond"
            sector_col, industry_col = "Corporate", sec
        else:
            t = int(tier[i])
            words, (lo, hi) = FEE_TIERS[t]
            house = FUND_HOUSES[rng.integers(len(FUND_HOUSES))]
            fee = rng.uniform(lo, hi)
            if sub == "Money Market":
                name, themed = f"{house} Euro Money Market {words}", False
            elif sub == "Bond":
                name, themed = f"{house} Euro Corporate Bond {words}", False
            elif sub == "Balanced":
                name = f"{house} {sec} Balanced Allocation {words}"
            else:
                name = f"{house} Global {sec} Equity {words}"
            name += f" (ongoing charges {fee:.2f}%)"
            fees.append(fee)
        rows.append({
            "ISIN": f"XD{i:010d}",
            "assetName": name, "assetShortName": f"UNK_{i}", "assetCategory": category, "assetSubCategory": sub,
            "marketID": MARKETS[category][rng.integers(len(MARKETS[category]))], "sector": sector_col,
            "industry": industry_col,
        })
        risk.append(asset_risk(category, sub))
        has_sector.append(themed)
        fund_tier.append(t)
    category_code = np.array([["Stock", "Bond", "MTF"].index(KINDS[k][0]) for k in kind])
    return {
        "rows": rows, "risk": np.array(risk), "sector": np.where(has_sector, sector, -1), "trend": trend,
        "tier": np.array(fund_tier), "category": category_code,
    }


def _prices(rng: np.random.Generator, risk: np.ndarray, trend: np.ndarray) -> np.ndarray:
    """[items, PRICE_POINTS] weekly closes: a trend line plus a Brownian bridge (pinned at both ends, so the
    year's change is the trend's), rougher the riskier the asset."""
    n = len(risk)
    steps = rng.normal(size=(n, PRICE_POINTS - 1))
    walk = np.concatenate([np.zeros((n, 1)), np.cumsum(steps, axis=1)], axis=1)
    t = np.linspace(0.0, 1.0, PRICE_POINTS)
    bridge = walk - t[None, :] * walk[:, -1:]
    bridge /= np.sqrt(PRICE_POINTS) / 2
    direction = np.array([1.0, 0.0, -1.0])[trend]
    path = 3.0 * direction[:, None] * t[None, :] + bridge
    volatility = np.array([0.01, 0.03, 0.06, 0.12])[risk - 1]
    base = rng.lognormal(3.0, 1.0, size=n)
    return np.round(base[:, None] * np.exp(volatility[:, None] * path), 4)


def _histories(rng: np.random.Generator, assets: dict, popularity: np.ndarray, num_users: int):
    n = len(popularity)
    base = 0.5 * np.log(popularity)
    fee_tier = np.maximum(assets["tier"], 0)
    is_fund = assets["tier"] >= 0
    users = {"risk": rng.choice(4, size=num_users, p=[0.15, 0.35, 0.35, 0.15]) + 1}
    histories = []
    for u in range(num_users):
        liked = rng.choice(len(SECTORS), size=2, replace=False)
        sensitive = rng.random() < 0.5
        category = rng.integers(3)
        trend = rng.integers(len(TRENDS))
        gap = assets["risk"] - users["risk"][u]
        logit = (
            base
            + SECTOR_WEIGHT * np.isin(assets["sector"], liked)
            - OVER_RISK * np.maximum(0, gap) - UNDER_RISK * np.maximum(0, -gap)
            - (FEE_WEIGHT if sensitive else 0.0) * fee_tier * is_fund
            + CATEGORY_WEIGHT * (assets["category"] == category)
            + TREND_WEIGHT * (assets["trend"] == trend)
        )
        length = min(40, 4 + rng.poisson(5) + int(rng.geometric(0.15)) - 1, n)
        # Sampling without replacement in proportion to exp(logit): the Gumbel top-k trick, in draw order.
        keys = logit + rng.gumbel(size=n)
        histories.append(np.argsort(-keys)[:length])
    return histories, users


def _write_csv(path: Path, header: list[str], rows) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _day(d: np.datetime64) -> str:
    return str(d.astype("datetime64[D]"))


def write_far_trans(directory: Path, *, num_items: int, num_users: int, seed: int) -> None:
    """The demo as FAR-Trans CSV files in `directory` (the layout `import far-trans` reads)."""
    rng = np.random.default_rng([seed, 3])
    directory.mkdir(parents=True, exist_ok=True)
    assets = _assets(rng, num_items)
    prices = _prices(rng, assets["risk"], assets["trend"])
    popularity = rng.lognormal(0.0, 1.0, size=num_items)
    histories, users = _histories(rng, assets, popularity, num_users)
    isins = [r["ISIN"] for r in assets["rows"]]

    asset_rows = []
    for i, r in enumerate(assets["rows"]):
        if rng.random() < 0.1:  # an older listing of the asset on another market, superseded by the latest row
            asset_rows.append([r["ISIN"], r["assetName"], r["assetShortName"], r["assetCategory"], r["assetSubCategory"],
                               "EBB", r["sector"], r["industry"], "2018-01-02"])
        asset_rows.append([*r.values(), _day(PRICE_START)])
    _write_csv(directory / "asset_information.csv",
               ["ISIN", "assetName", "assetShortName", "assetCategory", "assetSubCategory", "marketID", "sector", "industry", "timestamp"],
               asset_rows)

    dates = [_day(PRICE_START + np.timedelta64(7 * w, "D")) for w in range(PRICE_POINTS)]
    _write_csv(directory / "close_prices.csv", ["ISIN", "timestamp", "closePrice"],
               ([isins[i], dates[w], f"{prices[i, w]:.4f}"] for i in range(num_items) for w in range(PRICE_POINTS)))

    width = len(str(num_users))
    customers, transactions, tx_id = [], [], 0
    types = ["Mass", "Premium", "Professional"]
    capacities = ["CAP_LT30K", "CAP_30K_80K", "CAP_80K_300K", "CAP_GT300K"]
    for u, seq in enumerate(histories):
        cid = f"C{u:0{width}d}"
        ctype, cap = types[rng.choice(3, p=[0.6, 0.3, 0.1])], capacities[rng.integers(4)]
        for _ in range(int(rng.integers(0, 3))):  # older questionnaires: superseded
            customers.append([cid, ctype, RISK_NAMES[rng.integers(4)], cap, "2017-06-01", _day(np.datetime64("2018-01-02") + np.timedelta64(int(rng.integers(0, 900)), "D"))])
        draw = rng.random()
        level = RISK_NAMES[users["risk"][u] - 1]
        shown = "Not_Available" if draw < 0.05 else (f"Predicted_{level}" if draw < 0.25 else level)
        shown_cap = f"Predicted_{cap}" if draw >= 0.05 and draw < 0.25 else cap
        customers.append([cid, ctype, shown, shown_cap, "2021-11-30", "2021-12-31"])
        day = TX_START + np.timedelta64(int(rng.integers(0, 60)), "D")
        for j, item in enumerate(seq):
            day = day + np.timedelta64(int(rng.integers(1, 15)), "D")
            value = round(float(rng.lognormal(7.5, 1.0)), 2)
            price = float(prices[item, -1])
            tx_id += 1
            transactions.append([cid, isins[item], tx_id, "Buy", _day(day), value, round(value / price, 4), "Internet Banking", ""])
            if j and rng.random() < 0.1:  # a partial sale of an earlier holding: the importer leaves Sells out
                tx_id += 1
                sold = seq[rng.integers(j)]
                transactions.append([cid, isins[sold], tx_id, "Sell", _day(day), round(value / 2, 2), "", "Branch", ""])
    for extra in range(max(1, num_users // 50)):  # customers who never bought: the importer drops them
        customers.append([f"N{extra:0{width}d}", "Inactive", "Not_Available", "Not_Available", "", "2019-05-05"])
    _write_csv(directory / "customer_information.csv",
               ["customerID", "customerType", "riskLevel", "investmentCapacity", "lastQuestionnaireDate", "timestamp"], customers)
    _write_csv(directory / "transactions.csv",
               ["customerID", "ISIN", "transactionID", "transactionType", "timestamp", "totalValue", "units", "channel", "marketID"],
               transactions)


def generate(directory: Path, *, num_items: int, num_users: int, seed: int) -> None:
    """Write the FAR-Trans files to `directory/far-trans/` and import them into `directory`."""
    from ..importers import import_dataset

    directory = Path(directory)
    # The importer refuses to write over its own source, so the files are written beside `directory` first.
    staging = directory.parent / f".{directory.name}.far-trans"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        write_far_trans(staging, num_items=num_items, num_users=num_users, seed=seed)
        import_dataset("far-trans", staging, directory)
        staging.rename(directory / "far-trans")
        # The import report names the files where they now are.
        report = directory / "import_report.json"
        report.write_text(report.read_text(encoding="utf-8").replace(str(staging), str(directory / "far-trans")), encoding="utf-8")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
