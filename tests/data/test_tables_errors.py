"""Reading the standard layout's tables: a CSV quote that is never closed and JSON nested too deeply are
refused naming the file and the line, where they used to load silently short (pyarrow read the rest of the
file into one title) or crash (RecursionError)."""

from __future__ import annotations

import pytest

from crossrec_peft.data import load_layout
from crossrec_peft.data.tables import unclosed_quote
from crossrec_peft.errors import DataError
from tests.data.test_tables import layout

ITEMS_HEADER = "item_id,title\n"
INTERACTIONS_6 = "user_id,item_id,timestamp\nu1,i1,1\nu1,i2,2\nu1,i3,3\nu2,i3,4\nu2,i2,5\nu2,i1,6\n"


@pytest.mark.parametrize(
    "text, expected",
    [
        ('a,b\n1,"x\n2,y\n', 6),  # opens a value, runs to the end
        ('a,b\n1,"x,""y""\nz"\n', None),  # closed on the next line, with quotes written twice inside
        ('a,b\n1,5" lamp\n', None),  # a quote inside an unquoted value is a character
        ('a,b\n1,"x"""\n', None),  # a value ending in a quote character
        ('a,b\n1,"x""', 6),  # the last quote is a quote character: still open
        ('a,b\n1,5" lamp,"open\n', 14),  # after a plain quote, a real one opens
        ('"', 0),
        ('a\r"x\r', 2),  # a lone carriage return ends a line too
        (b'a,b\n1,"x\n', 6),  # bytes as well as text
    ],
    ids=["runs-to-end", "closed-later", "inch-mark", "quote-at-end-of-value", "escaped-then-end",
         "plain-then-open", "only-a-quote", "carriage-return", "bytes"],
)
def test_unclosed_quote_finds_the_quote_that_opens_an_unclosed_value(text, expected):
    assert unclosed_quote(text) == expected


@pytest.mark.parametrize(
    "files, expected",
    [
        # The audit's lay/unterminated2: validate said OK with 4 of 6 items, the quote ate i5 and i6.
        ({"items.csv": ITEMS_HEADER + 'i1,Oak desk lamp\ni2,Walnut side table\ni3,Linen cushion\ni4,"Brass hook\ni5,Wool rug\ni6,Pine shelf\n'},
         "items.csv, line 5: a quote opened on this line is never closed"),
        # The audit's lay/unterminated: the error blamed interactions.csv for an unknown item i3.
        ({"items.csv": ITEMS_HEADER + 'i1,Oak\ni2,"Walnut\ni3,Linen\n'}, "items.csv, line 3: a quote opened on this line is never closed"),
        # In the first column, so pyarrow sees too few fields and the file is scanned for the bad line.
        ({"items.csv": ITEMS_HEADER + 'i1,Oak\n"i2,Walnut\ni3,Linen\n'}, "items.csv, line 3: a quote opened"),
        # On the last line, without a line end.
        ({"items.csv": ITEMS_HEADER + 'i1,Oak\ni2,Walnut\ni3,"Linen'}, "items.csv, line 4: a quote opened"),
        # After a value that rightly spans two lines: the line of the open quote, not of its row's start.
        ({"items.csv": ITEMS_HEADER + 'i1,"Oak\ndesk lamp"\ni2,Walnut\ni3,"Linen\n'}, "items.csv, line 5: a quote opened"),
        ({"items.csv": '"item_id,title\ni1,Oak\ni2,Walnut\ni3,Linen\n'}, "items.csv, line 1 (the header): a quote opened"),
        ({"interactions.csv": 'user_id,item_id,timestamp\nu1,i1,1\nu1,"i2,2\nu1,i3,3\n'}, "interactions.csv, line 3: a quote opened"),
    ],
    ids=["last-column", "swallows-an-item", "first-column", "last-line-no-eol", "after-a-multiline-value", "header", "interactions"],
)
def test_unclosed_csv_quote_names_file_and_line(tmp_path, files, expected):
    files.setdefault("interactions.csv", INTERACTIONS_6)
    d = layout(tmp_path / "d", files)
    with pytest.raises(DataError) as err:
        load_layout(d, ["title"], min_interactions=1)
    assert expected in str(err.value), str(err.value)
    assert str(d) in str(err.value)


@pytest.mark.parametrize(
    "items, titles",
    [
        (ITEMS_HEADER + 'i1,"Oak\ndesk lamp"\ni2,Walnut\ni3,Linen\n', ["Oak\ndesk lamp", "Walnut", "Linen"]),
        (ITEMS_HEADER + 'i1,"Lamp ""Oak"""\ni2,5" screen\ni3,"Linen, white"\n', ['Lamp "Oak"', '5" screen', "Linen, white"]),
    ],
    ids=["value-over-two-lines", "quotes-inside-values"],
)
def test_closed_quotes_still_load(tmp_path, items, titles):
    d = layout(tmp_path / "d", {"items.csv": items, "interactions.csv": INTERACTIONS_6})
    data = load_layout(d, ["title"], min_interactions=1)
    assert data.items.data.column("title").to_pylist() == titles


@pytest.mark.parametrize(
    "name, deep",
    [("items.jsonl", "[" * 100_000 + "]" * 100_000), ("items.jsonl", '{"a": ' * 100_000 + "1" + "}" * 100_000),
     ("interactions.jsonl", "[" * 100_000 + "]" * 100_000)],
    ids=["items-arrays", "items-objects", "interactions-arrays"],
)
def test_json_nested_too_deeply_names_file_and_line(tmp_path, name, deep):
    files = {
        "items.csv": None,
        "items.jsonl": '{"item_id": "i1", "title": "a"}\n{"item_id": "i2", "title": "b"}\n{"item_id": "i3", "title": "c"}\n',
    }
    if name == "items.jsonl":
        files["items.jsonl"] += '{"item_id": "i4", "title": "d", "x": ' + deep + "}\n"
        line = 4
    else:
        files["interactions.csv"] = None
        files["interactions.jsonl"] = '{"user_id": "u", "item_id": "i1"}\n{"user_id": "u", "item_id": "i2", "x": ' + deep + "}\n"
        line = 2
    d = layout(tmp_path / "d", files)
    with pytest.raises(DataError) as err:
        load_layout(d, ["title"], min_interactions=1)
    assert f"{d / name}, line {line}: cannot be read as JSON: nested too deeply" in str(err.value), str(err.value)
