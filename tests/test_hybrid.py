"""The co-occurrence term of the hybrid ranking (crossrec_peft/hybrid.py) against brute-force references."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from crossrec_peft.baselines.itemknn import itemknn_scorer
from crossrec_peft.errors import PackageError
from crossrec_peft.hybrid import (Borrowing, HybridChoice, HybridRanking, Neighbours, best_decay, best_weight, history_rows,
                                  hybrid_scorer, recency_shares)
from tests._packages import with_borrowing


def sequences(seed: int, users: int, items: int, longest: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, items, size=rng.integers(1, longest + 1)) for _ in range(users)]


def dense_cosine(seqs: list[np.ndarray], items: int) -> torch.Tensor:
    """sim(i, j) = C_ij / sqrt(C_ii C_jj) from the binary users x items matrix, written out densely."""
    x = torch.zeros(len(seqs), items)
    for u, s in enumerate(seqs):
        x[u, torch.as_tensor(s)] = 1.0
    c = x.T @ x
    n = c.diag().clamp(min=1).sqrt()
    sim = c / n.view(-1, 1) / n.view(1, -1)
    sim.fill_diagonal_(0.0)
    return sim


def kept_similarities(seqs, items: int, k: int) -> torch.Tensor:
    """sim(i, .) kept to i's k largest positive similarities, densely: row i is item i's neighbour list."""
    sim = dense_cosine(seqs, items)
    top = torch.topk(sim, k, dim=1)
    return torch.zeros_like(sim).scatter_(1, top.indices, top.values.clamp(min=0))


def reference(seqs, items: int, k: int, histories, decay: float = 1.0) -> torch.Tensor:
    """Mean over each history's distinct items of sim(i, .) kept to i's k largest positive similarities; with
    `decay`, item i weighted decay^(steps from its last occurrence to the end), the weights summing to 1."""
    kept = kept_similarities(seqs, items, k)
    out = torch.zeros(len(histories), items)
    for r, h in enumerate(histories):
        h = [int(i) for i in h]
        distinct = sorted(set(h))
        age = {i: len(h) - 1 - max(p for p, j in enumerate(h) if j == i) for i in distinct}
        w = torch.tensor([decay ** age[i] for i in distinct], dtype=torch.float64)
        out[r] = ((w / w.sum()).float().view(-1, 1) * kept[distinct]).sum(0)
    return out


CASES = [  # (seed, users, items, longest sequence, neighbours kept, block of items per step, recency decay)
    (0, 200, 40, 8, 40, 7, 1.0),
    (1, 300, 120, 12, 5, 64, 1.0),
    (2, 50, 30, 3, 1, 1024, 1.0),
    (0, 200, 40, 8, 40, 7, 0.8),
    (1, 300, 120, 12, 5, 64, 0.3),
]


@pytest.mark.parametrize("seed, users, items, longest, k, block, decay", CASES)
def test_neighbours_score_as_the_dense_reference(seed, users, items, longest, k, block, decay):
    seqs = sequences(seed, users, items, longest)
    ids = [f"i{j}" for j in range(items)]
    table = Neighbours.fit(seqs, ids, k, block=block)
    histories = [np.array(h) for h in sequences(seed + 100, 16, items, 6)]  # repeats included: the last one counts
    got = table.on_catalog(ids, decay=decay).scores(histories)
    assert torch.allclose(got, reference(seqs, items, k, histories, decay), atol=1e-6)
    assert int(table.indptr.diff().max()) <= k
    if decay < 1:  # the weighting changed something: the check above can tell
        assert not torch.allclose(got, reference(seqs, items, k, histories), atol=1e-6)


@pytest.mark.parametrize("history, decay, want", [
    ([1, 2, 3], 1.0, {1: 1 / 3, 2: 1 / 3, 3: 1 / 3}),
    ([1, 2, 1], 1.0, {2: 0.5, 1: 0.5}),  # distinct items: a repeat counts once
    ([1, 2], 0.5, {2: 2 / 3, 1: 1 / 3}),  # the last item counts 1, the one before 0.5
    ([1, 2, 1], 0.5, {1: 2 / 3, 2: 1 / 3}),  # a repeated item is as recent as its last occurrence
    (["a"], 0.1, {"a": 1.0}),
])
def test_recency_shares(history, decay, want):
    got = recency_shares(history, decay)
    assert got == pytest.approx(want) and sum(got.values()) == pytest.approx(1.0)


@pytest.mark.parametrize("history, rows", [
    (["a", "b"], [0, 1]),
    (["a", {"title": "new"}, "b"], [0, -2, 1]),  # an item given by fields: a row below 0 of its own
    (["x", "a", "x", {"t": 1}, {"t": 1}], [-1, 0, -1, -4, -5]),  # an unknown id once however often; fields each once
])
def test_history_rows(history, rows):
    assert history_rows(history, {"a": 0, "b": 1}) == rows


def test_untruncated_is_item_knn_as_a_mean():
    """With every neighbour kept, the term is the item-kNN baseline's score divided by the distinct history
    items (away from the history's own items, which item-kNN scores with their self-similarity taken out)."""
    seqs = sequences(3, 400, 80, 10)
    ids = [str(j) for j in range(80)]
    histories = [np.array(h) for h in sequences(4, 20, 80, 6)]
    knn = itemknn_scorer(seqs, 80)(histories)
    got = Neighbours.fit(seqs, ids, 80).on_catalog(ids).scores(histories)
    for r, h in enumerate(histories):
        others = torch.ones(80, dtype=torch.bool)
        others[torch.as_tensor(h)] = False
        assert torch.allclose(got[r, others], knn[r, others] / len(set(h.tolist())), atol=1e-6)


def test_save_load_and_another_catalog_order(tmp_path):
    """Saved and read back (similarities in float16), then used on a catalog in another order that lacks an
    item and has one the table does not know: the same scores by item id, 0 for the unknown item."""
    seqs = sequences(5, 200, 30, 8)
    ids = [f"i{j}" for j in range(30)]
    table = Neighbours.fit(seqs, ids, 10)
    table.save(tmp_path / "n.safetensors")
    loaded = Neighbours.load(tmp_path / "n.safetensors")
    assert loaded.item_ids == ids and loaded.per_item == 10 and loaded.pairs == table.pairs
    # Saved again, the same bytes (the metadata's three keys in a fixed order): a package's id is its hash.
    loaded.save(tmp_path / "again.safetensors")
    assert (tmp_path / "again.safetensors").read_bytes() == (tmp_path / "n.safetensors").read_bytes()
    catalog = ["new", *reversed(ids[1:])]  # i0 left out, "new" added
    history = [3, 7, 7]
    want = table.on_catalog(ids).scores([history])[0]
    got = loaded.on_catalog(catalog).scores([[catalog.index(ids[i]) for i in history]])[0]
    for row, item in enumerate(catalog):
        expected = 0.0 if item == "new" else float(want[ids.index(item)])
        assert got[row].item() == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize("damage, message", [
    (lambda t, m: t.pop("index"), "not a readable co-occurrence table"),
    (lambda t, m: m.pop("item_ids"), "not a readable co-occurrence table"),
    (lambda t, m: t.update(indptr=t["indptr"].flip(0)), "indptr must rise"),
    (lambda t, m: t.update(index=t["index"] + 1000), "neighbour positions"),
    (lambda t, m: t.update(similarity=t["similarity"][:-1]), "similarities for"),
])
def test_a_damaged_table_is_refused_naming_the_file(tmp_path, damage, message):
    path = tmp_path / "n.safetensors"
    Neighbours.fit(sequences(6, 100, 20, 6), [str(j) for j in range(20)], 5).save(path)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = dict(f.metadata())
    tensors = load_file(str(path))
    damage(tensors, metadata)
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(PackageError, match=message) as info:
        Neighbours.load(path)
    assert str(path) in str(info.value)


def test_new_items_count_in_the_mean_and_add_nothing():
    seqs = sequences(7, 200, 25, 8)
    ids = [str(j) for j in range(25)]
    ranking = HybridRanking(Neighbours.fit(seqs, ids, 25), weight=2.0)
    alone = ranking.by_ids(["3", "4"], ids)
    with_new = ranking.by_ids(["3", {"title": "a new item"}, "4"], ids)  # a history item given by its fields
    assert torch.allclose(with_new, alone * 2 / 3)
    assert torch.allclose(ranking.by_ids(["3", "unknown", "4", "unknown"], ids), alone * 2 / 3)  # an id without neighbours
    sims = ranking.per_history_item(["3", "4"], "9")
    assert float(alone[9]) == pytest.approx(2.0 * (sims["3"] + sims["4"]) / 2, abs=1e-6)
    assert ranking.by_ids(["3"], ["unknown"]).tolist() == [0.0]


def test_a_ranking_weights_recent_items_by_its_decay():
    """HybridRanking with a decay: by id as on catalog rows, each item's share as recency_shares gives it."""
    seqs = sequences(9, 200, 25, 8)
    ids = [str(j) for j in range(25)]
    table = Neighbours.fit(seqs, ids, 25)
    ranking = HybridRanking(table, weight=2.0, decay=0.5)
    history = ["3", {"title": "new"}, "4", "3", "7"]
    got = ranking.by_ids(history, ids)
    shares = ranking.history_shares(history)  # 7 last (1), 3 one step before (0.5), 4 (0.25), the new item (0.125)
    assert shares == pytest.approx({"3": 0.5 / 1.875, "4": 0.25 / 1.875, "7": 1 / 1.875})
    sims = {c: ranking.per_history_item(["3", "4", "7"], c) for c in ids}
    want = torch.tensor([2.0 * sum(shares[h] * sims[c][h] for h in shares) for c in ids])
    assert torch.allclose(got, want, atol=1e-6)
    assert not torch.allclose(got, HybridRanking(table, weight=2.0).by_ids(history, ids), atol=1e-6)


@pytest.mark.parametrize("pick, scores, chosen", [
    (best_weight, {0.0: 0.10, 0.5: 0.12, 1.0: 0.11}, 0.5),
    (best_weight, {0.0: 0.10, 0.5: 0.10, 1.0: 0.09}, 0.0),  # a tie: the smaller weight, the model alone
    (best_weight, {0.0: 0.10, 1.0: 0.13, 2.0: 0.13}, 1.0),
    (best_decay, {1.0: 0.10, 0.8: 0.11, 0.5: 0.09}, 0.8),
    (best_decay, {1.0: 0.10, 0.8: 0.10}, 1.0),  # a tie: the plain mean
])
def test_validation_picks_the_best(pick, scores, chosen):
    assert pick({w: {"ndcg@10": v} for w, v in scores.items()}) == chosen


def test_hybrid_scorer_adds_the_weighted_term():
    seqs = sequences(8, 100, 15, 6)
    ids = [str(j) for j in range(15)]
    term = Neighbours.fit(seqs, ids, 15).on_catalog(ids)
    base = lambda histories: torch.ones(len(histories), 15)  # noqa: E731
    histories = [np.array([1, 2]), np.array([3])]
    assert hybrid_scorer(base, term.scores, 0.0) is base
    assert torch.allclose(hybrid_scorer(base, term.scores, 0.5)(histories), 1 + 0.5 * term.scores(histories))
    assert json.dumps(term.scores(histories).tolist())  # plain floats


# -- borrowing: items the term cannot score take their nearest items' term -------------------------------------------
BORROW_CASES = [  # (seed, users, items, items ever bought, neighbours kept, borrow, borrow weight)
    (10, 200, 40, 30, 40, 3, 1.0),
    (11, 300, 60, 45, 5, 1, 2.0),
    (12, 80, 25, 10, 25, 50, 0.5),  # more to borrow from than there are scored items: all of them
]


@pytest.mark.parametrize("seed, users, items, bought, k, borrow, weight", BORROW_CASES)
def test_borrowing_scores_as_the_dense_reference(seed, users, items, bought, k, borrow, weight):
    """Items never bought (and any the kept neighbour lists leave out) score weight x the share-weighted term
    of their `borrow` nearest scored items by cosine; every other item scores as without borrowing."""
    seqs = sequences(seed, users, bought, 8)
    ids = [f"i{j}" for j in range(items)]
    vectors = torch.randn(items, 8, generator=torch.Generator().manual_seed(seed))
    histories = [np.array(h) for h in sequences(seed + 100, 16, bought, 6)]
    kept = kept_similarities(seqs, items, k)
    own = reference(seqs, items, k, histories)
    want = with_borrowing(own, vectors, kept.gt(0).any(0), borrow, weight)
    got = Neighbours.fit(seqs, ids, k).on_catalog(ids, vectors, borrow=borrow, borrow_weight=weight).scores(histories)
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.equal(got, own)  # something was borrowed: the check above can tell


@pytest.mark.parametrize("vectors, borrow, weight", [(None, 3, 1.0), ("random", 0, 1.0), ("random", 3, 0.0)])
def test_borrowing_off_scores_as_the_plain_term(vectors, borrow, weight):
    seqs = sequences(13, 100, 15, 6)
    ids = [str(j) for j in range(20)]
    table = Neighbours.fit(seqs, ids, 20)
    vectors = torch.randn(20, 4) if vectors == "random" else None
    histories = [np.array([1, 2]), np.array([3])]
    term = table.on_catalog(ids, vectors, borrow=borrow, borrow_weight=weight)
    assert term.borrowing is None and torch.equal(term.scores(histories), table.on_catalog(ids).scores(histories))


@pytest.mark.parametrize("seed, decay", [(14, 0.8), (15, 0.3), (16, 1.0)])
def test_a_term_with_another_decay_scores_as_one_built_with_it(seed, decay):
    """with_decay (how a run tries its decays on the chosen term) equals building the term with that decay,
    borrowing included, and leaves the term it came from as it was."""
    seqs = sequences(seed, 200, 30, 8)
    ids = [f"i{j}" for j in range(40)]
    vectors = torch.randn(40, 8, generator=torch.Generator().manual_seed(seed))
    table = Neighbours.fit(seqs, ids, 10)
    histories = [np.array(h) for h in sequences(seed + 100, 16, 30, 6)]
    term = table.on_catalog(ids, vectors, borrow=3, borrow_weight=2.0)
    before = term.scores(histories)
    got = term.with_decay(decay).scores(histories)
    assert torch.allclose(got, table.on_catalog(ids, vectors, borrow=3, borrow_weight=2.0, decay=decay).scores(histories), atol=1e-6)
    assert torch.equal(term.scores(histories), before) and term.decay == 1.0
    assert torch.equal(got, before) == (decay == 1.0)  # a decay below 1 changed something: the check above can tell


def test_borrowing_in_blocks_is_borrowing_at_once():
    scored = torch.rand(50, generator=torch.Generator().manual_seed(1)) > 0.4
    vectors = torch.randn(50, 6, generator=torch.Generator().manual_seed(2))
    one, blocks = Borrowing.nearest(scored, vectors, 4, 1.0), Borrowing.nearest(scored, vectors, 4, 1.0, block=3)
    assert torch.equal(one.targets, blocks.targets) and torch.equal(one.sources, blocks.sources)
    assert torch.allclose(one.shares, blocks.shares)
    assert Borrowing.nearest(torch.ones(5, dtype=torch.bool), torch.randn(5, 2), 3, 1.0) is None  # nothing to borrow for


def test_a_ranking_borrows_on_its_catalog_by_id():
    """HybridRanking: a candidate no neighbour list holds (never bought, or new to the catalog) borrows on the
    catalog given; without a catalog it scores 0; `borrowed_from` names the items and shares it borrows."""
    seqs = sequences(14, 150, 12, 6)
    table = Neighbours.fit(seqs, [str(j) for j in range(15)], 15)  # items 12, 13, 14 never bought
    catalog = [str(j) for j in range(15)] + ["new"]
    vectors = torch.randn(16, 5, generator=torch.Generator().manual_seed(3))
    ranking = HybridRanking(table, weight=2.0, borrow=2, borrow_weight=1.5)
    assert ranking.borrows
    history = ["1", {"title": "a new item"}, "4"]
    row = 2.0 * ranking.on(catalog, vectors).scores([[1, -1, 4]])[0]
    got = ranking.by_ids(history, ["13", "new", "4", "absent"], (catalog, vectors))
    assert torch.allclose(got, torch.stack([row[13], row[15], row[4], torch.tensor(0.0)]))
    assert float(got[0]) > 0 and float(got[1]) > 0
    assert ranking.by_ids(history, ["13", "new"]).tolist() == [0.0, 0.0]  # no catalog: nothing to borrow on
    sources = ranking.borrowed_from("new", (catalog, vectors))
    assert len(sources) <= 2 and sum(w for _, w in sources) == pytest.approx(1.0)
    own = ranking.by_ids(history, [i for i, _ in sources], (catalog, vectors)) / 2.0
    assert float(got[1]) == pytest.approx(2.0 * 1.5 * sum(w * float(v) for (_, w), v in zip(sources, own)), abs=1e-6)
    assert ranking.borrowed_from("4", (catalog, vectors)) == []  # bought: its own term


def test_a_choice_records_its_borrowing():
    table = Neighbours.fit(sequences(15, 50, 10, 5), [str(j) for j in range(10)], 10)
    choice = HybridChoice(table, 1.0, {0.0: {"ndcg@10": 0.1}, 1.0: {"ndcg@10": 0.2}})
    assert choice.chosen == {"ndcg@10": 0.2} and choice.record()["borrow_weight"] == 0.0
    assert "borrow_validation_ndcg@10" not in choice.record()
    choice.borrow, choice.borrow_weight = 5, 2.0
    choice.borrow_validation = {0.0: {"ndcg@10": 0.2}, 1.0: {"ndcg@10": 0.25}, 2.0: {"ndcg@10": 0.3}}
    record = choice.record()
    assert choice.chosen == {"ndcg@10": 0.3} and (record["borrow"], record["borrow_weight"]) == (5, 2.0)
    assert record["borrow_validation_ndcg@10"] == {"0": 0.2, "1": 0.25, "2": 0.3}
    assert record["decay"] == 1.0 and "decay_validation_ndcg@10" not in record
    choice.decay, choice.decay_validation = 0.8, {1.0: {"ndcg@10": 0.3}, 0.8: {"ndcg@10": 0.32}}
    record = choice.record()
    assert choice.chosen == {"ndcg@10": 0.32} and record["decay"] == 0.8
    assert record["decay_validation_ndcg@10"] == {"0.8": 0.32, "1": 0.3}
