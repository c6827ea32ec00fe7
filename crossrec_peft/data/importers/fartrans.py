"""far-trans: FAR-Trans, financial asset recommendation data from a European bank (CSV with a header, UTF-8).

    asset_information.csv     ISIN, assetName, assetShortName, assetCategory, assetSubCategory, marketID,
                              sector, industry, timestamp            (an asset may have several rows)
    customer_information.csv  customerID, customerType, riskLevel, investmentCapacity,
                              lastQuestionnaireDate, timestamp        (optional; several rows per customer)
    transactions.csv          customerID, ISIN, transactionType, timestamp, totalValue, units (+ others)

Items: one per ISIN, the latest row (by timestamp, then file order; older rows are `superseded`), with a
`description` built from name, category, subcategory, sector and industry. Buy transactions are the
interactions (Sells are counted as `sell`). users.parquet: each buyer's latest customer row, risk level
and investment capacity without the `Predicted_` prefix (null for Not_Available, with *_predicted flags).

FAR-Trans gives assets no risk class, so `risk_level` (1 Conservative .. 4 Aggressive, the customers' scale)
is derived from category and subcategory (DEFAULT_ASSET_RISK, overridable with options.asset_risk). With
options.factsheets each asset gets `images/<ISIN>.png`: its risk band over its close prices (from the
optional close_prices.csv), the image the finance recipe reads.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

import numpy as np

from ...errors import DataError
from ..factsheet import render_factsheet
from .build import latest_rows
from .core import (
    CommonOptions,
    Importer,
    ImportContext,
    SourceFile,
    batch_table,
    parse_floats,
    parse_ids,
    parse_texts,
    parse_timestamps,
)
from .prepare import codes
from .readers import read_delimited

ASSET_TEXTS = ["assetName", "assetShortName", "assetCategory", "assetSubCategory", "marketID", "sector", "industry"]
ASSET_COLUMNS = ["ISIN", *ASSET_TEXTS, "timestamp"]
CUSTOMER_COLUMNS = ["customerID", "customerType", "riskLevel", "investmentCapacity", "lastQuestionnaireDate", "timestamp"]
TRANSACTION_COLUMNS = ["customerID", "ISIN", "transactionType", "timestamp", "totalValue", "units"]
PRICE_COLUMNS = ["ISIN", "timestamp", "closePrice"]
RISK_LEVELS = ("Conservative", "Income", "Balanced", "Aggressive")  # customers' riskLevel, 1..4
# Asset risk on the customers' scale, by "category/subcategory" (then "category"), compared without case:
# cash-like funds are Conservative, sovereign bonds and bond funds Income, corporate bonds and mixed funds
# Balanced, shares and equity funds Aggressive. A heuristic: the dataset has no per-asset risk class.
DEFAULT_ASSET_RISK = {
    "mtf/money market": 1,
    "bond/government": 2, "mtf/bond": 2, "mtf/bonds": 2,
    "bond/corporate": 3, "bond": 3, "mtf/balanced": 3, "mtf/structured": 3, "mtf/other": 3, "mtf": 3,
    "mtf/equity": 4, "stock": 4,
}
_PLACEHOLDER = re.compile(r"UNK_\d+")
FACTSHEET_NAME_MAX = 64  # longer ids get a shortened, hashed factsheet file name (factsheet_name)
_MISSING = {"", "not_available", "n/a", "na", "none", "null"}


@dataclass
class FarTransOptions(CommonOptions):
    asset_information: str = "asset_information.csv"
    customer_information: str = "customer_information.csv"  # optional: without it no users.parquet
    transactions: str = "transactions.csv"
    close_prices: str = "close_prices.csv"  # optional: the price line of the factsheets
    encoding: str = "utf-8"
    factsheets: bool = True  # render images/<ISIN>.png and write the `image` column
    factsheet_points: int = 60  # the most recent close prices drawn
    asset_risk: dict = field(default_factory=dict)  # "category/subcategory" or "category" -> 1..4, over the defaults

    def check(self, fmt: str) -> None:
        # The prices are cut as [-factsheet_points:]: 0 would draw them all and -1 all but the first.
        if self.factsheet_points < 1:
            raise DataError(
                f"Importer '{fmt}': option 'factsheet_points' must be a positive number of close prices (the most "
                f"recent drawn in each factsheet), not {self.factsheet_points}."
            )


def describe_asset(name: str, category: str, subcategory: str, sector: str, industry: str) -> str:
    """'Repsol SA. Stock. Sector: Energy. Industry: Oil & Gas Integrated.' (empty parts left out)."""
    parts = []
    if name:
        parts.append(name.rstrip("."))
    kind = ", ".join(p for p in (category, subcategory) if p)
    if kind:
        parts.append(kind)
    if sector:
        parts.append(f"Sector: {sector}")
    if industry:
        parts.append(f"Industry: {industry}")
    return ". ".join(parts) + ("." if parts else "")


def asset_risk(category: str | None, subcategory: str | None, table: dict[str, int] = DEFAULT_ASSET_RISK) -> int | None:
    """The risk level (1..4) of an asset of this category and subcategory; None when the table has neither."""
    cat, sub = (category or "").strip().lower(), (subcategory or "").strip().lower()
    return table.get(f"{cat}/{sub}", table.get(cat))


def profile_value(value: str | None) -> tuple[str | None, bool]:
    """('Balanced', True) for 'Predicted_Balanced'; (None, False) for Not_Available or empty."""
    value = (value or "").strip()
    predicted = value.lower().startswith("predicted_")
    if predicted:
        value = value[len("predicted_"):]
    if value.lower() in _MISSING:
        return None, False
    return value, predicted


def run(ctx: ImportContext) -> None:
    import pyarrow as pa

    opts: FarTransOptions = ctx.options
    b = ctx.builder
    hint = " (FAR-Trans layout: asset_information.csv, customer_information.csv, transactions.csv)"
    assets_path = ctx.path(opts.asset_information, role="items", hint=hint)
    tx_path = ctx.path(
        opts.transactions, role="interactions",
        hint=hint + ". Its official release (DOI 10.5525/gla.researchdata.1658) has transactions.csv.",
    )
    customers_path = ctx.path(opts.customer_information, role="users", required=False)
    assets_src, tx_src = SourceFile(assets_path, "items"), SourceFile(tx_path, "interactions")
    risk_table = _risk_table(opts.asset_risk)

    # ---- assets
    csv = {"delimiter": ",", "header": True, "quoting": True, "encoding": opts.encoding, "fmt_hint": hint}
    for batch in read_delimited(ctx, assets_src, assets_path, names=ASSET_COLUMNS, **csv):
        ids = parse_ids(batch, "ISIN")
        texts = {c: parse_texts(batch, c, required=False) for c in ASSET_TEXTS}
        stamps = parse_timestamps(batch, "timestamp", integer=False)
        titles, descriptions = [], []
        for i in range(len(batch)):
            if not batch.keep[i]:
                titles.append(None)
                descriptions.append(None)
                continue
            short = texts["assetShortName"][i]
            name = texts["assetName"][i] or ("" if _PLACEHOLDER.fullmatch(short) else short)
            desc = describe_asset(
                name, texts["assetCategory"][i], texts["assetSubCategory"][i], texts["sector"][i], texts["industry"][i]
            )
            if not desc:
                batch.reject(
                    i, "assetName", "empty_text",
                    "no text to describe the asset (name, short name, category, sector and industry are all empty).",
                )
            titles.append(name or ids[i])
            descriptions.append(desc)
        b.add_items(batch_table(batch, {
            "item_id": ids, "title": titles, "description": descriptions,
            "short_name": texts["assetShortName"], "category": texts["assetCategory"], "subcategory": texts["assetSubCategory"],
            "sector": texts["sector"], "industry": texts["industry"], "market_id": texts["marketID"],
            "risk_level": [asset_risk(c, sc, risk_table) for c, sc in zip(texts["assetCategory"], texts["assetSubCategory"])],
            "_updated": stamps,
        }, types={"_updated": pa.float64(), "risk_level": pa.int64()}, raw=True))
    b.finish_items(assets_src, duplicates="latest", latest_by="_updated")
    if opts.factsheets:
        _factsheets(ctx, ctx.path(opts.close_prices, role="prices", required=False), hint)

    # ---- customers (optional)
    if customers_path is None:
        ctx.report.notes.append(f"{opts.customer_information} not found: no users.parquet written.")
    else:
        _read_customers(ctx, customers_path, hint)

    # ---- transactions
    for batch in read_delimited(ctx, tx_src, tx_path, names=TRANSACTION_COLUMNS, **csv):
        users = parse_ids(batch, "customerID")
        items = parse_ids(batch, "ISIN")
        types_ = batch.column("transactionType")
        buy = np.zeros(len(batch), dtype=bool)
        for i in batch.kept():
            t = types_[i].strip().lower()
            if t not in ("buy", "sell"):
                batch.reject(int(i), "transactionType", "bad_value", f"{types_[i]!r} is neither Buy nor Sell.")
            buy[i] = t == "buy"
        stamps = parse_timestamps(batch, "timestamp", integer=True)
        values = parse_floats(batch, "totalValue", required=False)
        units = parse_floats(batch, "units", required=False)
        kept = batch.kept()
        known = b.known_items([items[i] for i in kept])
        for j in np.flatnonzero(~known):
            i = int(kept[j])
            batch.reject(i, "ISIN", "unknown_item", f"asset '{items[i]}' is not in {assets_path.name}.")
        for i in np.flatnonzero(batch.keep & ~buy):
            batch.drop(int(i), "sell")
        b.add_interactions(batch_table(
            batch, {"user_id": users, "item_id": items, "timestamp": stamps, "total_value": values, "units": units},
            types={"timestamp": pa.int64(), "total_value": pa.float64(), "units": pa.float64()},
        ))
    b.finish(tx_src)
    if b.users is not None:
        buyers = ctx.report.users
        with_profile = ctx.report.written.get("users", 0)
        if buyers > with_profile:
            ctx.report.notes.append(f"{buyers - with_profile} buyers have no row in {customers_path.name}.")


def _risk_table(overrides: dict) -> dict[str, int]:
    from ...errors import ConfigError

    table = dict(DEFAULT_ASSET_RISK)
    for key, level in overrides.items():
        if isinstance(level, str) and level.strip().isdigit():  # from the command line: -o asset_risk.Stock=3
            level = int(level)
        if not isinstance(level, int) or isinstance(level, bool) or not 1 <= level <= len(RISK_LEVELS):
            raise ConfigError(
                f"far-trans option asset_risk['{key}']: {level!r} is not a risk level 1..{len(RISK_LEVELS)} "
                f"({', '.join(f'{i} {n}' for i, n in enumerate(RISK_LEVELS, 1))})."
            )
        table[str(key).strip().lower()] = level
    return table


def factsheet_name(isin: str) -> str:
    """The file name (without .png) of an asset's factsheet: the ISIN itself for a real one ([A-Z0-9], 12
    characters). Other characters become '_' (the caller makes names unique, case-insensitively); an id too
    long for a file name (file systems allow 255 bytes) keeps its first characters, readable, plus a hash
    of the whole id, so the name is the same on every import and two long ids never share it."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", isin)
    if len(name) > FACTSHEET_NAME_MAX:
        name = f"{name[:40]}-{hashlib.sha256(isin.encode('utf-8')).hexdigest()[:16]}"
    return name


def _factsheets(ctx: ImportContext, prices_path, hint: str) -> None:
    """Render each asset's factsheet into the output and add the `image` column (relative paths)."""
    import pyarrow as pa

    opts: FarTransOptions = ctx.options
    b = ctx.builder
    ids = b.items["item_id"].to_pylist()
    series: dict[str, list[tuple[float, float]]] = {}
    if prices_path is None:
        ctx.report.notes.append(f"{opts.close_prices} not found: the factsheets show the risk band only.")
    else:
        src = SourceFile(prices_path, "prices")
        known, unknown = set(ids), 0
        csv = {"delimiter": ",", "header": True, "quoting": True, "encoding": opts.encoding, "fmt_hint": hint}
        for batch in read_delimited(ctx, src, prices_path, names=PRICE_COLUMNS, **csv):
            isins = parse_ids(batch, "ISIN")
            stamps = parse_timestamps(batch, "timestamp")
            closes = parse_floats(batch, "closePrice")
            for i in batch.kept():
                if isins[i] in known:
                    series.setdefault(isins[i], []).append((float(stamps[i]), float(closes[i])))
                else:
                    unknown += 1
        ctx.problems.checkpoint()
        if unknown:
            ctx.report.notes.append(f"{prices_path.name}: {unknown} prices of assets not in the catalog ignored.")
    paths, used = [], set()
    for row, (isin, level) in enumerate(zip(ids, b.items["risk_level"].to_pylist())):
        points = sorted(series.get(isin, []))[-opts.factsheet_points:]
        name = factsheet_name(isin)
        if name.lower() in used:
            name = f"{name}-{row}"
        used.add(name.lower())
        render_factsheet(ctx.work / "images" / f"{name}.png", risk_level=level, prices=[p for _, p in points])
        paths.append(f"images/{name}.png")
    b.set_items(b.items.append_column("image", pa.array(paths, type=pa.string())))


def _read_customers(ctx: ImportContext, path, hint: str) -> None:
    import pyarrow as pa

    opts: FarTransOptions = ctx.options
    src = SourceFile(path, "users")
    parts = []
    csv = {"delimiter": ",", "header": True, "quoting": True, "encoding": opts.encoding, "fmt_hint": hint}
    for batch in read_delimited(ctx, src, path, names=CUSTOMER_COLUMNS, **csv):
        ids = parse_ids(batch, "customerID")
        stamps = parse_timestamps(batch, "timestamp")
        ctype = parse_texts(batch, "customerType", required=False)
        risk = [profile_value(v) for v in batch.column("riskLevel")]
        cap = [profile_value(v) for v in batch.column("investmentCapacity")]
        questionnaire = [v.strip() or None for v in batch.column("lastQuestionnaireDate")]
        t = batch_table(batch, {
            "user_id": ids,
            "customer_type": [v or None for v in ctype],
            "risk_level": [r[0] for r in risk],
            "risk_level_predicted": [r[1] for r in risk],
            "investment_capacity": [c[0] for c in cap],
            "investment_capacity_predicted": [c[1] for c in cap],
            "last_questionnaire_date": questionnaire,
            "_updated": stamps,
        }, types={"risk_level_predicted": pa.bool_(), "investment_capacity_predicted": pa.bool_(), "_updated": pa.float64()})
        if t.num_rows:
            parts.append(t)
    ctx.problems.checkpoint()
    if not parts:
        ctx.report.notes.append(f"{path.name}: no usable customer rows: no users.parquet written.")
        return
    table = pa.concat_tables(parts)
    keep = latest_rows(codes(table["user_id"]), table["_updated"].to_numpy(), table["_line"].to_numpy())
    ctx.report.drop("users", "superseded", int((~keep).sum()))
    ctx.builder.users = table.filter(pa.array(keep)).sort_by("_line")


IMPORTER = Importer(
    name="far-trans",
    run=run,
    options=FarTransOptions,
    description="FAR-Trans: assets (text description), Buy transactions, customer risk profiles (users.parquet)",
)
