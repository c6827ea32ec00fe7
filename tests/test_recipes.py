from __future__ import annotations

import pytest

from crossrec_peft import recipes
from crossrec_peft.errors import ConfigError


def test_ls_lists_descriptions():
    listed = dict(recipes.describe())
    assert "ecommerce" in listed and "LoRA" in listed["ecommerce"]


def test_cp_copies_and_never_overwrites(tmp_path):
    dest = recipes.copy("ecommerce", tmp_path)
    assert dest == tmp_path / "ecommerce.yaml"
    assert dest.read_text() == recipes.path("ecommerce").read_text()
    with pytest.raises(ConfigError, match="already exists"):
        recipes.copy("ecommerce", dest)


def test_unknown_recipe_suggests():
    with pytest.raises(ConfigError, match="Did you mean 'ecommerce'"):
        recipes.path("ecomerce")
