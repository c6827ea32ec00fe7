"""The Python API: loading domains onto one backbone, swapping, encoding, recommending; the recommend CLI."""

from __future__ import annotations

import json

import pytest
import torch

from crossrec_peft import Recommender
from crossrec_peft.cli import main
from crossrec_peft.errors import ConfigError, DataError, PackageError
from crossrec_peft.package import MANIFEST
from tests._packages import hybrid_choice, make_package, write_manifest
from tests.conftest import small_layout


@pytest.fixture(scope="module")
def packages(tiny_bert, tmp_path_factory):
    root = tmp_path_factory.mktemp("rec")
    data = small_layout(root / "data", num_items=16)
    return {
        "shop": make_package(tiny_bert, root / "pk", "shop", "lora", seed=1, data=data),
        "bank": make_package(tiny_bert, root / "pk", "bank", "bottleneck", seed=2, data=data),
        "nodata": make_package(tiny_bert, root / "pk", "nodata", "ia3", seed=3),
        "data": data,
    }


@pytest.fixture(scope="module")
def rec(packages, tmp_path_factory):
    rec = Recommender.from_pretrained(packages["shop"], device="cpu")
    rec.load_adapter(packages["bank"])
    return rec


def test_domains_and_swap(rec, packages):
    assert rec.domains == ["shop", "bank"] and rec.domain == "shop"
    rec.set_domain("bank")
    assert rec.domain == "bank"
    rec.set_domain("shop")
    with pytest.raises(ConfigError, match="Unknown domain 'bnak'. Did you mean 'bank'"):
        rec.set_domain("bnak")
    with pytest.raises(PackageError, match="Domain 'bank' is already loaded"):
        rec.load_adapter(packages["bank"])
    assert rec.manifest("bank")["domain"] == "bank"


def test_second_domain_reuses_the_backbone(packages):
    rec = Recommender(device="cpu")
    rec.load_adapter(packages["shop"])
    backbone = rec._domains["shop"].model.modalities["text"].backbone
    rec.load_adapter(packages["shop"], name="shop-copy")
    assert rec._domains["shop-copy"].model.modalities["text"].backbone is backbone
    users = rec.encode_users([["i1", "i2"]] * 2, domains=["shop", "shop-copy"])
    assert torch.allclose(users[0], users[1], atol=1e-6)


def test_domains_differing_only_in_max_length_share_the_backbone(packages, tiny_bert, tmp_path):
    """max_length only changes tokenization: a domain with another max_length still adds only its adapter,
    and still tokenizes (truncates) at its own max_length, scoring exactly as when loaded alone."""
    short = make_package(tiny_bert, tmp_path, "short", "lora", seed=4, data=packages["data"], max_length=5)
    rec = Recommender(device="cpu")
    rec.load_adapter(packages["shop"])
    rec.load_adapter(short)
    assert len(rec._backbones) == 1
    encoders = {d: rec._domains[d].model.modalities["text"].backbone for d in ("shop", "short")}
    assert encoders["shop"].options.max_length == 16 and encoders["short"].options.max_length == 5
    assert encoders["short"].model is encoders["shop"].model  # the same weights, loaded once
    items = ["i1", "i2", "i3", "i4"]
    alone = Recommender.from_pretrained(short, device="cpu").encode_items(items)
    torch.testing.assert_close(rec.encode_items(items, domains="short"), alone)
    shop_alone = Recommender(device="cpu")
    shop_alone.load_adapter(packages["shop"])
    mixed = rec.encode_items(items * 2, domains=["short"] * 4 + ["shop"] * 4)
    torch.testing.assert_close(mixed[:4], alone)
    torch.testing.assert_close(mixed[4:], shop_alone.encode_items(items))


def test_recommend_is_the_top_of_all_scores(rec, packages):
    history = ["i1", "i2", "i3"]
    top = rec.recommend(history, k=5, domain="bank")
    assert len(top) == 5 and not {i for i, _ in top} & set(history)
    scores = [s for _, s in top]
    assert scores == sorted(scores, reverse=True)
    catalog = [f"i{i}" for i in range(16)]
    user = rec.encode_users([history], domains="bank")[0]
    items = rec.encode_items(catalog, domains="bank")
    brute = sorted(((catalog[i], float(s)) for i, s in enumerate(items @ user) if catalog[i] not in history), key=lambda x: -x[1])[:5]
    assert [i for i, _ in top] == [i for i, _ in brute]
    assert torch.allclose(torch.tensor(scores), torch.tensor([s for _, s in brute]), atol=1e-5)
    # The swap matters: another domain ranks differently.
    assert rec.recommend(history, k=5, domain="shop") != top
    kept = rec.recommend(history, k=16, domain="bank", exclude_history=False)
    assert {i for i, _ in kept} == set(catalog)


def test_score_matches_encoders(rec):
    histories, candidates = [["i1", "i2"], ["i5"]], [["i3", "i4"], ["i6", "i7"]]
    scores = rec.score(histories, candidates, domains=["shop", "bank"])
    for row, domain in enumerate(["shop", "bank"]):
        user = rec.encode_users([histories[row]], domains=domain)[0]
        items = rec.encode_items(candidates[row], domains=domain)
        assert torch.allclose(scores[row], items @ user, atol=1e-5)


def test_items_by_fields_equal_items_by_id(rec, packages):
    by_id = rec.encode_items(["i3"], domains="shop")
    by_fields = rec.encode_items([{"title": "product 3 red lamp", "category": "c0"}], domains="shop")
    assert torch.allclose(by_id, by_fields, atol=1e-6)
    with pytest.raises(DataError, match="has no text"):
        rec.encode_items([{"title": None, "category": None}], domains="shop")


def test_unknown_history_ids_are_named(rec):
    with pytest.raises(DataError, match=r"Unknown item ids in the history for domain 'shop': 'nope', 'zzz'"):
        rec.recommend(["i1", "nope", "zzz"], domain="shop")


@pytest.mark.parametrize("history, message", [
    (["i1", "ghost"], "Unknown item ids in the history for domain 'shop': 'ghost'"),
    ([], "An empty history for domain 'shop'"),
])
def test_a_bad_history_fails_before_the_catalog_is_encoded(packages, history, message):
    """The index (every catalog item through the backbone: minutes for a real catalog on a CPU) is built on
    first use; a history it could never rank is refused before that, not after."""
    fresh = Recommender.from_pretrained(packages["shop"], device="cpu")
    with pytest.raises(DataError, match=message):
        fresh.recommend(history, domain="shop")
    assert fresh._domains["shop"].index is None
    assert fresh.recommend(["i1"], domain="shop", k=3)  # and a good one then builds it and ranks
    assert fresh._domains["shop"].index is not None


def test_catalog_is_needed(packages):
    rec = Recommender.from_pretrained(packages["nodata"], device="cpu")
    with pytest.raises(DataError, match="Domain 'nodata' has no item catalog"):
        rec.recommend(["i1"])
    rec.set_catalog(packages["data"])
    assert len(rec.recommend(["i1"], k=3)) == 3


def test_other_backbone_refused_on_a_shared_one(packages, tmp_path):
    import shutil

    copy = tmp_path / "bank"
    shutil.copytree(packages["bank"], copy)
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["modalities"]["text"]["backbone"]["sha256"] = "0" * 64
    write_manifest(copy, manifest)
    rec = Recommender.from_pretrained(packages["shop"], device="cpu")
    with pytest.raises(PackageError, match="trained on backbone"):
        rec.load_adapter(copy, name="other")
    assert rec.domains == ["shop"]


def test_hub_address_offline():
    with pytest.raises(PackageError, match="hf://"):
        Recommender.from_pretrained("hf://crossrec-test/no-such-adapter")


def test_recommend_cli(packages, capsys):
    args = ["recommend", str(packages["shop"]), str(packages["bank"]), "--domain", "bank", "--history", "i1", "i2", "-k", "3"]
    assert main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["domain"] == "bank" and len(out["items"]) == 3
    rec = Recommender.from_pretrained(packages["bank"], device="cpu")
    assert [x["item_id"] for x in out["items"]] == [i for i, _ in rec.recommend(["i1", "i2"], k=3)]
    assert main(args) == 0
    assert "bank: top 3" in capsys.readouterr().out


def test_recommend_cli_errors(packages, capsys):
    assert main(["recommend", str(packages["shop"]), "--history", "i1", "ghost"]) == 2
    err = capsys.readouterr().err
    assert "ghost" in err and "Traceback" not in err
    assert main(["recommend", str(packages["shop"]), str(packages["bank"]), "--history", "i1"]) == 2
    assert "choose one with --domain" in capsys.readouterr().err


def test_demo_catalog_is_regenerated(tiny_bert, tmp_path):
    """A package trained on a demo catalog that is not on this machine: the same catalog is generated again."""
    from crossrec_peft.data.domains import get_domain

    version = get_domain("ecommerce").generator_version
    package = make_package(tiny_bert, tmp_path, "shop", "lora", data=None)
    manifest = json.loads((package / MANIFEST).read_text())
    manifest["data"] = {"source": f"/elsewhere/demo/ecommerce-v{version}-i60-u40-s0"}
    write_manifest(package, manifest)
    rec = Recommender.from_pretrained(package, device="cpu")
    catalog = rec._catalog(rec._domains["shop"])
    assert catalog.directory.name == f"ecommerce-v{version}-i60-u40-s0" and len(catalog.item_ids) == 60
    top = rec.recommend(catalog.item_ids[:2], k=3)
    assert len(top) == 3 and all(i in catalog.rows for i, _ in top)


# -- a package whose run chose a hybrid ranking (crossrec_peft/hybrid.py) -------------------------------------------
HYBRID_WEIGHT = 3.0


@pytest.fixture(scope="module")
def hybrid(tiny_bert, packages, tmp_path_factory):
    """A package exported with co-occurrence neighbours (weight 3: large enough to reorder the catalog) and
    its neighbours on the catalog's rows, the reference for the brute-force checks."""
    catalog = [f"i{i}" for i in range(16)]
    choice = hybrid_choice(16, HYBRID_WEIGHT)
    package = make_package(tiny_bert, tmp_path_factory.mktemp("hybrid"), "hyb", "lora", seed=5, data=packages["data"], hybrid=choice)
    return {"package": package, "catalog": catalog, "term": choice.neighbours.on_catalog(catalog)}


def brute_hybrid(rec, hybrid, history: list[str], *, weight: float) -> list[tuple[str, float]]:
    catalog = hybrid["catalog"]
    scores = rec.encode_items(catalog) @ rec.encode_users([history])[0]
    scores = scores + weight * hybrid["term"].scores([[catalog.index(h) for h in history]])[0]
    return sorted(((catalog[i], float(s)) for i, s in enumerate(scores) if catalog[i] not in history), key=lambda x: -x[1])


@pytest.mark.parametrize("history", [["i1", "i2", "i3"], ["i4"], ["i5", "i5", "i9"]])
def test_a_hybrid_package_ranks_with_its_cooccurrence_term(hybrid, history):
    rec = Recommender.from_pretrained(hybrid["package"], device="cpu")
    assert rec.manifest()["hybrid"]["weight"] == HYBRID_WEIGHT and rec.manifest()["sizes"]["hybrid_bytes"] > 0
    top = rec.recommend(history, k=6)
    brute = brute_hybrid(rec, hybrid, history, weight=HYBRID_WEIGHT)[:6]
    assert [i for i, _ in top] == [i for i, _ in brute]
    torch.testing.assert_close(torch.tensor([s for _, s in top]), torch.tensor([s for _, s in brute]), atol=1e-3, rtol=0)
    # The same scores from score(), recommend_many() and explain(), and the model alone without the term.
    candidates = [i for i, _ in top]
    torch.testing.assert_close(rec.score([history], candidates)[0], torch.tensor([s for _, s in top]), atol=1e-5, rtol=0)
    many = rec.recommend_many([{"history": history, "k": 6}])[0]
    assert [i for i, _ in many] == candidates and [s for _, s in many] == pytest.approx([s for _, s in top], abs=1e-5)
    explained = rec.explain(history, candidates[0])
    assert explained["score"] == pytest.approx(top[0][1], abs=1e-5)
    assert explained["score"] == pytest.approx(explained["model_score"] + explained["cooccurrence"]["contribution"], abs=1e-6)
    alone = Recommender(device="cpu")
    alone.load_adapter(hybrid["package"], hybrid=False)
    plain = brute_hybrid(alone, hybrid, history, weight=0.0)[:6]
    assert [i for i, _ in alone.recommend(history, k=6)] == [i for i, _ in plain]


def test_a_hybrid_ranking_changes_the_order(hybrid):
    """The fixture's weight reorders the top: otherwise the checks above could not tell the term is applied."""
    rec = Recommender.from_pretrained(hybrid["package"], device="cpu")
    history = ["i1", "i2", "i3"]
    with_term = [i for i, _ in brute_hybrid(rec, hybrid, history, weight=HYBRID_WEIGHT)[:6]]
    assert with_term != [i for i, _ in brute_hybrid(rec, hybrid, history, weight=0.0)[:6]]


def test_a_new_history_item_counts_in_the_hybrid_mean(hybrid):
    """A history item given by its fields has no co-occurrences: it adds nothing to the term but counts in
    its mean, in recommend_many and score alike."""
    rec = Recommender.from_pretrained(hybrid["package"], device="cpu")
    catalog, term = hybrid["catalog"], hybrid["term"]
    history = ["i1", "i2", {"title": "a brand new lamp", "category": "c1"}]
    user = rec.encode_users([history])[0]
    scores = rec.encode_items(catalog) @ user + HYBRID_WEIGHT * term.scores([[1, 2, -1]])[0]
    brute = sorted(((catalog[i], float(s)) for i, s in enumerate(scores) if catalog[i] not in ("i1", "i2")), key=lambda x: -x[1])[:5]
    got = rec.recommend_many([{"history": history, "k": 5}])[0]
    assert [i for i, _ in got] == [i for i, _ in brute]
    torch.testing.assert_close(rec.score([history], [i for i, _ in brute])[0], torch.tensor([s for _, s in brute]), atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def recency(tiny_bert, packages, tmp_path_factory):
    """A hybrid package whose run chose recency decay 0.5: the last history item counts twice the one before."""
    choice = hybrid_choice(16, HYBRID_WEIGHT, decay=0.5)
    package = make_package(tiny_bert, tmp_path_factory.mktemp("recency"), "rec", "lora", seed=5, data=packages["data"], hybrid=choice)
    return {"package": package, "catalog": [f"i{i}" for i in range(16)], "choice": choice}


@pytest.mark.parametrize("history", [["i1", "i2", "i3"], ["i3", "i2", "i1"], ["i5", {"title": "a brand new lamp", "category": "c1"}, "i9", "i5"]])
def test_a_hybrid_package_weights_recent_items_by_its_decay(recency, history):
    """recommend_many, score and explain rank as the model plus the term with each history item weighted
    0.5^(steps from its last occurrence to the end), written out by hand; an order changes the ranking."""
    rec = Recommender.from_pretrained(recency["package"], device="cpu")
    assert rec.manifest()["hybrid"]["decay"] == 0.5
    catalog, neighbours = recency["catalog"], recency["choice"].neighbours
    plain = neighbours.on_catalog(catalog)  # decay 1: each history item's row of similarities, one at a time
    ages = {h: len(history) - 1 - max(p for p, x in enumerate(history) if x == h) for h in history if isinstance(h, str)}
    fields = sum(isinstance(h, dict) for h in history)  # the new item is third from the end: 0.25
    total = sum(0.5 ** a for a in ages.values()) + 0.25 * fields
    term = sum(0.5 ** a / total * plain.scores([[catalog.index(h)]])[0] for h, a in ages.items())
    user = rec.encode_users([history])[0]
    scores = rec.encode_items(catalog) @ user + HYBRID_WEIGHT * term
    brute = sorted(((catalog[i], float(s)) for i, s in enumerate(scores) if catalog[i] not in ages), key=lambda x: -x[1])[:6]
    many = rec.recommend_many([{"history": history, "k": 6}])[0]
    assert [i for i, _ in many] == [i for i, _ in brute]
    assert [s for _, s in many] == pytest.approx([s for _, s in brute], abs=1e-3)  # the model's paths differ by ~1e-4
    torch.testing.assert_close(rec.score([history], [i for i, _ in many])[0], torch.tensor([s for _, s in many]), atol=1e-5, rtol=0)
    why = rec.explain(history, many[0][0])
    assert why["score"] == pytest.approx(many[0][1], abs=1e-5)
    assert {h["item_id"]: h["share"] for h in why["cooccurrence"]["history"]} == pytest.approx(
        {h["item_id"]: 0.5 ** ages[h["item_id"]] / total for h in why["cooccurrence"]["history"]})
    if all(isinstance(h, str) for h in history):
        assert [i for i, _ in rec.recommend(history, k=6)] == [i for i, _ in brute]


def test_recency_changes_what_the_hybrid_ranks(recency):
    """Two orders of the same history rank differently: otherwise the checks above could not tell."""
    rec = Recommender.from_pretrained(recency["package"], device="cpu")
    first, second = rec.score([["i1", "i2", "i3"], ["i3", "i2", "i1"]], recency["catalog"][4:])
    assert not torch.allclose(first - rec.encode_users([["i1", "i2", "i3"]])[0] @ rec.encode_items(recency["catalog"][4:]).T,
                              second - rec.encode_users([["i3", "i2", "i1"]])[0] @ rec.encode_items(recency["catalog"][4:]).T, atol=1e-4)


def test_faiss_search_ranks_the_hybrid_as_exact_search(hybrid):
    pytest.importorskip("faiss")
    rec = Recommender.from_pretrained(hybrid["package"], device="cpu")
    for history in (["i1", "i2", "i3"], ["i7"]):
        exact, approx = rec.recommend(history, k=5), rec.recommend(history, k=5, search="faiss")
        assert [i for i, _ in approx] == [i for i, _ in exact]


def test_a_hybrid_file_the_manifest_does_not_list_is_refused(hybrid, tmp_path):
    import shutil

    copy = tmp_path / "hyb"
    shutil.copytree(hybrid["package"], copy)
    manifest = json.loads((copy / MANIFEST).read_text())
    del manifest["files"][manifest["hybrid"]["file"]]
    write_manifest(copy, manifest)
    with pytest.raises(PackageError, match="'hybrid.file' names 'hybrid_neighbours.safetensors', which 'files' does not list"):
        Recommender.from_pretrained(copy, device="cpu")


@pytest.fixture(scope="module")
def borrowing(tiny_bert, packages, tmp_path_factory):
    """A hybrid package whose neighbours were fitted on i0 .. i9 only: i10 .. i15 were never bought, so they
    borrow 2 x the term of their 3 nearest items by the model's item vectors."""
    choice = hybrid_choice(16, HYBRID_WEIGHT, bought=10, borrow=3, borrow_weight=2.0)
    package = make_package(tiny_bert, tmp_path_factory.mktemp("borrow"), "bor", "lora", seed=5, data=packages["data"], hybrid=choice)
    return {"package": package, "catalog": [f"i{i}" for i in range(16)], "choice": choice}


@pytest.mark.parametrize("history", [["i1", "i2", "i3"], ["i4", "i12"]])
def test_items_never_bought_borrow_their_neighbours_term(borrowing, history):
    """recommend, score, recommend_many and explain rank as the model plus the term written out by hand, where
    every item no neighbour list holds takes 2 x the share-weighted term of its 3 nearest items."""
    from tests._packages import with_borrowing

    rec = Recommender.from_pretrained(borrowing["package"], device="cpu")
    hybrid = rec.manifest()["hybrid"]
    assert (hybrid["borrow"], hybrid["borrow_weight"]) == (3, 2.0)
    catalog, neighbours = borrowing["catalog"], borrowing["choice"].neighbours
    items, user = rec.encode_items(catalog), rec.encode_users([history])[0]
    own = neighbours.on_catalog(catalog).scores([[catalog.index(h) for h in history]])
    scored = torch.bincount(neighbours.index, minlength=16) > 0
    assert not scored[10:].any()
    term = with_borrowing(own, items, scored, 3, 2.0)[0]
    assert float(term[10:].abs().sum()) > 0  # the never-bought items did borrow
    scores = items @ user + HYBRID_WEIGHT * term
    brute = sorted(((catalog[i], float(s)) for i, s in enumerate(scores) if catalog[i] not in history), key=lambda x: -x[1])[:8]
    top = rec.recommend(history, k=8)
    assert [i for i, _ in top] == [i for i, _ in brute]
    torch.testing.assert_close(torch.tensor([s for _, s in top]), torch.tensor([s for _, s in brute]), atol=1e-3, rtol=0)
    candidates = [i for i, _ in top]
    torch.testing.assert_close(rec.score([history], candidates)[0], torch.tensor([s for _, s in top]), atol=1e-5, rtol=0)
    many = rec.recommend_many([{"history": history, "k": 8}])[0]
    assert [s for _, s in many] == pytest.approx([s for _, s in top], abs=1e-5)
    never = next(i for i in candidates if int(i[1:]) >= 10)
    why = rec.explain(history, never)["cooccurrence"]
    assert why["borrow_weight"] == 2.0 and len(why["borrowed_from"]) <= 3
    assert sum(b["share"] for b in why["borrowed_from"]) == pytest.approx(1.0) and why["history"] == []
    assert "borrowed_from" not in rec.explain(history, "i5")["cooccurrence"]


def test_recommend_cli_explains_a_hybrid_score(hybrid, capsys):
    args = ["recommend", str(hybrid["package"]), "--history", "i1", "i2", "i3", "-k", "4", "--explain"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "co-occurrence" in out and "bought with" in out
    assert main([*args, "--json"]) == 0
    items = json.loads(capsys.readouterr().out)["items"]
    top = Recommender.from_pretrained(hybrid["package"], device="cpu").recommend(["i1", "i2", "i3"], k=4)
    assert [x["item_id"] for x in items] == [i for i, _ in top]
    for x in items:
        why = x["explanation"]
        assert why["model_score"] + why["cooccurrence"]["contribution"] == pytest.approx(x["score"], abs=1e-5)
