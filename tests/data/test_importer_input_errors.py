"""Importer input that used to crash (LookupError, TypeError, RecursionError, OSError), pass silently (NaN
options, a negative slice) or lose rows without saying so (an unclosed quote in skip mode): each is now a
DataError naming the option, or the file, line and field, or imports as it should."""

from __future__ import annotations

import hashlib

import pytest

from crossrec_peft.data.importers import import_dataset
from crossrec_peft.data.importers.fartrans import factsheet_name
from crossrec_peft.errors import DataError
from tests.data.test_importers import (
    FT_ASSETS,
    FT_TRANSACTIONS,
    GENERIC_OPTIONS,
    ML_MOVIES,
    ML_TAGS,
    fartrans,
    generic,
    movielens,
    rejected,
    table,
    write,
)

# -- options that no file could be read with: refused when parsed, before the source is even looked at ---------


@pytest.mark.parametrize(
    "fmt, options, expected",
    [
        ("movielens", {"encoding": "klingon"}, "Importer 'movielens': option 'encoding' is 'klingon', which is not an encoding Python knows"),
        ("amazon-seq", {"encoding": "rot13"}, "Importer 'amazon-seq': option 'encoding' is 'rot13', which is not a text encoding"),
        ("far-trans", {"encoding": "hex"}, "Importer 'far-trans': option 'encoding' is 'hex', which is not a text encoding"),
        ("generic", {"encoding": "rot13"}, "Importer 'generic': option 'encoding' is 'rot13', which is not a text encoding"),
        ("generic", {"encoding": ""}, "option 'encoding' is '', which is not an encoding Python knows"),
        ("generic", {"delimiter": ";;"}, "Importer 'generic': option 'delimiter' must be one character other than a quote or a line break, not ';;'"),
        ("generic", {"delimiter": ""}, "option 'delimiter' must be one character"),
        ("generic", {"delimiter": '"'}, "option 'delimiter' must be one character other than a quote or a line break, not '\"'"),
        ("generic", {"delimiter": "\n"}, "option 'delimiter' must be one character other than a quote or a line break, not '\\n'"),
        ("generic", {"delimiter": "\r"}, "option 'delimiter' must be one character other than a quote or a line break, not '\\r'"),
        ("movielens", {"min_rating": float("nan")}, "Importer 'movielens': option 'min_rating' must be a finite number, not nan"),
        ("movielens", {"min_rating": float("inf")}, "option 'min_rating' must be a finite number, not inf"),
        ("movielens", {"min_rating": float("-inf")}, "option 'min_rating' must be a finite number, not -inf"),
        ("far-trans", {"factsheet_points": 0},
         "Importer 'far-trans': option 'factsheet_points' must be a positive number of close prices"),
        ("far-trans", {"factsheet_points": -1},
         "option 'factsheet_points' must be a positive number of close prices (the most recent drawn in each factsheet), not -1"),
    ],
    ids=["unknown-encoding", "rot13", "hex", "generic-rot13", "empty-encoding", "two-char-delimiter", "empty-delimiter",
         "quote-delimiter", "newline-delimiter", "cr-delimiter", "nan-min-rating", "inf-min-rating", "minus-inf-min-rating",
         "zero-factsheet-points", "negative-factsheet-points"],
)
def test_unusable_option_values_are_refused_before_anything_is_read(tmp_path, fmt, options, expected):
    # The source does not exist: the option is what the message must be about.
    with pytest.raises(DataError) as err:
        import_dataset(fmt, tmp_path / "absent", tmp_path / "out", options=options)
    assert expected in str(err.value), str(err.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "delimiter, items",
    [(";", "sku;name\nS1;Lamp\nS2;Chair\nS3;Desk\n"), ("\t", "sku\tname\nS1\tLamp\nS2\tChair\nS3\tDesk\n"),
     ("|", "sku|name\nS1|Lamp\nS2|Chair\nS3|Desk\n")],
    ids=["semicolon", "tab", "pipe"],
)
def test_one_character_delimiters_still_import(tmp_path, delimiter, items):
    src = generic(tmp_path / "src", items=items)
    options = {**GENERIC_OPTIONS, "columns": {"item_id": "sku", "user_id": "customer", "timestamp": "when", "title": "name"},
               "delimiter": delimiter}
    report = import_dataset("generic", src, tmp_path / "out", options=options)
    assert report.written["items"] == 3


@pytest.mark.parametrize("encoding", ["latin-1", "cp1252", "UTF8", "utf-8-sig"])
def test_text_encodings_by_any_of_their_names_still_import(tmp_path, encoding):
    src = movielens(tmp_path / "src", movies=ML_MOVIES.replace("Heat", "Heät").encode(encoding if encoding != "utf-8-sig" else "utf-8"))
    report = import_dataset("movielens", src, tmp_path / "out", options={"encoding": encoding})
    assert "Heät (1995)" in [r["title"] for r in table(tmp_path / "out" / "items.parquet")] and report.written["items"] == 4


# -- a quote that is never closed: every row after it is in doubt, so skip mode stops too -----------------------


def _unclosed(case: str, tmp_path):
    """(format, source, options, expected message start) for a source with a quote that never closes."""
    if case == "far-trans":
        lines = FT_TRANSACTIONS.splitlines(keepends=True)
        lines[3] = lines[3].replace("Branch,XATH", '"Branch,XATH')
        src = fartrans(tmp_path / "src", transactions="".join(lines))
        return "far-trans", src, {"factsheets": False}, (
            f"{src / 'transactions.csv'}, line 4, field 'customerID': not valid CSV (unexpected end of data): a quote opened on "
            "this line, at the start of 'channel', is never closed"
        )
    if case == "movielens-tags":
        src = movielens(tmp_path / "src", tags=ML_TAGS.replace("1,3,heist,4", '1,3,"heist,4'))
        return "movielens", src, {}, (
            f"{src / 'tags.csv'}, line 5, field 'userId': not valid CSV (unexpected end of data): a quote opened on this line, "
            "at the start of 'tag'"
        )
    if case == "generic-header":
        src = generic(tmp_path / "src", items='sku,"name,price,picture\nS1,Lamp,9.5,\n')
        return "generic", src, GENERIC_OPTIONS, (
            f"{src / 'catalog.csv'}, line 1 (the header): not valid CSV (unexpected end of data): a quote opened on this line "
            "is never closed"
        )
    # generic: after a row whose name rightly spans lines 2 and 3, a quote on line 4 that never closes
    src = generic(tmp_path / "src", items='sku,name,price,picture\nS1,"Lamp,\nred",9.5,img/s1.png\nS2,"Chair,20,\nS3,Desk,100,\n')
    return "generic", src, GENERIC_OPTIONS, (
        f"{src / 'catalog.csv'}, line 4, field 'sku': not valid CSV (unexpected end of data): a quote opened on this line, "
        "at the start of 'name', is never closed"
    )


@pytest.mark.parametrize("on_error", ["strict", "skip"])
@pytest.mark.parametrize("case", ["far-trans", "movielens-tags", "generic", "generic-header"])
def test_unclosed_quote_stops_the_import_in_both_modes(tmp_path, case, on_error):
    fmt, src, options, expected = _unclosed(case, tmp_path)
    with pytest.raises(DataError) as err:
        import_dataset(fmt, src, tmp_path / "out", on_error=on_error, options=options)
    message = str(err.value)
    assert message.startswith(expected), message
    assert "no row after it can be trusted" in message and "on_error='skip'" not in message
    assert not (tmp_path / "out").exists()


def test_unclosed_quote_past_the_field_size_limit_stops_the_import(tmp_path):
    # In a big file csv gives up at its field size limit (131072 characters) before the end of the file: the
    # lines after that point used to be read as rows again, out of step, and most of the file was lost.
    items = "sku,name\nS1,Lamp\nS2,\"Chair\n" + "".join(f"S{i},Item {i}\n" for i in range(3, 20_000))
    src = generic(tmp_path / "src", items=items)
    with pytest.raises(DataError) as err:
        import_dataset("generic", src, tmp_path / "out", on_error="skip",
                       options={**GENERIC_OPTIONS, "columns": {"item_id": "sku", "user_id": "customer", "timestamp": "when", "title": "name"}})
    assert str(err.value).startswith(
        f"{src / 'catalog.csv'}, line 3, field 'sku': not valid CSV (field larger than field limit (131072)): a quote opened on this "
        "line, at the start of 'name', is not closed within the csv module's field size limit"
    ), str(err.value)


def test_text_after_a_closing_quote_is_still_one_bad_row_in_skip_mode(tmp_path):
    # Not an open quote: the reader is back in step on the next line, so only this row is dropped.
    src = movielens(tmp_path / "src", movies=ML_MOVIES + '5,"Heat" (1995),Action\n')
    report = import_dataset("movielens", src, tmp_path / "out", on_error="skip")
    assert report.written["items"] == 4
    assert [(r["line"], r["reason"]) for r in rejected(tmp_path / "out")] == [(6, "malformed_row")]


# -- JSON nested too deeply: a bad line like any other that is not JSON --------------------------------------------


DEEP = "[" * 100_000 + "]" * 100_000


def test_json_nested_too_deeply_is_a_bad_row(tmp_path):
    src = tmp_path / "src"
    write(src / "items.jsonl", '{"sku": "S1", "name": "Lamp"}\n{"sku": "S2", "name": ' + DEEP + '}\n{"sku": "S3", "name": "Desk"}\n')
    write(src / "events.jsonl", '{"customer": "c1", "sku": "S1"}\n{"customer": "c1", "sku": "S3"}\n')
    options = {"items": "items.jsonl", "interactions": "events.jsonl", "columns": {"item_id": "sku", "user_id": "customer", "title": "name"}}
    with pytest.raises(DataError) as err:
        import_dataset("generic", src, tmp_path / "strict", options=options)
    assert str(err.value).startswith(f"{src / 'items.jsonl'}, line 2, field 'sku': not valid JSON (nested too deeply)"), str(err.value)
    report = import_dataset("generic", src, tmp_path / "skip", on_error="skip", options=options)
    assert report.written["items"] == 2 and report.dropped["items"] == {"bad_json": 1}
    assert [(r["line"], r["reason"]) for r in rejected(tmp_path / "skip")] == [(2, "bad_json")]


# -- far-trans factsheets of ids too long for a file name -------------------------------------------------------


LONG_A, LONG_B = "X" * 300, "X" * 299 + "Y"  # the same first 40 characters (and 299)


@pytest.mark.parametrize(
    "isin, name",
    [
        ("GRS498003003", "GRS498003003"),  # a real ISIN keeps its name
        ("ES 1/2", "ES_1_2"),  # as before: unsafe characters become '_'
        ("A" * 64, "A" * 64),  # the longest name kept whole
        ("A" * 65, "A" * 40 + "-" + hashlib.sha256(("A" * 65).encode()).hexdigest()[:16]),
        (LONG_A, "X" * 40 + "-" + hashlib.sha256(LONG_A.encode()).hexdigest()[:16]),
    ],
    ids=["isin", "unsafe-characters", "64-characters", "65-characters", "300-characters"],
)
def test_factsheet_name(isin, name):
    assert factsheet_name(isin) == name


@pytest.mark.parametrize("on_error", ["strict", "skip"])
def test_far_trans_ids_too_long_for_a_file_name_get_short_distinct_factsheets(tmp_path, on_error):
    assets = FT_ASSETS + f"{LONG_A},Long fund A,LFA,MTF,Bond,XATH,,,2020-01-01\n{LONG_B},Long fund B,LFB,MTF,Bond,XATH,,,2020-01-01\n"
    transactions = FT_TRANSACTIONS + f"C1,{LONG_A},6,Buy,2020-03-01,10,1,Branch,XATH\nC2,{LONG_B},7,Buy,2020-03-02,10,1,Branch,XATH\n"
    src = fartrans(tmp_path / "src", assets=assets, transactions=transactions)
    import_dataset("far-trans", src, tmp_path / "out", on_error=on_error)
    images = {r["item_id"]: r["image"] for r in table(tmp_path / "out" / "items.parquet")}
    assert images["ES1"] == "images/ES1.png"
    assert images[LONG_A] != images[LONG_B] and max(len(images[LONG_A]), len(images[LONG_B])) < 80
    assert all((tmp_path / "out" / path).is_file() for path in images.values())
    # The same name on every import (a hash of the id, not a counter).
    import_dataset("far-trans", src, tmp_path / "again", on_error=on_error)
    assert {r["item_id"]: r["image"] for r in table(tmp_path / "again" / "items.parquet")} == images
