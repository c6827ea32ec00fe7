"""The wheel ships the recipes and the console script."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_contains_recipes_and_entry_point(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = tmp_path.glob("crossrec_peft-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {Path(n).name for n in names if n.startswith("crossrec_peft/recipes/")}
    assert shipped == {p.name for p in (ROOT / "recipes").glob("*.yaml")} and "ecommerce.yaml" in shipped
    assert "crossrec_peft/registry.py" in names
    assert not any(n.startswith(("adapters/", "tests/")) for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "crossrec-peft = crossrec_peft.cli:main" in text
