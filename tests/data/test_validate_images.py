"""`data validate` checks images as a run does (issue 11, group 7): corrupt, truncated, 0-byte, over-limit
and null images and paths outside the data directory fail validate with the run's own message; outside
paths are allowed only when asked, in validate and in runs."""

from __future__ import annotations

import pytest

from crossrec_peft.cli import main
from tests.conftest import small_layout, write_jsonl


def set_image(directory, image):
    """Item i3's image: a value for the `image` field, after `image` callables write what they need."""
    rows = [line for line in (directory / "items.jsonl").read_text().splitlines()]
    import json

    items = [json.loads(r) for r in rows]
    items[3]["image"] = image(directory) if callable(image) else image
    write_jsonl(directory / "items.jsonl", items)


def corrupt(d):
    (d / "img" / "bad.png").write_bytes(b"GIF89a, not really: " + b"garbage" * 20)
    return "img/bad.png"


def truncated(d):
    data = (d / "img" / "i3.png").read_bytes()
    (d / "img" / "cut.png").write_bytes(data[: len(data) // 2])
    return "img/cut.png"


def empty(d):
    (d / "img" / "empty.png").write_bytes(b"")
    return "img/empty.png"


def huge(d):
    from PIL import Image

    Image.new("1", (8000, 7000)).save(d / "img" / "huge.png")  # 56 Mpx, over the 50 Mpx limit, small on disk
    return "img/huge.png"


def outside(d):
    return "../../../../etc/passwd"


@pytest.mark.parametrize(
    "image, expected",
    [(corrupt, "not a readable image"), (truncated, "unreadable or truncated"), (empty, "not a readable image"),
     (huge, "too large"), (None, "no image given"), (outside, "outside the data directory")],
    ids=["corrupt", "truncated", "zero-byte", "over-limit", "null", "outside"],
)
def test_validate_refuses_what_the_run_refuses(tmp_path, capsys, image, expected):
    d = small_layout(tmp_path / "data")
    set_image(d, image)
    assert main(["data", "validate", str(d)]) == 2
    err = capsys.readouterr().err
    assert "items.jsonl, line 4, field 'image'" in err and "item 'i3'" in err and expected in err, err
    assert main(["data", "validate", str(d), "--no-images"]) == 0


def test_outside_images_allowed_when_asked(tmp_path, capsys):
    d = small_layout(tmp_path / "data")
    elsewhere = small_layout(tmp_path / "elsewhere")
    set_image(d, lambda _: str(elsewhere / "img" / "i3.png"))  # an absolute path outside the data directory
    assert main(["data", "validate", str(d)]) == 2
    assert "outside the data directory" in capsys.readouterr().err
    assert main(["data", "validate", str(d), "--allow-outside-images"]) == 0
    set_image(d, lambda _: "../elsewhere/img/i3.png")
    assert main(["data", "validate", str(d), "--allow-outside-images"]) == 0


def test_runs_refuse_outside_images_unless_allowed(tmp_path):
    from crossrec_peft.backbones.base import FeatureContext
    from crossrec_peft.backbones.clip import check_images
    from crossrec_peft.errors import DataError

    d = small_layout(tmp_path / "data")
    values = ["img/i0.png", "../../../../etc/passwd"]
    with pytest.raises(DataError, match="item 'b'.*outside the data directory.*data.allow_outside_images=true"):
        check_images(values, FeatureContext(item_ids=["a", "b"], root=d))
    outside_file = small_layout(tmp_path / "other") / "img" / "i1.png"
    paths = check_images(["img/i0.png", str(outside_file)], FeatureContext(item_ids=["a", "b"], root=d, allow_outside=True))
    assert paths == [d / "img" / "i0.png", outside_file]
