"""Recommender.recommend_many (crossrec_peft/batched.py): many queries of several domains at once equal each
`recommend` alone; every bad query is refused with the field at fault."""

from __future__ import annotations

import pytest

from crossrec_peft import Recommender
from crossrec_peft.batched import Query, QueryError
from tests._packages import make_package
from tests.conftest import small_layout


@pytest.fixture(scope="module")
def packages(tiny_bert, tmp_path_factory):
    root = tmp_path_factory.mktemp("batched")
    data = small_layout(root / "data", num_items=16)
    return [make_package(tiny_bert, root / "pk", "shop", "lora", seed=1, data=data),
            make_package(tiny_bert, root / "pk", "bank", "ia3", seed=2, data=data)]


@pytest.fixture(scope="module")
def rec(packages):
    rec = Recommender(device="cpu")
    for package in packages:
        rec.load_adapter(package)
    return rec


QUERIES = [
    Query(["i1"], 3, "shop"),
    Query(["i2", "i3", "i4"], 5, "bank"),
    Query(["i5", "i5", "i6"], 16 - 2, "shop"),  # a repeated item counts twice in the user, once in exclusion
    Query(["i7", "i8"], 16, "bank", exclude_history=False),
    Query([f"i{j % 16}" for j in range(30)], 4, "shop"),  # longer than max_history: the recent window counts
]


@pytest.mark.parametrize("size", [1, 2, len(QUERIES)])
def test_many_equals_each_alone(rec, size):
    queries = QUERIES[:size]
    many = rec.recommend_many(queries)
    for q, got in zip(queries, many):
        alone = rec.recommend(list(q.history), k=q.k, domain=q.domain, exclude_history=q.exclude_history)
        assert [i for i, _ in got] == [i for i, _ in alone]
        assert [s for _, s in got] == pytest.approx([s for _, s in alone], abs=1e-5)
        if q.exclude_history:
            assert not set(q.history) & {i for i, _ in got}


def test_new_items_in_histories_encode_like_catalog_items(rec):
    catalog = rec._catalog(rec._get("shop"))
    fields = catalog.columns(["title", "category"], [catalog.rows["i3"]])
    as_fields = {"title": fields["title"][0], "category": fields["category"][0]}
    by_id, by_fields = rec.recommend_many([{"history": ["i1", "i3"], "k": 5, "domain": "shop", "exclude_history": False},
                                           {"history": ["i1", as_fields], "k": 5, "domain": "shop", "exclude_history": False}])
    assert [i for i, _ in by_id] == [i for i, _ in by_fields]
    assert [s for _, s in by_id] == pytest.approx([s for _, s in by_fields], abs=1e-5)


@pytest.mark.parametrize("query, field, kind, named", [
    (Query(["i1"], 3, "shp"), "domain", "unknown_domain", "Did you mean 'shop'?"),
    (Query([], 3, "shop"), "history", "empty_history", "empty history"),
    (Query(["i1", "x1", "x2", "x1"], 3, "shop"), "history", "unknown_item", "'x1', 'x2'"),
    (Query(["i1"], 0, "shop"), "k", "k_out_of_range", "from 1 to 16"),
    (Query(["i1"], -2, "shop"), "k", "k_out_of_range", "got -2"),
    (Query(["i1"], 17, "shop"), "k", "k_out_of_range", "got 17"),
    (Query(["i1"], True, "shop"), "k", "k_out_of_range", "got True"),
])
def test_bad_queries_name_their_field(rec, query, field, kind, named):
    with pytest.raises(QueryError) as info:
        rec.recommend_many([QUERIES[0], query])
    assert info.value.field == field and info.value.kind == kind and named in str(info.value)


@pytest.mark.parametrize("query, kind", [
    (Query(["i1", "x1"], 3, "shop"), "unknown_item"),
    (Query([], 3, "shop"), "empty_history"),
])
def test_a_bad_history_is_refused_before_the_catalog_is_encoded(packages, query, kind):
    """The index (every catalog item through the backbone: minutes for a real catalog on a CPU) is built on a
    domain's first query; a history it could never rank is refused before that."""
    fresh = Recommender(device="cpu")
    fresh.load_adapter(packages[0])
    with pytest.raises(QueryError) as info:
        fresh.recommend_many([query])
    assert info.value.kind == kind and fresh._domains["shop"].index is None
    assert fresh.recommend_many([QUERIES[0]])[0]
