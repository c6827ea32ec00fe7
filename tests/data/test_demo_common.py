"""The shared demo-generator design: every domain's catalog is a declared `DemoSpec`, and a catalog's
content is pinned so that a change to a generator cannot slip past its `generator_version`."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from crossrec_peft.data.demo import common, ecommerce, video
from crossrec_peft.data.domains import get_domain

# sha256 of the tables' values and the images' pixels at 40 items, 30 users, seed 3. A generator whose output
# changes must bump its domain's generator_version (cached catalogs are keyed by it) and update this digest.
PINNED = {
    "ecommerce": (2, "ecb8807ebe4478320bd8b708874eee5781b1695bb7b52875d75071d774a4876d"),
    "video": (1, "834642eb3f218e192fa6ba6a65588f88d7cefc0e53ce26ddb10ffa76f61e5348"),
}


def catalog_digest(directory) -> str:
    h = hashlib.sha256()
    for table in ("items", "interactions"):
        df = pd.read_parquet(directory / f"{table}.parquet")
        h.update(json.dumps({c: df[c].tolist() for c in df.columns}, sort_keys=False).encode())
    for path in sorted((directory / "images").glob("*.png")):
        h.update(path.name.encode() + np.asarray(Image.open(path).convert("RGB")).tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("name", sorted(PINNED))
def test_catalog_content_is_pinned_to_its_generator_version(name, tmp_path):
    domain = get_domain(name)
    domain.generate(tmp_path, num_items=40, num_users=30, seed=3)
    version, digest = PINNED[name]
    assert (domain.generator_version, catalog_digest(tmp_path)) == (version, digest), (
        f"the {name} demo catalog changed: bump its generator_version in data/domains.py and update PINNED"
    )


@pytest.mark.parametrize("module", [ecommerce, video])
def test_specs_declare_their_columns_and_tastes(module):
    spec = module.SPEC
    assert spec.columns[0] == "item_id" and ("image" in spec.columns) == (spec.draw_image is not None)
    assert {a.name for a in spec.attributes} >= {spec.history.sticky_attribute}
    assert any(a.weight == 0 for a in spec.attributes) and any(a.weight > 0 for a in spec.attributes)
    assert set(get_domain(spec.name).text_fields) <= set(spec.columns)


def test_a_spec_whose_renderer_and_columns_disagree_fails(tmp_path):
    spec = dataclasses.replace(ecommerce.SPEC, columns=tuple(c for c in ecommerce.SPEC.columns if c != "brand"))
    with pytest.raises(ValueError, match="brand"):
        common.generate(spec, tmp_path, num_items=5, num_users=3, seed=0)


def test_history_shape_fields_can_be_set_one_by_one():
    rng = np.random.default_rng(0)
    attrs = {"category": rng.integers(0, 4, size=200)}
    attributes = [common.Attribute("category", 4, weight=3.0)]
    pop = np.ones(200)

    def draw(**kw):
        return common.sample_histories(np.random.default_rng(1), attrs, attributes, pop, num_users=20, **kw)

    by_field = draw(stickiness=1.0, min_length=6, max_length=10)
    by_shape = draw(shape=common.HistoryShape(stickiness=1.0, min_length=6, max_length=10))
    assert all(np.array_equal(a, b) for a, b in zip(by_field, by_shape))
    # Stickiness 1: every history stays within its first item's category (about 50 items each: never used up).
    assert all(len(set(attrs["category"][h])) == 1 for h in by_field)
    assert min(len(h) for h in by_field) >= 6
