"""docs/plugins.md cannot go stale: its table of built-ins lists exactly what the registries hold, and the
LoHa plugin it walks through is the module the plugin test installs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from crossrec_peft import registry

DOC = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"


def table() -> dict[str, tuple[str, list[str]]]:
    """registry attribute -> (kind, built-ins) from the doc's table rows."""
    rows = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].startswith("`") and cells[1].startswith("`"):
            rows[cells[0].strip("`")] = (cells[1].strip("`"), re.findall(r"`([^`]+)`", cells[4]))
    return rows


def builtins(reg) -> list[str]:
    """The registry's entries that the package itself defines (plugins and test registrations left out)."""
    return sorted(f"{e.name}:<arg>" if e.takes_argument else e.name for e in reg.entries()
                  if getattr(e.factory, "__module__", "").startswith("crossrec_peft."))


def test_every_registry_has_a_row():
    assert sorted(registry.REGISTRIES) == sorted(kind for kind, _ in table().values())


@pytest.mark.parametrize("kind", sorted(registry.REGISTRIES))
def test_builtins_column_matches_the_registry(kind):
    rows = {k: names for k, names in table().values()}
    listed = sorted(rows[kind])
    actual = builtins(registry.REGISTRIES[kind])
    assert listed == actual, f"docs/plugins.md, row '{kind}': lists {listed}, the registry holds {actual}"


def test_walkthrough_shows_the_tested_plugin():
    from tests.methods.test_plugin_method import PLUGIN

    text = DOC.read_text()
    block = text[text.index("# crossrec_loha.py\n") + len("# crossrec_loha.py\n"):]
    block = block[: block.index("```")]
    assert block.strip() == PLUGIN.strip()
