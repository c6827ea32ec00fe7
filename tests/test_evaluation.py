from __future__ import annotations

import numpy as np
import pytest
import torch

from crossrec_peft.baselines import popularity_scorer
from crossrec_peft.data.split import EvalCases
from crossrec_peft.evaluation import (BatchShared, HeldOutEvaluation, evaluate_cases, evaluate_many, history_buckets, pad_histories,
                                      rank_cases, rank_many)
from crossrec_peft.metrics import ranking_metrics


def test_popularity_with_history_exclusion():
    counts = np.array([100, 50, 10, 5, 1])
    cases = EvalCases([np.array([0]), np.array([1, 2]), np.array([0, 3])], np.array([1, 3, 3]))
    m = evaluate_cases(popularity_scorer(counts), cases, [1, 2])
    # user 0: item 0 excluded -> item 1 ranks first. user 1: items 1, 2 excluded -> 0 first, 3 second.
    # user 2: target 3 is in the history but never excluded -> ranks after 1, 2 (0 excluded): third.
    assert m["recall@1"] == 1 / 3
    assert m["recall@2"] == 2 / 3
    assert np.isclose(m["mrr@2"], (1 + 0.5 + 0) / 3)


def test_scorer_sees_only_recent_history():
    index, mask = pad_histories([np.arange(10), np.array([3])], max_history=4)
    assert index.tolist() == [[6, 7, 8, 9], [3, 0, 0, 0]]
    assert mask.sum(1).tolist() == [4, 1]


def test_perfect_and_worst_scorers():
    cases = EvalCases([np.array([0]), np.array([1])], np.array([4, 2]))

    def oracle(histories):
        s = torch.zeros(len(histories), 5)
        for r, t in enumerate(cases.targets[: len(histories)]):
            s[r, t] = 1.0
        return s

    assert evaluate_cases(oracle, cases, [1])["ndcg@1"] == 1.0
    assert evaluate_cases(lambda h: -oracle(h), cases, [1])["recall@1"] == 0.0


def random_cases(rng, users: int, items: int) -> EvalCases:
    histories = [rng.choice(items, size=int(rng.integers(1, 8)), replace=False) for _ in range(users)]
    return EvalCases(histories, rng.integers(0, items, size=users))


def test_full_ranking_matches_brute_force_with_exclusion_and_coverage():
    rng = np.random.default_rng(3)
    items = 30
    cases = random_cases(rng, 45, items)
    table = rng.normal(size=(45, items))  # distinct scores: no tie-breaking involved
    offset = {"at": 0}

    def scorer(histories):
        block = table[offset["at"] : offset["at"] + len(histories)]
        offset["at"] += len(histories)
        return torch.tensor(block)

    got = evaluate_cases(scorer, cases, [5, 10], batch_size=16)
    ranks, tops = [], {5: set(), 10: set()}
    for row, (history, target) in enumerate(zip(cases.histories, cases.targets)):
        candidates = [i for i in range(items) if i == target or i not in set(history.tolist())]
        order = sorted(candidates, key=lambda i: -table[row, i])
        ranks.append(order.index(target))
        for k in tops:
            tops[k].update(order[:k])
    ref = ranking_metrics(torch.tensor(ranks), [5, 10])
    for name, values in ref.items():
        assert got[name] == pytest.approx(float(values.mean()), abs=1e-12), name
    assert got["coverage@5"] == len(tops[5]) / items and got["coverage@10"] == len(tops[10]) / items


def test_sampled_negatives_rank_among_unseen_items_and_overstate():
    rng = np.random.default_rng(0)
    items, n = 400, 20
    cases = random_cases(rng, 60, items)
    scores = torch.tensor(rng.normal(size=(60, items)), dtype=torch.float32)
    full, sampled = rank_cases(lambda h: scores[: len(h)].clone(), cases, [10], batch_size=64, sampled_negatives=n)
    again = rank_cases(lambda h: scores[: len(h)].clone(), cases, [10], batch_size=64, sampled_negatives=n)[1]
    assert torch.equal(sampled.values["ndcg@10"], again.values["ndcg@10"])  # seeded: same negatives
    # A target ranked among n sampled items is never ranked lower than among the whole catalog.
    assert (sampled.values["recall@10"] >= full.values["recall@10"]).all()
    assert sampled.summary()["recall@10"] > full.summary()["recall@10"]
    assert "coverage@10" not in sampled.summary()  # a list metric of full ranking only


RANK_MANY_CASES = [  # (seed, users, items, batch size, repeats, sampled negatives, ties)
    (20, 45, 30, 16, "allow", None, False),
    (21, 70, 50, 32, "miss", 12, False),
    (22, 33, 12, 64, "miss", None, True),  # scores rounded to a few values: tie-breaking decides ranks
]


@pytest.mark.parametrize("seed, users, items, batch, repeats, sampled, ties", RANK_MANY_CASES)
def test_rank_many_gives_each_scorer_what_ranking_it_alone_gives(seed, users, items, batch, repeats, sampled, ties):
    """Several scorers ranked in one pass (a shared base, the base plus two weights of a shared term, and one
    unrelated) give each the per-case values and coverage of rank_cases on that scorer alone; the shared
    parts run once per batch of cases, and what a scorer does in place to a shared result stays its own."""
    rng = np.random.default_rng(seed)
    cases = random_cases(rng, users, items)
    base_table = torch.tensor(rng.normal(size=(users, items)), dtype=torch.float32)
    term_table = torch.tensor(rng.random(size=(users, items)), dtype=torch.float32)
    other_table = torch.tensor(rng.normal(size=(users, items)), dtype=torch.float32)
    if ties:
        base_table, term_table, other_table = (t.mul(2).round() for t in (base_table, term_table, other_table))
    calls = {"base": 0, "term": 0}

    def rows_of(table, name=None):
        def scorer(histories):  # the cases are ranked in order: the histories' position gives the rows
            start = next(i for i in range(0, users, batch) if cases.histories[i] is histories[0])
            if name:
                calls[name] += 1
            return table[start : start + len(histories)].clone()
        return scorer

    base, term = BatchShared(rows_of(base_table, "base")), BatchShared(rows_of(term_table, "term"))
    scorers = {
        "base": base, "base again": base,
        0.5: lambda h: base(h) + 0.5 * term(h), 2.0: lambda h: base(h) + 2.0 * term(h),
        "other": rows_of(other_table),
    }
    alone = {
        "base": rows_of(base_table), "base again": rows_of(base_table),
        0.5: lambda h: rows_of(base_table)(h) + 0.5 * rows_of(term_table)(h),
        2.0: lambda h: rows_of(base_table)(h) + 2.0 * rows_of(term_table)(h),
        "other": rows_of(other_table),
    }
    together = rank_many(scorers, cases, [5, 10], batch_size=batch, seed=seed, sampled_negatives=sampled, repeats=repeats)
    batches = -(-users // batch)
    assert calls == {"base": batches, "term": batches}
    for key, scorer in alone.items():
        full, sampled_results = rank_cases(scorer, cases, [5, 10], batch_size=batch, seed=seed, sampled_negatives=sampled, repeats=repeats)
        got_full, got_sampled = together[key]
        for name, values in full.values.items():
            assert torch.equal(got_full.values[name], values), (key, name)
        assert got_full.coverage == full.coverage, key
        assert (got_sampled is None) == (sampled_results is None)
        if sampled_results is not None:
            for name, values in sampled_results.values.items():
                assert torch.equal(got_sampled.values[name], values), (key, name)
    summaries = evaluate_many(scorers, cases, [5, 10], batch_size=batch, seed=seed, repeats=repeats)
    assert summaries["other"] == evaluate_cases(rows_of(other_table), cases, [5, 10], batch_size=batch, seed=seed, repeats=repeats)
    assert summaries[2.0]["ndcg@10"] != summaries["base"]["ndcg@10"]  # the cases tell the scorers apart
    first = cases.histories[:batch]
    base(first).fill_(float("-inf"))  # what ranking does to the history items, here to every item
    assert torch.equal(base(first), base_table[:batch])


def test_sampled_negatives_exclude_history_and_target():
    from crossrec_peft.evaluation import sample_negatives

    scores = torch.arange(6, dtype=torch.float32).expand(2, -1).clone()
    targets = torch.tensor([0, 5])
    rows, cols = torch.tensor([0, 0, 1]), torch.tensor([1, 2, 0])
    out = sample_negatives(scores, targets, rows, cols, 10, torch.Generator().manual_seed(0))
    assert out.shape == (2, 11)
    assert out[:, 0].tolist() == [0.0, 5.0]
    assert sorted(out[0, 1:4].tolist()) == [3.0, 4.0, 5.0] and torch.isinf(out[0, 4:]).all()  # only 3 allowed
    assert sorted(out[1, 1:5].tolist()) == [1.0, 2.0, 3.0, 4.0] and torch.isinf(out[1, 5:]).all()


def test_history_buckets():
    index, labels = history_buckets(np.array([0, 1, 2, 3, 5, 6, 10, 11, 50]), [2, 5, 10])
    assert labels == ["0", "1-2", "3-5", "6-10", "11+"]
    assert [labels[i] for i in index] == ["0", "1-2", "1-2", "3-5", "3-5", "6-10", "6-10", "11+", "11+"]


def test_held_out_slices_are_means_over_their_cases():
    rng = np.random.default_rng(1)
    items = 50
    cases = random_cases(rng, 80, items)
    counts = rng.integers(0, 12, size=items)
    evaluation = HeldOutEvaluation(cases, counts, [10], batch_size=32, cold_start_max=3, history_edges=[2, 4], sampled_negatives=10)
    scores = torch.tensor(rng.normal(size=(80, items)), dtype=torch.float32)
    offset = {"at": 0}

    def scorer(histories):
        block = scores[offset["at"] : offset["at"] + len(histories)]
        offset["at"] += len(histories)
        return block.clone()

    overall = evaluation.run("a", scorer)
    evaluation.run("pop", popularity_scorer(counts))
    report = evaluation.report()
    assert report["metrics"]["a"] == overall and set(report["metrics"]) == {"a", "pop"}
    assert set(report["sampled"]["metrics"]) == {"a", "pop"} and report["sampled"]["negatives"] == 10
    cold = counts[cases.targets] <= 3
    ndcg = evaluation.full["a"].values["ndcg@10"].numpy()
    assert report["cold_start"]["cases"] == int(cold.sum()) > 0
    assert report["cold_start"]["metrics"]["a"]["ndcg@10"] == pytest.approx(ndcg[cold].mean())
    lengths = np.array([len(h) for h in cases.histories])
    by = report["by_history"]
    assert sum(by["cases"]) == len(cases)
    for label, count in zip(by["buckets"], by["cases"]):
        low, high = {"1-2": (1, 2), "3-4": (3, 4), "5+": (5, 99)}[label]
        mask = (lengths >= low) & (lengths <= high)
        assert count == mask.sum()
        assert by["metrics"]["a"][label]["ndcg@10"] == pytest.approx(ndcg[mask].mean())


@pytest.mark.parametrize("repeats", ["allow", "miss"])
def test_repeats_protocol_matches_brute_force(repeats):
    """A third of the targets are repeats (already in the history). Reference written from the definitions:
    rank among the unmasked items; with `miss` a repeated target is masked, so it is never in a top-k."""
    rng = np.random.default_rng(11)
    items, users = 25, 60
    histories = [rng.choice(items, size=int(rng.integers(1, 7)), replace=False) for _ in range(users)]
    targets = np.array([h[0] if u % 3 == 0 else int(rng.integers(items)) for u, h in enumerate(histories)])
    cases = EvalCases(histories, targets)
    table = rng.normal(size=(users, items))
    offset = {"at": 0}

    def scorer(block_histories):
        block = table[offset["at"] : offset["at"] + len(block_histories)]
        offset["at"] += len(block_histories)
        return torch.tensor(block)

    got = evaluate_cases(scorer, cases, [5, 10], batch_size=16, repeats=repeats)
    expected = {f"{m}@{k}": 0.0 for m in ("recall", "ndcg", "mrr") for k in (5, 10)}
    repeated = 0
    for row, (history, target) in enumerate(zip(histories, targets)):
        seen = set(history.tolist())
        repeated += target in seen
        if repeats == "miss" and target in seen:
            continue  # a miss: contributes 0 to every metric
        rank = sum(1 for i in range(items) if i not in seen and i != target and table[row, i] > table[row, target])
        for k in (5, 10):
            if rank < k:
                expected[f"recall@{k}"] += 1 / users
                expected[f"ndcg@{k}"] += 1 / np.log2(rank + 2) / users
                expected[f"mrr@{k}"] += 1 / (rank + 1) / users
    assert repeated >= users // 3  # the cases really contain repeats
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-9), name
    evaluation = HeldOutEvaluation(cases, np.ones(items), [10], repeats=repeats)
    offset["at"] = 0
    evaluation.run("table", scorer)
    report = evaluation.report()
    assert report["protocol"] == {"repeats": repeats, "repeat_cases": repeated}
    assert report["metrics"]["table"]["ndcg@10"] == pytest.approx(expected["ndcg@10"], abs=1e-9)


def test_miss_never_scores_above_allow_and_unknown_protocol_is_refused():
    rng = np.random.default_rng(2)
    cases = random_cases(rng, 40, 20)
    table = torch.tensor(rng.normal(size=(40, 20)))
    allow = evaluate_cases(lambda h: table[: len(h)], cases, [10], batch_size=64, repeats="allow")
    miss = evaluate_cases(lambda h: table[: len(h)], cases, [10], batch_size=64, repeats="miss")
    assert miss["ndcg@10"] <= allow["ndcg@10"]
    with pytest.raises(ValueError, match="repeats"):
        evaluate_cases(lambda h: table[: len(h)], cases, [10], repeats="sometimes")
