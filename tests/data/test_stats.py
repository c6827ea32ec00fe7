"""`validate_layout`, `layout_stats` and `plot_stats` on hand-made standard layouts: exact counts,
distributions, text lengths and image coverage; every validation problem names file, row and field."""

from __future__ import annotations

import pytest

from crossrec_peft.data.stats import format_stats, layout_stats, plot_stats, public, validate_layout
from crossrec_peft.errors import DataError
from tests.conftest import render_images, write_jsonl


def hand_made(d, *, images=("img/a.png", "img/missing.png", "https://example.com/c.png", None)):
    """4 items (titles of 3, 5, 8 and 13 characters), 3 users with 4, 3 and 1 interactions."""
    render_images(d, ["img/a.png"])
    titles = ["abc", "abcde", "abcd efg", "abcdefghijklm"]
    items = [{"item_id": f"i{i}", "title": t, "category": "c"} for i, t in enumerate(titles)]
    for item, image in zip(items, images):
        if image is not None:
            item["image"] = image
    write_jsonl(d / "items.jsonl", items)
    rows = [("a", 0, 1), ("a", 1, 2), ("a", 0, 3), ("a", 2, 4), ("b", 1, 5), ("b", 2, 6), ("b", 3, 7), ("c", 0, 8)]
    write_jsonl(d / "interactions.jsonl", [{"user_id": u, "item_id": f"i{i}", "timestamp": 1_700_000_000 + t} for u, i, t in rows])
    return d


def test_stats_counts_and_distributions(tmp_path):
    stats = layout_stats(hand_made(tmp_path / "d"))
    assert (stats["items"], stats["users"], stats["interactions"]) == (4, 3, 8)
    # a repeats i0: 7 distinct (user, item) pairs out of 3 x 4.
    assert stats["distinct_user_item_pairs"] == 7
    assert stats["density"] == pytest.approx(7 / 12) and stats["sparsity"] == pytest.approx(5 / 12)
    h = stats["history_length"]
    assert (h["min"], h["median"], h["max"], h["mean"]) == (1, 3.0, 4, pytest.approx(8 / 3))
    assert stats["users_below_3"] == 1
    assert stats["item_interactions"]["max"] == 3 and stats["items_without_interactions"] == 0
    assert set(stats["text"]) == {"title", "category"}  # string columns other than item_id and image
    title = stats["text"]["title"]["chars"]
    assert (title["min"], title["max"], title["mean"]) == (3, 13, pytest.approx((3 + 5 + 8 + 13) / 4))
    img = stats["image"]
    assert (img["given"], img["existing"], img["missing"], img["urls"]) == (3, 1, 1, 1)
    assert img["coverage"] == pytest.approx(0.25)
    assert stats["time"] == {"first": 1_700_000_001.0, "last": 1_700_000_008.0}
    text = format_stats(stats)
    assert "25.0% of items have an existing file" in text and "2023-11-14T22:13:21Z" in text
    assert "_arrays" not in public(stats)


def test_stats_without_images_or_timestamps(tmp_path):
    d = tmp_path / "d"
    write_jsonl(d / "items.jsonl", [{"item_id": "x", "title": "one"}, {"item_id": "y", "title": "two"}])
    write_jsonl(d / "interactions.jsonl", [{"user_id": "u", "item_id": "x"}, {"user_id": "u", "item_id": "y"}])
    stats = layout_stats(d)
    assert stats["image"]["column"] is False and stats["image"]["coverage"] == 0.0
    assert stats["time"] is None and stats["density"] == 1.0
    assert "no image column" in format_stats(stats) and "timestamps: none" in format_stats(stats)


def test_plot_is_a_png_with_one_panel_per_distribution(tmp_path):
    from PIL import Image

    stats = layout_stats(hand_made(tmp_path / "d"))
    path = plot_stats(stats, tmp_path / "out" / "stats.png")
    with Image.open(path) as im:
        assert im.format == "PNG"
        # history length + title + category: three panels of 5 inches at 100 dpi.
        assert im.size == (1500, 360)


def test_validate_accepts_clean_data(tmp_path):
    d = hand_made(tmp_path / "d", images=("img/a.png", "img/a.png", "img/a.png", "img/a.png"))
    data = validate_layout(d, min_interactions=1)
    assert len(data.item_ids) == 4


def test_validate_names_file_row_and_field(tmp_path):
    d = hand_made(tmp_path / "d")
    with pytest.raises(DataError, match=r"user 'c' has 1 interaction"):
        validate_layout(d)
    with pytest.raises(DataError) as err:
        validate_layout(d, min_interactions=1)
    assert "items.jsonl, line 2, field 'image'" in str(err.value) and "missing.png" in str(err.value)
    validate_layout(d, min_interactions=1, images=False)
    write_jsonl(d / "items.jsonl", [{"item_id": "i0", "title": "a"}, {"item_id": "i1", "title": "  "},
                                    {"item_id": "i2", "title": "c"}, {"item_id": "i3", "title": ""}])
    with pytest.raises(DataError, match=r"items.jsonl, line 2, field 'title': empty text \(item 'i1'\). \(1 more items"):
        validate_layout(d, min_interactions=1)
    with pytest.raises(DataError, match="missing column 'description'"):
        validate_layout(d, fields=["description"], min_interactions=1)


def test_validate_checks_the_users_table(tmp_path):
    d = hand_made(tmp_path / "d")
    write_jsonl(d / "users.jsonl", [{"user_id": "a", "risk": 1}, {"user_id": "b"}, {"user_id": "a"}])
    with pytest.raises(DataError, match=r"users.jsonl, line 3, field 'user_id': duplicate user id 'a' \(first at line 1\)"):
        validate_layout(d, min_interactions=1, images=False)
    write_jsonl(d / "users.jsonl", [{"customer": "a"}])
    with pytest.raises(DataError, match=r"users.jsonl: missing column 'user_id'"):
        validate_layout(d, min_interactions=1, images=False)
