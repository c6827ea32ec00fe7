"""Importers into the standard layout: the real datasets beside the repository (skipped when absent), small
hand-written files for every format, every kind of bad input in strict and skip mode, and the preparation
helpers (normalisation, dedup, k-core)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crossrec_peft.data import load_layout
from crossrec_peft.data.importers import IMPORTERS, import_dataset
from crossrec_peft.data.importers.prepare import (
    deduplicate,
    duplicate_mask,
    k_core,
    kcore_mask,
    kcore_sequences,
    normalize_text,
)
from crossrec_peft.errors import DataError

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def need(name: str) -> Path:
    path = SHARED / name
    if not path.is_dir():
        pytest.skip(f"real dataset not available: {path} is absent (see ../shared/data/README.md)")
    return path


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def digest(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.rglob("*")) if p.is_file()}


def rejected(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "rejected.jsonl").read_text(encoding="utf-8").split("\n") if line]


def table(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


# ---------------------------------------------------------------------------------------------- fixtures

AMAZON_ITEMS = "A1\tRed &amp; blue   lamp\nA2\tOak chair\nA3\tDesk &quot;pro&quot;\nA4\tStool\n"
AMAZON_USERS = "u1\tA1 A2 A3\nu2\tA2 A3 A4\nu3\tA4 A1 A2 A1\n"


def amazon(d: Path, items: str | bytes = AMAZON_ITEMS, users: str | bytes = AMAZON_USERS) -> Path:
    write(d / "items.tsv", items)
    write(d / "users.tsv", users)
    return d


ML_MOVIES = (
    "movieId,title,genres\n"
    "1,Toy Story (1995),Adventure|Animation|Children\n"
    '2,"American President, The (1995)",Comedy|Drama|Romance\n'
    "3,Heat (1995),Action|Crime|Thriller\n"
    "4,Babylon 5,(no genres listed)\n"
)
ML_RATINGS = (
    "userId,movieId,rating,timestamp\n"
    "1,1,4.0,964982703\n1,2,3.5,964981247\n1,3,5.0,964982224\n"
    "2,1,2.0,964983815\n2,3,4.5,964983816\n2,4,4.0,964983817\n"
)
ML_TAGS = 'userId,movieId,tag,timestamp\n1,1,pixar,1\n2,1,Pixar,2\n2,1,"fun, for kids",3\n1,3,heist,4\n'


def movielens(d: Path, movies: str | bytes = ML_MOVIES, ratings: str | bytes = ML_RATINGS, tags: str | None = ML_TAGS) -> Path:
    write(d / "movies.csv", movies)
    write(d / "ratings.csv", ratings)
    if tags is not None:
        write(d / "tags.csv", tags)
    return d


def ml100k_item(movie: int, title: str, date: str, genres: set[int]) -> str:
    flags = ["1" if g in genres else "0" for g in range(19)]
    return "|".join([str(movie), title, date, "", f"http://us.imdb.com/M/title-exact?{movie}", *flags])


def ml100k(d: Path) -> Path:
    items = "\n".join([
        ml100k_item(1, "Toy Story (1995)", "01-Jan-1995", {3, 4, 5}),
        ml100k_item(2, "Café Society (1995)", "01-Jan-1995", {8}),
        ml100k_item(3, "Shanghai Triad", "01-Jan-1996", {8}),
    ]) + "\n"
    write(d / "u.item", items.encode("latin-1"))
    write(d / "u.data", "1\t1\t5\t874965758\n1\t2\t3\t876893171\n1\t3\t4\t878542960\n2\t1\t4\t876893119\n2\t3\t2\t889751712\n2\t2\t5\t875071561\n")
    return d


def ml1m(d: Path) -> Path:
    write(d / "movies.dat", "1::Toy Story (1995)::Animation|Children's|Comedy\n2::Jumanji (1995)::Adventure|Children's|Fantasy\n3::Señor (1996)::Drama\n".encode("latin-1"))
    write(d / "ratings.dat", "1::1::5::978300760\n1::2::3::978302109\n1::3::3::978301968\n2::3::4::978300275\n2::1::5::978824291\n2::2::3::978302268\n")
    return d


FT_ASSETS = (
    "ISIN,assetName,assetShortName,assetCategory,assetSubCategory,marketID,sector,industry,timestamp\n"
    "ES1,Repsol SA,UNK_88,Stock,,XBAR,Energy,Oil & Gas Integrated,2019-02-07\n"
    "GR1,OLD NAME,ABC,Bond,Corporate,XATH,Corporate,Marine,2019-07-22\n"
    "GR1,Attica Holdings,ABC,Bond,Corporate,EBB,Corporate,Marine,2019-07-29\n"
    "US1,,UNK_818,MTF,Other,XNMS,,,2018-01-02\n"
    "ES1,Repsol SA,UNK_88,Stock,,XMAD,Energy,Oil & Gas Integrated,2020-07-22\n"
)
FT_CUSTOMERS = (
    "customerID,customerType,riskLevel,investmentCapacity,lastQuestionnaireDate,timestamp\n"
    "C1,Mass,Income,CAP_LT30K,2019-01-01,2018-01-02\n"
    "C1,Premium,Predicted_Balanced,Predicted_CAP_80K_300K,2021-11-30,2022-01-21\n"
    "C2,Mass,Not_Available,Not_Available,2015-04-27,2018-01-02\n"
    "C3,Mass,Aggressive,CAP_30K_80K,2015-04-27,2018-01-02\n"
)
FT_TRANSACTIONS = (
    "customerID,ISIN,transactionID,transactionType,timestamp,totalValue,units,channel,marketID\n"
    "C1,ES1,1,Buy,2020-01-02,100.5,3,Branch,XMAD\n"
    "C1,GR1,2,Buy,2020-01-03,200,,Branch,XATH\n"
    "C1,GR1,3,Sell,2020-01-05,200,1,Branch,XATH\n"
    "C2,US1,4,Buy,2020-02-02,10,1,Internet Banking,XNMS\n"
    "C2,ES1,5,Buy,2020-02-03,10,1,Internet Banking,XMAD\n"
)


def fartrans(d: Path, assets: str = FT_ASSETS, customers: str | None = FT_CUSTOMERS, transactions: str | None = FT_TRANSACTIONS) -> Path:
    write(d / "asset_information.csv", assets)
    if customers is not None:
        write(d / "customer_information.csv", customers)
    if transactions is not None:
        write(d / "transactions.csv", transactions)
    return d


GENERIC_ITEMS = 'sku,name,price,picture\nS1,"Lamp, red",9.5,img/s1.png\nS2,Chair,20,\nS3,Desk,100,/abs/s3.png\n'
GENERIC_INTER = "".join(
    json.dumps(r) + "\n" for r in [
        {"customer": "c1", "sku": "S1", "when": "2024-01-01T10:00:00", "stars": 5},
        {"customer": "c1", "sku": "S2", "when": "2024-01-02T10:00:00", "stars": 3},
        {"customer": "c1", "sku": "S3", "when": "2024-01-03", "stars": 4},
        {"customer": "c2", "sku": "S3", "when": 1700000000, "stars": None},
        {"customer": "c2", "sku": "S1", "when": 1700000100, "stars": 2},
        {"customer": "c2", "sku": "S2", "when": "1700000200", "stars": 1},
    ]
)
GENERIC_OPTIONS = {
    "items": "catalog.csv",
    "interactions": "events.jsonl",
    "columns": {"item_id": "sku", "user_id": "customer", "timestamp": "when", "rating": "stars", "title": "name", "image": "picture"},
}


def generic(d: Path, items: str | bytes = GENERIC_ITEMS, inter: str | bytes = GENERIC_INTER) -> Path:
    write(d / "catalog.csv", items)
    write(d / "events.jsonl", inter)
    return d


# ---------------------------------------------------------------------------------------------- real data


def test_real_amazon_scientific(tmp_path):
    src = need("amazon-scientific")
    before = digest(src)
    report = import_dataset("amazon-seq", src, tmp_path / "out")
    assert report.written == {"items": 20825, "interactions": 85211}
    assert report.users == 12076 and report.rejected == 0
    titles = pq.read_table(tmp_path / "out" / "items.parquet")["title"].to_pylist()
    assert len(titles) == 20825 and not any("&amp;" in t for t in titles)
    data = load_layout(tmp_path / "out", ["title"])
    assert data.summary()["items"] == 20825 and data.summary()["users"] == 12076 and data.num_interactions == 85211
    assert digest(src) == before


def test_real_movielens_small(tmp_path):
    src = need("movielens-small")
    report = import_dataset("movielens", src, tmp_path / "out")
    assert report.written == {"items": 9742, "interactions": 100836}
    assert report.users == 610 and report.read["ratings.csv"] == 100836
    items = {r["item_id"]: r for r in table(tmp_path / "out" / "items.parquet")}
    assert items["1"]["year"] == 1995 and "Animation" in items["1"]["genres"].split()
    assert "pixar" in items["1"]["tags"].lower()
    data = load_layout(tmp_path / "out", ["title", "tags"])
    assert (data.summary()["items"], data.summary()["users"], data.num_interactions) == (9742, 610, 100836)
    # A threshold keeps fewer ratings, and the rating column stays.
    strict4 = import_dataset("movielens", src, tmp_path / "out4", options={"min_rating": 4.0})
    kept = pq.read_table(tmp_path / "out4" / "interactions.parquet")["rating"].to_numpy()
    assert kept.min() >= 4.0 and strict4.written["interactions"] + strict4.dropped["interactions"]["below_min_rating"] == 100836


def test_real_fartrans_assets_and_customers(tmp_path):
    real = need("far-trans")
    assert not (real / "transactions.csv").exists()
    with pytest.raises(DataError, match=r"transactions\.csv"):
        import_dataset("far-trans", real, tmp_path / "missing")
    src = write(tmp_path / "src" / "transactions.csv", (
        "customerID,ISIN,transactionType,timestamp,totalValue,units\n"
        "DED5BF19E23CCCFEE322,ES0173516115,Buy,2020-01-02,100,1\n"
        "6C0C752E66D5F0486C71,US46090E1038,Buy,2020-01-03,50,2\n"
    )).parent
    report = import_dataset("far-trans", src, tmp_path / "out", options={
        "asset_information": str(real / "asset_information.csv"),
        "customer_information": str(real / "customer_information.csv"),
    })
    assert report.read["asset_information.csv"] == 836
    assert report.written["items"] == 806 and report.dropped["items"]["superseded"] == 30
    items = {r["item_id"]: r for r in table(tmp_path / "out" / "items.parquet")}
    assert items["ES0173516115"]["description"] == "Repsol SA. Stock. Sector: Energy. Industry: Oil & Gas Integrated."
    assert items["ES0173516115"]["market_id"] == "XMAD"  # the 2020 row, not the 2019 one
    assert all(r["description"] for r in items.values())
    users = {r["user_id"]: r for r in table(tmp_path / "out" / "users.parquet")}
    assert set(users) == {"DED5BF19E23CCCFEE322", "6C0C752E66D5F0486C71"}
    assert users["6C0C752E66D5F0486C71"]["investment_capacity"] == "CAP_LT30K"
    assert users["6C0C752E66D5F0486C71"]["investment_capacity_predicted"] is True
    assert not any((u["risk_level"] or "").startswith("Predicted_") for u in users.values())
    load_layout(tmp_path / "out", ["description"], min_interactions=1)


# ---------------------------------------------------------------------------------------------- API


def test_unknown_format_lists_known_ones_and_the_closest(tmp_path):
    with pytest.raises(DataError) as err:
        import_dataset("movielen", tmp_path, tmp_path / "out")
    assert "Did you mean 'movielens'?" in str(err.value)
    for name in IMPORTERS:
        assert name in str(err.value)
    assert set(IMPORTERS) == {"amazon-seq", "movielens", "far-trans", "generic", "hf"}


def test_bad_options_and_on_error(tmp_path):
    src = movielens(tmp_path / "src")
    with pytest.raises(DataError, match=r"unknown option 'min_ratings'.*Did you mean 'min_rating'"):
        import_dataset("movielens", src, tmp_path / "out", options={"min_ratings": 4})
    with pytest.raises(DataError, match=r"option 'k_core' must be int"):
        import_dataset("movielens", src, tmp_path / "out", options={"k_core": "5"})
    with pytest.raises(DataError, match=r"on_error must be one of strict, skip.*Did you mean 'skip'"):
        import_dataset("movielens", src, tmp_path / "out", on_error="skp")
    with pytest.raises(DataError, match=r"source directory .* does not exist"):
        import_dataset("movielens", tmp_path / "nope", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_output_is_written_atomically_and_replaces_an_earlier_import(tmp_path):
    src = amazon(tmp_path / "src")
    before = digest(src)
    out = tmp_path / "out"
    import_dataset("amazon-seq", src, out)
    assert sorted(p.name for p in out.iterdir()) == ["import_report.json", "interactions.parquet", "items.parquet"]
    # A failing import leaves the earlier output untouched and no temporary directory behind.
    write(src / "users.tsv", "u1\tA1 NOPE\n")
    with pytest.raises(DataError, match="NOPE"):
        import_dataset("amazon-seq", src, out)
    assert len(table(out / "interactions.parquet")) == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]
    # Re-importing replaces it.
    write(src / "users.tsv", AMAZON_USERS.replace(" A1\n", "\n"))
    import_dataset("amazon-seq", src, out)
    assert len(table(out / "interactions.parquet")) == 9
    # A directory that is not an import is never replaced, nor is the source.
    write(tmp_path / "mine" / "notes.txt", "keep me")
    with pytest.raises(DataError, match="not empty"):
        import_dataset("amazon-seq", src, tmp_path / "mine")
    with pytest.raises(DataError, match="would replace the source"):
        import_dataset("amazon-seq", src, src)
    assert digest(src)["items.tsv"] == before["items.tsv"]


# ---------------------------------------------------------------------------------------------- formats


def test_amazon_seq(tmp_path):
    src = amazon(tmp_path / "src")
    before = digest(src)
    report = import_dataset("amazon-seq", src, tmp_path / "out")
    items = {r["item_id"]: r["title"] for r in table(tmp_path / "out" / "items.parquet")}
    assert items == {"A1": "Red & blue lamp", "A2": "Oak chair", "A3": 'Desk "pro"', "A4": "Stool"}
    inter = table(tmp_path / "out" / "interactions.parquet")
    assert [(r["item_id"], r["timestamp"]) for r in inter if r["user_id"] == "u3"] == [("A4", 0), ("A1", 1), ("A2", 2), ("A1", 3)]
    assert report.written == {"items": 4, "interactions": 10} and report.read == {"items.tsv": 4, "users.tsv": 3}
    saved = json.loads((tmp_path / "out" / "import_report.json").read_text())
    assert saved["written"] == report.written and saved["format"] == "amazon-seq"
    data = load_layout(tmp_path / "out", ["title"])
    assert data.user_ids == ["u1", "u2", "u3"] and data.sequences[2].tolist() == [3, 0, 1, 0]
    assert digest(src) == before


def test_amazon_text_options(tmp_path):
    src = amazon(tmp_path / "src", items="A1\t" + "word " * 40 + "\nA2\tb\nA3\tc\nA4\td\n")
    report = import_dataset("amazon-seq", src, tmp_path / "out", options={"max_text_length": 22})
    assert table(tmp_path / "out" / "items.parquet")[0]["title"] == "word word word word"
    assert report.truncated_texts == 1


def test_movielens_csv(tmp_path):
    src = movielens(tmp_path / "src")
    report = import_dataset("movielens", src, tmp_path / "out", options={"min_rating": 4.0})
    items = {r["item_id"]: r for r in table(tmp_path / "out" / "items.parquet")}
    assert items["2"]["title"] == "American President, The (1995)"
    assert items["2"]["genres"] == "Comedy Drama Romance" and items["2"]["year"] == 1995
    assert items["4"]["genres"] == "" and items["4"]["year"] is None
    assert items["1"]["tags"] == "pixar, fun, for kids" and items["3"]["tags"] == "heist" and items["2"]["tags"] == ""
    assert report.dropped["tags"] == {"duplicate_tag": 1}
    inter = table(tmp_path / "out" / "interactions.parquet")
    assert sorted((r["user_id"], r["item_id"], r["rating"]) for r in inter) == [("1", "1", 4.0), ("1", "3", 5.0), ("2", "3", 4.5), ("2", "4", 4.0)]
    assert report.dropped["interactions"] == {"below_min_rating": 2}
    assert inter[0]["timestamp"] == 964982703
    load_layout(tmp_path / "out", ["title", "genres", "tags"], min_interactions=1)
    # Without a threshold every rating stays.
    assert import_dataset("movielens", src, tmp_path / "all").written["interactions"] == 6


def test_movielens_100k_latin1(tmp_path):
    src = ml100k(tmp_path / "src")
    import_dataset("movielens", src, tmp_path / "out")
    items = {r["item_id"]: r for r in table(tmp_path / "out" / "items.parquet")}
    assert items["1"]["genres"] == "Animation Children's Comedy"
    assert items["2"]["title"] == "Café Society (1995)"
    assert items["3"]["year"] == 1996  # from the release date
    assert "tags" not in items["1"]
    data = load_layout(tmp_path / "out", ["title"])
    assert data.num_interactions == 6


def test_movielens_100k_genre_names_from_u_genre(tmp_path):
    src = ml100k(tmp_path / "src")
    names = ["none", *[f"g{i}" for i in range(1, 19)]]
    write(src / "u.genre", "".join(f"{n}|{i}\n" for i, n in enumerate(names)))
    import_dataset("movielens", src, tmp_path / "out")
    assert table(tmp_path / "out" / "items.parquet")[0]["genres"] == "g3 g4 g5"


def test_movielens_1m(tmp_path):
    src = ml1m(tmp_path / "src")
    report = import_dataset("movielens", src, tmp_path / "out")
    items = {r["item_id"]: r for r in table(tmp_path / "out" / "items.parquet")}
    assert items["3"]["title"] == "Señor (1996)" and items["1"]["genres"] == "Animation Children's Comedy"
    assert report.written == {"items": 3, "interactions": 6}
    load_layout(tmp_path / "out", ["title"])


def test_movielens_without_files(tmp_path):
    write(tmp_path / "src" / "readme.txt", "nothing here")
    with pytest.raises(DataError, match=r"none of the MovieLens files"):
        import_dataset("movielens", tmp_path / "src", tmp_path / "out")
    write(tmp_path / "src2" / "movies.csv", ML_MOVIES)
    with pytest.raises(DataError, match=r"ratings\.csv does not exist"):
        import_dataset("movielens", tmp_path / "src2", tmp_path / "out")


def test_far_trans(tmp_path):
    src = fartrans(tmp_path / "src")
    report = import_dataset("far-trans", src, tmp_path / "out")
    items = {r["item_id"]: r for r in table(tmp_path / "out" / "items.parquet")}
    assert items["GR1"]["title"] == "Attica Holdings" and items["GR1"]["market_id"] == "EBB"
    assert items["ES1"]["market_id"] == "XMAD"
    assert items["US1"]["title"] == "US1" and items["US1"]["description"] == "MTF, Other."
    assert report.dropped["items"] == {"superseded": 2}
    inter = table(tmp_path / "out" / "interactions.parquet")
    assert [(r["user_id"], r["item_id"]) for r in inter] == [("C1", "ES1"), ("C1", "GR1"), ("C2", "US1"), ("C2", "ES1")]
    assert inter[1]["units"] is None and inter[0]["total_value"] == 100.5
    assert inter[0]["timestamp"] == 1577923200
    assert report.dropped["interactions"] == {"sell": 1}
    users = {r["user_id"]: r for r in table(tmp_path / "out" / "users.parquet")}
    assert set(users) == {"C1", "C2"}  # C3 bought nothing
    assert users["C1"]["risk_level"] == "Balanced" and users["C1"]["risk_level_predicted"] is True
    assert users["C1"]["customer_type"] == "Premium" and users["C1"]["investment_capacity"] == "CAP_80K_300K"
    assert users["C2"]["risk_level"] is None and users["C2"]["investment_capacity"] is None
    assert report.dropped["users"] == {"superseded": 1, "no_interactions": 1}
    load_layout(tmp_path / "out", ["description"], min_interactions=1)


def test_far_trans_customers_who_bought_nothing_leave_no_users_table(tmp_path):
    """Found by the importers' fuzz test: when no customer row survives, no users table is written (an empty
    one could not be loaded back), and the dataset loads without one."""
    src = fartrans(tmp_path / "src", customers=FT_CUSTOMERS.split("\n")[0] + "\nC3,Mass,Aggressive,CAP_30K_80K,2015-04-27,2018-01-02\n")
    report = import_dataset("far-trans", src, tmp_path / "out")
    assert report.written["users"] == 0 and report.dropped["users"] == {"no_interactions": 1}
    assert not (tmp_path / "out" / "users.parquet").exists()
    assert load_layout(tmp_path / "out", ["description"], min_interactions=1).users is None


def test_far_trans_missing_files(tmp_path):
    src = fartrans(tmp_path / "src", transactions=None)
    with pytest.raises(DataError, match=r"interactions file .*transactions\.csv does not exist"):
        import_dataset("far-trans", src, tmp_path / "out")
    src = fartrans(tmp_path / "src2", customers=None)
    report = import_dataset("far-trans", src, tmp_path / "out")
    assert not (tmp_path / "out" / "users.parquet").exists()
    assert any("no users.parquet" in n for n in report.notes)


def test_far_trans_bad_transaction_type(tmp_path):
    src = fartrans(tmp_path / "src", transactions=FT_TRANSACTIONS + "C1,ES1,6,Gift,2020-01-02,1,1,Branch,XMAD\n")
    with pytest.raises(DataError, match=r"transactions\.csv, line 7, field 'transactionType': 'Gift' is neither Buy nor Sell"):
        import_dataset("far-trans", src, tmp_path / "out")


def test_generic_csv_and_jsonl_with_mapping(tmp_path):
    src = generic(tmp_path / "src")
    report = import_dataset("generic", src, tmp_path / "out", options=GENERIC_OPTIONS)
    items = table(tmp_path / "out" / "items.parquet")
    assert list(items[0]) == ["item_id", "title", "price", "image"]
    assert items[0]["title"] == "Lamp, red" and items[0]["price"] == "9.5"
    assert items[0]["image"] == str((src / "img" / "s1.png").resolve())
    assert items[1]["image"] is None and items[2]["image"] == "/abs/s3.png"
    inter = table(tmp_path / "out" / "interactions.parquet")
    assert inter[0]["timestamp"] == 1704103200.0 and inter[3]["timestamp"] == 1700000000.0
    assert inter[3]["rating"] is None and inter[0]["rating"] == 5.0
    assert report.written == {"items": 3, "interactions": 6}
    data = load_layout(tmp_path / "out", ["title"])
    assert data.user_ids == ["c1", "c2"] and data.sequences[1].tolist() == [2, 0, 1]


def test_generic_parquet_and_defaults(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    pq.write_table(pa.table({"item_id": [1, 2, 3], "title": ["a", "b", "c"], "price": [1.5, 2.0, None]}), src / "items.parquet")
    pq.write_table(pa.table({"user_id": ["u"] * 3, "item_id": [3, 1, 2], "label": [1, 0, 1]}), src / "inter.parquet")
    report = import_dataset("generic", src, tmp_path / "out", options={"items": "items.parquet", "interactions": "inter.parquet"})
    items = pq.read_table(tmp_path / "out" / "items.parquet")
    assert items.schema.field("price").type == pa.float64()  # Parquet types are kept
    inter = table(tmp_path / "out" / "interactions.parquet")
    assert [(r["item_id"], r["timestamp"], r["label"]) for r in inter] == [("3", 1.0, 1), ("1", 2.0, 0), ("2", 3.0, 1)]
    assert report.written["interactions"] == 3
    load_layout(tmp_path / "out", ["title"])


def test_generic_missing_mapping(tmp_path):
    src = generic(tmp_path / "src")
    with pytest.raises(DataError, match=r"catalog\.csv, line 1 \(the header\): missing column 'item_id'; the line reads 'sku,name,price,picture'\. Expected columns: item_id\. Map standard names"):
        import_dataset("generic", src, tmp_path / "out", options={"items": "catalog.csv", "interactions": "events.jsonl"})
    with pytest.raises(DataError, match=r"no column for 'title'.* or set text_fields"):
        import_dataset("generic", src, tmp_path / "out", options={
            "items": "catalog.csv", "interactions": "events.jsonl", "columns": {"item_id": "sku"}, "text_fields": ["title"],
        })
    with pytest.raises(DataError, match=r"option 'items' is required"):
        import_dataset("generic", src, tmp_path / "out", options={"interactions": "events.jsonl"})
    with pytest.raises(DataError, match=r"unknown table format '\.xml'"):
        write(src / "x.xml", "<a/>")
        import_dataset("generic", src, tmp_path / "out", options={"items": "x.xml", "interactions": "events.jsonl"})


def test_hf_json_data_files(tmp_path):
    src = tmp_path / "src"
    rows = [
        {"reviewer": "r1", "asin": "B1", "product": "Red &amp; lamp", "cat": "home", "ts": 1},
        {"reviewer": "r1", "asin": "B2", "product": "Chair", "cat": "home", "ts": 2},
        {"reviewer": "r2", "asin": "B1", "product": "Red &amp; lamp", "cat": "home", "ts": 3},
        {"reviewer": "r2", "asin": "B3", "product": "Desk", "cat": "office", "ts": 4},
    ]
    write(src / "reviews.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    options = {
        "name": "json", "data_files": "reviews.jsonl", "cache_dir": str(tmp_path / "hf-cache"),
        "columns": {"user_id": "reviewer", "item_id": "asin", "title": "product", "category": "cat", "timestamp": "ts"},
        "item_fields": ["category"],
    }
    report = import_dataset("hf", src, tmp_path / "out", options=options)
    items = table(tmp_path / "out" / "items.parquet")
    assert items == [
        {"item_id": "B1", "title": "Red & lamp", "category": "home"},
        {"item_id": "B2", "title": "Chair", "category": "home"},
        {"item_id": "B3", "title": "Desk", "category": "office"},
    ]
    assert report.written == {"items": 3, "interactions": 4} and report.read == {"json[train]": 4}
    load_layout(tmp_path / "out", ["title"], min_interactions=1)

    # A separate items dataset.
    write(src / "items.jsonl", "".join(json.dumps({"asin": a, "product": t}) + "\n" for a, t in [("B1", "Lamp"), ("B2", "Chair"), ("B3", "Desk")]))
    columns = {k: v for k, v in options["columns"].items() if k != "category"}
    report = import_dataset("hf", src, tmp_path / "out2", options={
        **options, "columns": columns, "item_fields": None, "items": {"name": "json", "data_files": "items.jsonl"},
    })
    assert [r["title"] for r in table(tmp_path / "out2" / "items.parquet")] == ["Lamp", "Chair", "Desk"]

    # Items that disagree about their text, and load failures.
    write(src / "bad.jsonl", "".join(json.dumps(r) + "\n" for r in [*rows, {**rows[0], "product": "Blue lamp", "ts": 9}]))
    with pytest.raises(DataError, match=r"json\[train\], row 5, field 'product': item 'B1' is already defined at row 1"):
        import_dataset("hf", src, tmp_path / "out3", options={**options, "data_files": "bad.jsonl"})
    with pytest.raises(DataError, match=r"hf: cannot load dataset 'json'"):
        import_dataset("hf", src, tmp_path / "out3", options={**options, "data_files": "absent.jsonl"})
    with pytest.raises(DataError, match=r"hf: cannot load dataset 'json' \(split 'test'"):
        import_dataset("hf", src, tmp_path / "out3", options={**options, "split": "test"})


# ---------------------------------------------------------------------------------------------- bad input


def test_missing_files_name_the_file(tmp_path):
    src = tmp_path / "src"
    write(src / "items.tsv", AMAZON_ITEMS)
    with pytest.raises(DataError, match=r"users\.tsv does not exist"):
        import_dataset("amazon-seq", src, tmp_path / "out")
    with pytest.raises(DataError, match=r"catalog\.csv does not exist"):
        import_dataset("generic", src, tmp_path / "out", options=GENERIC_OPTIONS)


def test_wrong_delimiter(tmp_path):
    # A headerless TSV written with commas: every line is one field.
    src = amazon(tmp_path / "a", items=AMAZON_ITEMS.replace("\t", ","))
    with pytest.raises(DataError) as err:
        import_dataset("amazon-seq", src, tmp_path / "out")
    msg = str(err.value)
    assert "items.tsv, line 1, field 'title': 1 field where 2 are expected" in msg
    assert "wrong delimiter?" in msg and "(3 more problems: too_few_fields: 3)" in msg
    with pytest.raises(DataError, match=r"nothing to import: no items left .*too_few_fields: 4"):
        import_dataset("amazon-seq", src, tmp_path / "out", on_error="skip")
    # A CSV with a header written with semicolons: stops at the header in both modes.
    src = movielens(tmp_path / "m", movies=ML_MOVIES.replace(",", ";"))
    for mode in ("strict", "skip"):
        with pytest.raises(DataError, match=r"movies\.csv, line 1 \(the header\): one column .*semicolons: wrong delimiter"):
            import_dataset("movielens", src, tmp_path / "out", on_error=mode)


def test_header_where_none_is_expected(tmp_path):
    src = amazon(tmp_path / "src", items="item_id\ttitle\n" + AMAZON_ITEMS)
    with pytest.raises(DataError, match=r"items\.tsv, line 1, field 'item_id': looks like a header line"):
        import_dataset("amazon-seq", src, tmp_path / "out")
    report = import_dataset("amazon-seq", src, tmp_path / "out", on_error="skip")
    assert report.written["items"] == 4 and report.dropped["items"] == {"unexpected_header": 1}
    assert rejected(tmp_path / "out") == [{
        "file": str(src / "items.tsv"), "line": 1, "field": "item_id", "reason": "unexpected_header",
        "message": rejected(tmp_path / "out")[0]["message"], "raw": "item_id\ttitle",
    }]
    # A first item that merely has a header-like title is data.
    src = amazon(tmp_path / "t", items="A0\tTitle\n" + AMAZON_ITEMS)
    assert import_dataset("amazon-seq", src, tmp_path / "t-out").written["items"] == 5
    src = ml100k(tmp_path / "k")
    write(src / "u.data", "user id\titem id\trating\ttimestamp\n" + (src / "u.data").read_text())
    with pytest.raises(DataError, match=r"u\.data, line 1, field 'user_id': looks like a header"):
        import_dataset("movielens", src, tmp_path / "out2")


def test_no_header_where_one_is_expected(tmp_path):
    src = movielens(tmp_path / "src", ratings=ML_RATINGS.split("\n", 1)[1])
    for mode in ("strict", "skip"):
        with pytest.raises(DataError, match=r"ratings\.csv, line 1 \(the header\): missing columns .*It looks like data: the file needs a header line"):
            import_dataset("movielens", src, tmp_path / "out", on_error=mode)
    src = movielens(tmp_path / "empty", ratings="")
    with pytest.raises(DataError, match=r"ratings\.csv: empty file; expected a header line"):
        import_dataset("movielens", src, tmp_path / "out")


def test_non_utf8_bytes(tmp_path):
    items = AMAZON_ITEMS.encode().replace(b"Oak chair", b"Oak \xe9chair")
    src = amazon(tmp_path / "src", items=items)
    with pytest.raises(DataError, match=r"items\.tsv, line 2, field 'title': byte b'\\xe9' at column 8 is not valid utf-8"):
        import_dataset("amazon-seq", src, tmp_path / "out")
    report = import_dataset("amazon-seq", src, tmp_path / "out", on_error="skip")
    # A2 is gone, so the interactions naming it are rejected too (unknown_item), each with its line.
    assert report.dropped == {"items": {"bad_encoding": 1}, "interactions": {"unknown_item": 3}}
    entries = rejected(tmp_path / "out")
    assert entries[0]["raw"] == "A2\tOak \\xe9chair" and entries[0]["reason"] == "bad_encoding"
    assert [(e["line"], e["reason"]) for e in entries[1:]] == [(1, "unknown_item"), (2, "unknown_item"), (3, "unknown_item")]
    # The same bytes are fine where the format is latin-1 (ml-100k), or with an explicit encoding.
    report = import_dataset("amazon-seq", src, tmp_path / "latin", options={"encoding": "latin-1"})
    assert table(tmp_path / "latin" / "items.parquet")[1]["title"] == "Oak échair"
    # An undecodable header stops the import.
    src = movielens(tmp_path / "m", movies=b"movieId,t\xffitle,genres\n1,a,b\n")
    with pytest.raises(DataError, match=r"movies\.csv, line 1 \(the header\): byte"):
        import_dataset("movielens", src, tmp_path / "out2", on_error="skip")


def test_too_few_and_too_many_fields(tmp_path):
    ratings = ML_RATINGS + "3,1,4.0\n3,2,4.0,964983817,extra\n3,3,4.0,964983817\n"
    src = movielens(tmp_path / "src", ratings=ratings)
    with pytest.raises(DataError) as err:
        import_dataset("movielens", src, tmp_path / "out")
    assert "ratings.csv, line 8, field 'timestamp': 3 fields where 4 are expected" in str(err.value)
    assert "(1 more problem: too_many_fields: 1)" in str(err.value)
    report = import_dataset("movielens", src, tmp_path / "out", on_error="skip")
    assert report.dropped["interactions"] == {"too_few_fields": 1, "too_many_fields": 1}
    assert [(e["line"], e["field"], e["raw"]) for e in rejected(tmp_path / "out")] == [
        (8, "timestamp", "3,1,4.0"), (9, "timestamp", "3,2,4.0,964983817,extra"),
    ]
    assert report.written["interactions"] == 7
    # An unquoted comma in a title is one field too many.
    src = movielens(tmp_path / "m", movies=ML_MOVIES + "5,Dog, The (2000),Drama\n")
    with pytest.raises(DataError, match=r"movies\.csv, line 6, field 'genres': 4 fields where 3 .* unquoted delimiter"):
        import_dataset("movielens", src, tmp_path / "out2")


def test_empty_text(tmp_path):
    src = amazon(tmp_path / "src", items=AMAZON_ITEMS.replace("Oak chair", "   "))
    with pytest.raises(DataError, match=r"items\.tsv, line 2, field 'title': empty text"):
        import_dataset("amazon-seq", src, tmp_path / "out")
    src = movielens(tmp_path / "m", movies=ML_MOVIES.replace("Heat (1995)", '""'))
    report = import_dataset("movielens", src, tmp_path / "out", on_error="skip")
    assert report.dropped["items"] == {"empty_text": 1}
    assert report.dropped["interactions"] == {"unknown_item": 2}  # the ratings of movie 3
    assert report.dropped["tags"] == {"unknown_item": 1, "duplicate_tag": 1}


def test_duplicate_item_ids(tmp_path):
    # Same id, different text: strict stops; skip keeps the first definition.
    src = amazon(tmp_path / "src", items=AMAZON_ITEMS + "A2\tWalnut chair\nA4\tStool\n")
    with pytest.raises(DataError, match=r"items\.tsv, line 5, field 'title': item 'A2' is already defined at line 2 with a different title \('Oak chair' there, 'Walnut chair' here\)"):
        import_dataset("amazon-seq", src, tmp_path / "out")
    report = import_dataset("amazon-seq", src, tmp_path / "out", on_error="skip")
    assert report.dropped["items"] == {"duplicate_item": 1, "duplicate_item_identical": 1}
    assert table(tmp_path / "out" / "items.parquet")[1] == {"item_id": "A2", "title": "Oak chair"}
    assert rejected(tmp_path / "out")[0]["raw"] == "A2\tWalnut chair"
    # An exact repeat alone is not a problem: it is counted and dropped.
    src = amazon(tmp_path / "same", items=AMAZON_ITEMS + "A4\tStool\n")
    report = import_dataset("amazon-seq", src, tmp_path / "out2")
    assert report.written["items"] == 4 and report.dropped["items"] == {"duplicate_item_identical": 1}


def test_unknown_items(tmp_path):
    src = amazon(tmp_path / "src", users=AMAZON_USERS.replace("u2\tA2 A3 A4", "u2\tA2 ZZ A4 YY"))
    with pytest.raises(DataError, match=r"users\.tsv, line 2, field 'items': item 'ZZ' \(position 2\) is not in items\.tsv\. \(1 more problem: unknown_item: 1\)"):
        import_dataset("amazon-seq", src, tmp_path / "out")
    report = import_dataset("amazon-seq", src, tmp_path / "out", on_error="skip")
    assert report.dropped["interactions"] == {"unknown_item": 2}
    assert [(r["item_id"], r["timestamp"]) for r in table(tmp_path / "out" / "interactions.parquet") if r["user_id"] == "u2"] == [("A2", 0), ("A4", 2)]
    src = movielens(tmp_path / "m", ratings=ML_RATINGS + "3,99,4.0,1\n")
    with pytest.raises(DataError, match=r"ratings\.csv, line 8, field 'movieId': movie 99 is not in movies\.csv"):
        import_dataset("movielens", src, tmp_path / "out2")


def test_unparsable_timestamps(tmp_path):
    src = movielens(tmp_path / "src", ratings=ML_RATINGS + "3,1,4.0,yesterday\n3,2,4.0,12.5\n")
    with pytest.raises(DataError, match=r"ratings\.csv, line 8, field 'timestamp': 'yesterday' is not an integer timestamp\. \(1 more problem: bad_timestamp: 1\)"):
        import_dataset("movielens", src, tmp_path / "out")
    inter = GENERIC_INTER.replace('"2024-01-03"', '"03/01/2024 noon"')
    src = generic(tmp_path / "g", inter=inter)
    with pytest.raises(DataError, match=r"events\.jsonl, line 3, field 'when': '03/01/2024 noon' is not a timestamp"):
        import_dataset("generic", src, tmp_path / "out", options=GENERIC_OPTIONS)
    report = import_dataset("generic", src, tmp_path / "out", options=GENERIC_OPTIONS, on_error="skip")
    assert report.dropped["interactions"] == {"bad_timestamp": 1} and report.written["interactions"] == 5
    # Dates outside pandas' nanosecond range (1677-2262) are still dates.
    src = generic(tmp_path / "old", inter=GENERIC_INTER.replace('"2024-01-03"', '"1500-01-01"'))
    import_dataset("generic", src, tmp_path / "old-out", options=GENERIC_OPTIONS)
    assert table(tmp_path / "old-out" / "interactions.parquet")[2]["timestamp"] == -14831769600.0
    src = fartrans(tmp_path / "f", transactions=FT_TRANSACTIONS.replace("2020-02-02", "2020-13-45"))
    with pytest.raises(DataError, match=r"transactions\.csv, line 5, field 'timestamp': '2020-13-45'"):
        import_dataset("far-trans", src, tmp_path / "out2")


def test_bad_numbers_and_ids(tmp_path):
    src = movielens(tmp_path / "src", ratings=ML_RATINGS + "3,1,great,1\nx7,1,4.0,1\n3,,4.0,1\n")
    report = import_dataset("movielens", src, tmp_path / "out", on_error="skip")
    assert report.dropped["interactions"] == {"bad_number": 1, "bad_id": 1, "empty_id": 1}
    assert sorted((e["line"], e["field"]) for e in rejected(tmp_path / "out")) == [(8, "rating"), (9, "userId"), (10, "movieId")]


def test_empty_result(tmp_path):
    src = amazon(tmp_path / "src", items="")
    with pytest.raises(DataError, match=r"nothing to import: no items left"):
        import_dataset("amazon-seq", src, tmp_path / "out")
    src = amazon(tmp_path / "u", users="u1\tX Y\n")
    with pytest.raises(DataError, match=r"nothing to import: no interactions left .*unknown_item: 2"):
        import_dataset("amazon-seq", src, tmp_path / "out", on_error="skip")
    src = movielens(tmp_path / "m", ratings=ML_RATINGS)
    with pytest.raises(DataError, match=r"nothing to import: no interactions left .*below_min_rating: 6"):
        import_dataset("movielens", src, tmp_path / "out", options={"min_rating": 5.5})
    assert not (tmp_path / "out").exists()


def test_malformed_csv_and_empty_sequences(tmp_path):
    src = movielens(tmp_path / "src", movies=ML_MOVIES + '5,"Unclosed (2000),Drama\n')
    with pytest.raises(DataError, match=r"movies\.csv, line 6, field 'movieId': not valid CSV"):
        import_dataset("movielens", src, tmp_path / "out")
    src = amazon(tmp_path / "a", users=AMAZON_USERS + "u4\t   \n")
    report = import_dataset("amazon-seq", src, tmp_path / "out", on_error="skip")
    assert report.dropped["interactions"] == {"empty_sequence": 1}


def test_duplicate_user_lines(tmp_path):
    src = amazon(tmp_path / "src", users=AMAZON_USERS + "u1\tA4 A4\n")
    with pytest.raises(DataError, match=r"users\.tsv, line 4, field 'user_id': user 'u1' already has a line \(line 1\)"):
        import_dataset("amazon-seq", src, tmp_path / "out")
    report = import_dataset("amazon-seq", src, tmp_path / "out", on_error="skip")
    assert report.dropped["interactions"] == {"duplicate_user": 2} and report.written["interactions"] == 10


def test_strict_versus_skip_on_the_same_input(tmp_path):
    ratings = ML_RATINGS + "3,1,4.0,yesterday\n3,99,4.0,1\n3,2\n3,3,4.0,964983817\n3,4,4.0,964983818\n"
    src = movielens(tmp_path / "src", ratings=ratings)
    before = digest(src)
    with pytest.raises(DataError) as err:
        import_dataset("movielens", src, tmp_path / "strict")
    msg = str(err.value)
    assert msg.startswith(f"{src / 'ratings.csv'}, line 8, field 'timestamp'")
    assert "(2 more problems: " in msg and "on_error='skip'" in msg
    assert not (tmp_path / "strict").exists()
    report = import_dataset("movielens", src, tmp_path / "skip", on_error="skip")
    entries = rejected(tmp_path / "skip")
    assert [(Path(e["file"]).name, e["line"], e["reason"]) for e in entries] == [
        ("ratings.csv", 10, "too_few_fields"), ("ratings.csv", 8, "bad_timestamp"), ("ratings.csv", 9, "unknown_item"),
    ]
    assert all(set(e) == {"file", "line", "field", "reason", "message", "raw"} for e in entries)
    assert report.rejected == 3 and report.written["interactions"] == 8
    assert report.read["ratings.csv"] == report.written["interactions"] + report.dropped_total("interactions")
    saved = json.loads((tmp_path / "skip" / "import_report.json").read_text())
    assert saved["dropped"]["interactions"] == {"too_few_fields": 1, "bad_timestamp": 1, "unknown_item": 1}
    load_layout(tmp_path / "skip", ["title"], min_interactions=1)
    assert digest(src) == before


# ---------------------------------------------------------------------------------------------- preparation


def test_normalize_text():
    assert normalize_text("Red &amp;amp; blue&nbsp;lamp \n\t x") == "Red & blue lamp x"
    assert normalize_text("  a\x00b\u200b ") == "ab\u200b"
    assert normalize_text("caf\u0065\u0301") == "café"
    assert normalize_text("AT&T", unescape_html=True) == "AT&T"
    assert normalize_text("&lt;b&gt;", unescape_html=False) == "&lt;b&gt;"
    assert normalize_text("alpha beta gamma", max_length=12) == "alpha beta"  # a word boundary near the end
    assert normalize_text("one two three four", max_length=12) == "one two thre"
    assert normalize_text("abcdefghij", max_length=4) == "abcd"
    assert normalize_text(None) == ""


def test_duplicate_mask():
    users = np.array([0, 0, 1, 0, 1, 0])
    items = np.array([5, 5, 5, 5, 5, 6])
    ts = np.array([1, 1, 1, 2, 1, 1])
    assert duplicate_mask(users, items, ts).tolist() == [False, True, False, False, True, False]
    assert duplicate_mask(users, items).tolist() == [False, True, False, True, True, False]
    t = pa.table({"user_id": ["a", "a", "b"], "item_id": ["x", "x", "x"], "timestamp": [1, 1, 1]})
    assert deduplicate(t).num_rows == 2


def test_kcore_iterates_until_stable():
    # Item 2 has 2 interactions; removing it leaves user 2 with 1 -> removed -> item 1 drops to 2 ... ->
    # only the dense block of users 0, 1 and items 0, 1 survives at k=2.
    users = np.array([0, 0, 1, 1, 2, 2, 3])
    items = np.array([0, 1, 0, 1, 1, 2, 2])
    assert kcore_mask(users, items, 2).tolist() == [True, True, True, True, False, False, False]
    assert kcore_mask(users, items, 1).all()
    assert not kcore_mask(users, items, 3).any()
    t = pa.table({"user_id": [str(u) for u in users], "item_id": [str(i) for i in items]})
    assert k_core(t, 2).num_rows == 4
    seqs = [np.array([0, 1]), np.array([0, 1]), np.array([1, 2]), np.array([2])]
    assert [s.tolist() for s in kcore_sequences(seqs, 2)] == [[0, 1], [0, 1]]


def test_kcore_and_dedup_in_an_import(tmp_path):
    items = "".join(f"I{i}\titem {i}\n" for i in range(5))
    users = "u0\tI0 I1 I2\nu1\tI0 I1 I2\nu2\tI0 I1 I3\nu3\tI4\n"
    src = amazon(tmp_path / "src", items=items, users=users)
    report = import_dataset("amazon-seq", src, tmp_path / "out", options={"k_core": 2})
    assert report.written == {"items": 3, "interactions": 8}
    assert report.dropped == {"interactions": {"k_core": 2}, "items": {"k_core": 2}}
    assert [r["item_id"] for r in table(tmp_path / "out" / "items.parquet")] == ["I0", "I1", "I2"]
    load_layout(tmp_path / "out", ["title"], min_interactions=2)
    # dedup: exact (user, item, timestamp) repeats go; the same item at another time stays.
    inter = GENERIC_INTER + GENERIC_INTER.splitlines(keepends=True)[0] + GENERIC_INTER.splitlines(keepends=True)[0].replace("10:00:00", "11:00:00")
    src = generic(tmp_path / "g", inter=inter)
    report = import_dataset("generic", src, tmp_path / "g-out", options=GENERIC_OPTIONS)
    assert report.written["interactions"] == 7 and report.dropped["interactions"] == {"duplicate_interaction": 1}
    report = import_dataset("generic", src, tmp_path / "g-all", options={**GENERIC_OPTIONS, "dedup": False})
    assert report.written["interactions"] == 8


def test_generic_jsonl_value_types(tmp_path):
    src = tmp_path / "src"
    write(src / "items.jsonl", "".join(json.dumps(r) + "\n" for r in [
        {"item_id": 1, "title": "lamp", "tags": ["a", "b"]},
        {"item_id": [2], "title": "list id"},
        {"item_id": 3.0, "title": {"en": "desk"}, "tags": None},
        {"item_id": "4", "title": 7},
    ]) + "[1, 2]\n{not json\n")
    write(src / "inter.jsonl", "".join(json.dumps(r) + "\n" for r in [
        {"user_id": "u", "item_id": 1, "timestamp": 10**400, "label": 1},
        {"user_id": "u", "item_id": "3", "timestamp": 5, "label": None},
        {"user_id": "u", "item_id": 4, "timestamp": "2024-02-30", "label": 0},
        {"user_id": "u", "item_id": 4, "timestamp": 6, "label": 0.5},
        {"user_id": "u", "item_id": 4, "timestamp": 7, "label": 1},
    ]))
    report = import_dataset("generic", src, tmp_path / "out", on_error="skip", options={"items": "items.jsonl", "interactions": "inter.jsonl"})
    items = table(tmp_path / "out" / "items.parquet")
    assert items == [
        {"item_id": "1", "title": "lamp", "tags": '["a", "b"]'},
        {"item_id": "3", "title": '{"en": "desk"}', "tags": None},
        {"item_id": "4", "title": "7", "tags": None},
    ]
    assert report.dropped["items"] == {"bad_id": 1, "bad_json": 2}
    assert report.dropped["interactions"] == {"bad_timestamp": 2, "bad_value": 1}
    assert [(r["item_id"], r["label"]) for r in table(tmp_path / "out" / "interactions.parquet")] == [("3", None), ("4", 1)]


def test_rejected_jsonl_is_one_object_per_line(tmp_path):
    # latin-1 \x85 decodes to NEL, which str.splitlines() takes for a line break: it is escaped.
    src = ml100k(tmp_path / "src")
    write(src / "u.data", (src / "u.data").read_bytes() + b"3\t1\t\x85\t1\n")
    report = import_dataset("movielens", src, tmp_path / "out", on_error="skip")
    text = (tmp_path / "out" / "rejected.jsonl").read_text(encoding="utf-8")
    assert len(text.splitlines()) == report.rejected == 1
    assert json.loads(text)["raw"] == "3\t1\t\x85\t1"


def test_hf_json_null_line_stops_before_pyarrow(tmp_path):
    # pyarrow's JSON reader segfaults on a block that starts with `null`; the importer refuses such files.
    src = write(tmp_path / "src" / "rows.jsonl", 'null\n{"user_id": "u", "item_id": "i", "title": "t"}\n').parent
    options = {"name": "json", "data_files": "rows.jsonl", "cache_dir": str(tmp_path / "hf-cache")}
    with pytest.raises(DataError, match=r"rows\.jsonl, line 1: a line starting with 'null' is not a JSON Lines row"):
        import_dataset("hf", src, tmp_path / "out", on_error="skip", options=options)
