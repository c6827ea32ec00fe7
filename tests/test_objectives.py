"""Objectives: each loss against a hand-written reference, the data checks that stop a run before training,
learning on a tiny model, heads in the adapter package, and the multitask + sasrec recipe from the CLI."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from crossrec_peft import recipes, registry
from crossrec_peft.cli import main
from crossrec_peft.config import component, load_config
from crossrec_peft.data import leave_one_out, load_layout
from crossrec_peft.data.batching import Collator, TrainWindows
from crossrec_peft.data.split import EvalCases, Split
from crossrec_peft.errors import ConfigError, DataError
from crossrec_peft.evaluation import encode_catalog
from crossrec_peft.model import build_model
from crossrec_peft.objectives import ObjectiveContext, objective_context
from crossrec_peft.objectives.retrieval import InBatchSoftmax
from crossrec_peft.package import export_package, init_from_package, load_package
from tests.conftest import small_layout, tiny_overrides, write_jsonl


def build(spec: dict):
    entry, _, options = component(registry.objectives, spec, "train.objective")
    return entry.factory(options)


def context(num_items: int = 10, counts=None, **kw) -> ObjectiveContext:
    counts = np.arange(num_items) if counts is None else counts
    return ObjectiveContext(num_items=num_items, item_counts=np.asarray(counts), **kw)


# -- the losses against references written as plain loops ---------------------------------------------------

def hand_outputs(seed: int = 0, negatives: bool = False, dim: int = 3) -> tuple[dict, dict]:
    """Four pairs from three windows: row 0 = items [4, 5, 6] (targets 5, 6), row 1 = [1, 5], row 2 = [2, 7]."""
    g = torch.Generator().manual_seed(seed)
    unit = lambda *s: F.normalize(torch.randn(*s, generator=g), dim=-1)  # noqa: E731
    outputs = {
        "users": unit(4, dim), "items": unit(4, dim), "logit_scale": torch.tensor(2.0),
        "target_item": torch.tensor([5, 6, 5, 7]), "row": torch.tensor([0, 0, 1, 2]),
    }
    batch = {"sequence_items": torch.tensor([[4, 5, 6], [1, 5, -1], [2, 7, -1]])}
    if negatives:
        # Pool items 6 (in row 0's window), 9 and 1 (in row 1's window); two negatives per pair.
        outputs.update(negative_vectors=unit(3, dim), negative_items=torch.tensor([6, 9, 1]), negatives=torch.tensor([[0, 1], [1, 2], [2, 1], [0, 0]]))
    return outputs, batch


def reference_retrieval(outputs, batch, *, remove_hits: bool, log_q=None, in_batch_log_q=None, prior=None) -> float:
    u, e, s = outputs["users"].numpy(), outputs["items"].numpy(), float(outputs["logit_scale"])
    items, rows, windows = outputs["target_item"].tolist(), outputs["row"].tolist(), batch["sequence_items"].tolist()
    total = 0.0
    for i in range(len(u)):
        logits = []
        for j in range(len(u)):
            if j != i and remove_hits and (items[j] == items[i] or rows[j] == rows[i]):
                continue
            shift = in_batch_log_q[items[j]] if in_batch_log_q is not None else 0.0
            added = prior(i, items[j]) if prior is not None else 0.0
            logits.append((s * u[i] @ e[j] + added - shift, j == i))
        if "negatives" in outputs:
            pool = sorted(set(outputs["negatives"].flatten().tolist()))
            for p in pool:
                item = int(outputs["negative_items"][p])
                if remove_hits and item in windows[rows[i]]:
                    continue
                added = prior(i, item) if prior is not None else 0.0
                logits.append((s * u[i] @ outputs["negative_vectors"][p].numpy() + added - (log_q[item] if log_q is not None else 0.0), False))
        values = np.array([v for v, _ in logits])
        positive = next(v for v, is_pos in logits if is_pos)
        total += -(positive - np.log(np.exp(values).sum()))
    return total / len(u)


@pytest.mark.parametrize(
    "options, negatives, logq",
    [
        ({"remove_accidental_hits": False}, False, False),
        ({"remove_accidental_hits": True}, False, False),
        ({"num_negatives": 2, "sampling": "uniform", "logq_correction": False}, True, False),
        ({"num_negatives": 2, "sampling": "popularity", "alpha": 1.0, "logq_correction": True}, True, True),
        ({"num_negatives": 2, "sampling": "popularity", "remove_accidental_hits": False}, True, True),
        ({"in_batch_logq": True}, False, False),
        ({"in_batch_logq": True, "num_negatives": 2, "sampling": "uniform"}, True, True),
    ],
    ids=["in-batch", "accidental-hits", "sampled-uniform", "sampled-logq", "sampled-logq-no-hit-removal",
         "in-batch-logq", "in-batch-logq-and-sampled"],
)
def test_retrieval_loss_matches_reference(options, negatives, logq):
    objective = build({"name": "retrieval", **options})
    counts = np.array([0, 3, 1, 0, 2, 8, 4, 1, 0, 5])
    objective.prepare(None, context(counts=counts))
    outputs, batch = hand_outputs(negatives=negatives)
    loss, logs = objective(outputs, batch)
    log_q = None
    if logq:
        q = (counts + 1.0) ** (0.0 if options.get("sampling") == "uniform" else options.get("alpha", 0.75))
        log_q = np.log(outputs["negatives"].numel() * q / q.sum())
    in_batch_log_q = np.log((counts + 1.0) / (counts + 1.0).sum()) if options.get("in_batch_logq") else None
    expected = reference_retrieval(
        outputs, batch, remove_hits=options.get("remove_accidental_hits", True), log_q=log_q, in_batch_log_q=in_batch_log_q
    )
    assert loss.item() == pytest.approx(expected, rel=1e-5) and logs["loss"] == pytest.approx(expected, rel=1e-5)


class ItemPrior(InBatchSoftmax):
    """A fixed per-item term (0.3 * item id), the same for every pair."""

    def prior(self, outputs, batch, items):
        return 0.3 * items.float()


class PairPrior(InBatchSoftmax):
    """A fixed term per pair and item ((pair + 1) * 0.1 * item id): the [pairs, items] shape."""

    def prior(self, outputs, batch, items):
        pairs = torch.arange(len(outputs["users"]), dtype=torch.float32).view(-1, 1) + 1.0
        return pairs * 0.1 * items.float().view(1, -1)


@pytest.mark.parametrize(
    "cls, reference, options, negatives",
    [
        (ItemPrior, lambda pair, item: 0.3 * item, {}, False),
        (ItemPrior, lambda pair, item: 0.3 * item, {"num_negatives": 2, "sampling": "uniform"}, True),
        (PairPrior, lambda pair, item: (pair + 1) * 0.1 * item, {"num_negatives": 2, "sampling": "popularity", "alpha": 1.0}, True),
    ],
    ids=["item-prior-in-batch", "item-prior-sampled", "pair-prior-sampled-logq"],
)
def test_a_prior_adds_to_every_logit_of_its_item(cls, reference, options, negatives):
    """`prior` (the hook benchmarks/score_priors.py uses) adds its term before the logQ correction and the
    removal of accidental hits, on the in-batch and the sampled candidates alike."""
    counts = np.array([0, 3, 1, 0, 2, 8, 4, 1, 0, 5])
    _, _, opts = component(registry.objectives, {"name": "retrieval", **options}, "train.objective")
    objective = cls(opts)
    objective.prepare(None, context(counts=counts))
    outputs, batch = hand_outputs(negatives=negatives)
    loss, _ = objective(outputs, batch)
    log_q = None
    if negatives and opts.logq_correction:
        q = (counts + 1.0) ** (0.0 if opts.sampling == "uniform" else opts.alpha)
        log_q = np.log(outputs["negatives"].numel() * q / q.sum())
    expected = reference_retrieval(outputs, batch, remove_hits=True, log_q=log_q, prior=reference)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert expected != pytest.approx(reference_retrieval(outputs, batch, remove_hits=True, log_q=log_q), rel=1e-3)


@pytest.mark.parametrize(
    "items",
    [
        [7, 3, 11, 0, 5, 2],  # unique, unsorted (a pool of sampled negatives)
        [9, 4, 4, 1, 7],  # a repeated item: both of its columns are hits for a window holding it
        [12, 13],  # no window holds any of them
        [],
    ],
    ids=["unique", "repeated", "no-hits", "empty"],
)
def test_accidental_hits_of_a_shared_pool_match_comparing_every_pair(items):
    """`in_user_window` finds each window item among the pool by binary search; the mask must be the one that
    comparing every window item with every pool item gives (padding, -1, never a hit)."""
    from crossrec_peft.objectives.base import in_user_window

    batch = {"sequence_items": torch.tensor([[3, 5, 4, -1], [0, 7, -1, -1], [2, 2, 11, 9], [1, -1, -1, -1]])}
    rows = torch.tensor([0, 0, 1, 2, 2, 3, 1])
    pool = torch.tensor(items, dtype=torch.long)
    window = batch["sequence_items"][rows]
    expected = torch.tensor([[bool((window[n] == p).any()) for p in items] for n in range(len(rows))], dtype=torch.bool).view(len(rows), len(items))
    got = in_user_window(batch, rows, pool)
    assert got.dtype == torch.bool and torch.equal(got, expected)
    if items == [7, 3, 11, 0, 5, 2]:
        assert int(expected.sum()) == 12  # the case is not vacuous


@pytest.fixture(scope="module")
def tiny_model(tiny_bert):
    cfg = load_config(recipes.path("ecommerce"), [f"model.modalities.text.backbone.name=hf:{tiny_bert}", "model.head_rank=4"])
    del cfg.model.modalities["image"]
    torch.manual_seed(0)
    return build_model(cfg.model), cfg


def test_ctr_loss_matches_reference_with_labels_and_sampled_negatives(tiny_model):
    model, _ = tiny_model
    objective = build({"name": "ctr", "num_negatives": 2, "labels": "data"})
    objective.task = "ctr-reference"
    labels = [np.array([1.0, 0.0, 1.0, 1.0, 0.0, np.nan])]
    objective.prepare(model, context(train_values={"label": labels}))
    outputs, batch = hand_outputs(negatives=True)
    batch["labels"] = torch.tensor([1.0, 0.0, float("nan"), 1.0])
    with torch.no_grad():
        model.heads["ctr-reference"].scale.fill_(3.0)
        model.heads["ctr-reference"].bias.fill_(-0.5)
    loss, logs = objective(outputs, batch)
    u, e = outputs["users"], outputs["items"]
    terms, windows = [], batch["sequence_items"].tolist()
    bce = lambda z, y: -(y * math.log(1 / (1 + math.exp(-z))) + (1 - y) * math.log(1 - 1 / (1 + math.exp(-z))))  # noqa: E731
    for i in range(4):
        if not math.isnan(batch["labels"][i]):
            terms.append(bce(3.0 * float(u[i] @ e[i]) - 0.5, float(batch["labels"][i])))
        for p in outputs["negatives"][i].tolist():
            if int(outputs["negative_items"][p]) not in windows[int(outputs["row"][i])]:
                terms.append(bce(3.0 * float(u[i] @ outputs["negative_vectors"][p]) - 0.5, 0.0))
    assert loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-5)
    assert 0.0 <= logs["accuracy"] <= 1.0


def test_rating_loss_and_logged_errors(tiny_model):
    model, _ = tiny_model
    objective = build({"name": "rating"})
    objective.task = "rating-reference"
    objective.prepare(model, context(train_values={"rating": [np.array([4.0, 2.0, np.nan, 5.0])]}))
    head = model.heads["rating-reference"]
    assert head.bias.item() == pytest.approx(11 / 3)  # starts at the mean rating
    outputs, _ = hand_outputs(dim=model.dim)
    batch = {"ratings": torch.tensor([4.0, float("nan"), 1.0, 5.0])}
    loss, logs = objective(outputs, batch)
    with torch.no_grad():
        predicted = (outputs["users"] * outputs["items"]) @ head.weight + head.bias
    error = (predicted - batch["ratings"])[[0, 2, 3]]
    assert loss.item() == pytest.approx(float((error**2).mean()), rel=1e-5)
    assert logs["rmse"] == pytest.approx(float((error**2).mean().sqrt()), rel=1e-5)
    assert logs["mae"] == pytest.approx(float(error.abs().mean()), rel=1e-5)


def test_multitask_fixed_and_uncertainty_weighting(tiny_model):
    model, _ = tiny_model
    outputs, batch = hand_outputs(negatives=True)
    parts = {}
    for name, opts in (("retrieval", {"num_negatives": 2}), ("ctr", {"num_negatives": 1, "labels": "none"})):
        single = build({"name": name, **opts})
        single.task = f"{name}-single"
        single.prepare(model, context())
        parts[name] = single(outputs, batch)[0].item()
    for weighting in ("fixed", "uncertainty"):
        multi = build({"name": "multitask", "weighting": weighting, "weights": {"ctr": 0.5},
                       "tasks": {"retrieval": {"num_negatives": 2}, "ctr": {"num_negatives": 1, "labels": "none"}}})
        multi.tasks["ctr"].task = "ctr-single"  # the same (untrained) head as the single-task reference
        multi.prepare(model, context())
        assert multi.batch_needs.num_negatives == 2  # the widest sample; ctr reads its first column
        loss, logs = multi(outputs, batch)
        assert logs["retrieval/loss"] == pytest.approx(parts["retrieval"], rel=1e-5)
        assert logs["ctr/loss"] == pytest.approx(parts["ctr"], rel=1e-5)
        if weighting == "fixed":
            assert loss.item() == pytest.approx(parts["retrieval"] + 0.5 * parts["ctr"], rel=1e-5)
        else:
            log_vars = model.heads["multitask"].log_vars
            with torch.no_grad():
                log_vars.copy_(torch.tensor([0.7, -0.3]))
            loss, logs = multi(outputs, batch)
            expected = sum(0.5 * math.exp(-s) * L + 0.5 * s for s, L in zip([0.7, -0.3], [parts["retrieval"], 0.5 * parts["ctr"]]))
            assert loss.item() == pytest.approx(expected, rel=1e-5)
            assert logs["retrieval/weight"] == pytest.approx(math.exp(-0.7), rel=1e-5)
            (grad,) = torch.autograd.grad(loss, log_vars)
            assert grad.abs().min() > 0  # the task weights are learned


# -- invalid combinations fail before training ------------------------------------------------------------

@pytest.mark.parametrize(
    "objective, message",
    [
        ({"name": "ctr", "num_negatives": 0, "labels": "none"}, "ctr without negatives or labels"),
        ({"name": "ctr", "labels": "clicks"}, "'labels' must be one of auto, data, none"),
        ({"name": "retrieval", "sampling": "zipf"}, "'sampling' must be one of uniform, popularity"),
        ({"name": "multitask", "tasks": {"retrieval": {"num_negatives": 1}, "ctr": {"sampling": "popularity"}}}, "same sampling, alpha and seen_only"),
        ({"name": "multitask", "tasks": {"retrieval": {}}, "weights": {"ctr": 1.0}}, "'ctr', which is not a task|ctr, which is not a task"),
        ({"name": "multitask", "tasks": {"ranking": {}}}, "Unknown objective 'ranking'"),
        ({"name": "multitask", "tasks": {"inner": {"name": "multitask"}}}, "cannot contain another multitask"),
        ({"name": "multitask", "tasks": {"retrieval": {}}, "weighting": "learned"}, "'weighting' must be one of fixed, uncertainty"),
        ({"name": "multitask"}, "needs at least one task"),
    ],
)
def test_invalid_objective_configs_fail_at_load(objective, message):
    with pytest.raises(ConfigError, match=message):
        load_config(recipes.path("ecommerce"), [f"train.objective={json.dumps(objective)}"])


@pytest.fixture
def rated_layout(tmp_path):
    """The small layout plus a rating and a 0/1 label per interaction, written out of time order."""
    directory = small_layout(tmp_path / "data")
    rows = [json.loads(line) for line in (directory / "interactions.jsonl").read_text().splitlines()]
    for i, row in enumerate(rows):
        row["rating"] = float(1 + (i % 5))
        row["label"] = i % 2
    write_jsonl(directory / "interactions.jsonl", rows[::-1])
    return directory, rows


def test_rating_and_label_columns_follow_the_histories(rated_layout):
    directory, rows = rated_layout
    data = load_layout(directory, ["title"])
    first_user = [r for r in rows if r["user_id"] == data.user_ids[0]]
    assert data.values["rating"][0].tolist() == [r["rating"] for r in first_user]  # time order, not file order
    assert data.values["label"][0].tolist() == [r["label"] for r in first_user]
    # Training values are the histories' training prefixes, also when a split drops a user.
    split = leave_one_out(data.sequences)
    kept = Split("custom", [split.train[0], split.train[2]], EvalCases([], np.array([])), EvalCases([], np.array([])))
    values = objective_context(data, kept).train_values["rating"]
    assert [v.tolist() for v in values] == [data.values["rating"][u][: len(split.train[u])].tolist() for u in (0, 2)]


def test_a_rating_that_is_not_a_number_names_line_and_field(rated_layout):
    directory, rows = rated_layout
    rows[3]["rating"] = "five"
    write_jsonl(directory / "interactions.jsonl", rows)
    with pytest.raises(DataError, match=r"interactions.jsonl, line 4, field 'rating': '\"?five\"?' is not a finite number"):
        load_layout(directory, ["title"])


@pytest.mark.parametrize(
    "objective, drop, message",
    [
        ({"name": "rating"}, ["rating"], "rating needs explicit ratings"),
        ({"name": "ctr", "labels": "data"}, ["label"], "needs a 'label' column"),
        ({"name": "ctr", "num_negatives": 0}, ["label"], "ctr without negatives or labels"),
        ({"name": "category", "field": "genre"}, [], "does not have"),
        ({"name": "multitask", "tasks": {"retrieval": {}, "rating": {}}}, ["rating"], "rating needs explicit ratings"),
    ],
)
def test_data_the_objective_cannot_use_fails_in_prepare(objective, drop, message, rated_layout, tiny_model):
    directory, rows = rated_layout
    write_jsonl(directory / "interactions.jsonl", [{k: v for k, v in r.items() if k not in drop} for r in rows])
    data = load_layout(directory, ["title"])
    with pytest.raises(ConfigError, match=message):
        build(objective).prepare(tiny_model[0], objective_context(data, leave_one_out(data.sequences)))


# -- learning on a tiny model, and the heads in the package ------------------------------------------------

LEARNING_CASES = [
    {"name": "retrieval", "num_negatives": 2, "sampling": "popularity"},
    {"name": "ctr", "num_negatives": 2, "labels": "none"},
    {"name": "ctr", "num_negatives": 0, "labels": "data"},
    {"name": "rating"},
    {"name": "category"},
    {"name": "multitask", "weighting": "uncertainty", "tasks": {"retrieval": {"num_negatives": 1}, "ctr": {"num_negatives": 1}, "category": {}}},
]


@pytest.fixture(scope="module")
def learning_setup(tiny_bert, tmp_path_factory):
    """One untrained tiny model, the rated layout and its features; each case trains a copy."""
    cfg = load_config(recipes.path("ecommerce"), [f"model.modalities.text.backbone.name=hf:{tiny_bert}", "model.head_rank=4", "model.fusion=mean"])
    del cfg.model.modalities["image"]
    torch.manual_seed(0)
    model = build_model(cfg.model)
    directory = small_layout(tmp_path_factory.mktemp("rated") / "data")
    rows = [json.loads(line) for line in (directory / "interactions.jsonl").read_text().splitlines()]
    write_jsonl(directory / "interactions.jsonl", [{**r, "rating": float(1 + i % 5), "label": i % 2} for i, r in enumerate(rows)])
    data = load_layout(directory, ["title", "category"])
    return model, data, model.featurize(data.columns(["title", "category"]))


@pytest.mark.parametrize("spec", LEARNING_CASES, ids=[f"{s['name']}-{i}" for i, s in enumerate(LEARNING_CASES)])
def test_objective_learns_on_a_tiny_model(spec, learning_setup):
    base, data, features = learning_setup
    model = copy.deepcopy(base)
    split = leave_one_out(data.sequences)
    objective = build(spec)
    objective.prepare(model, objective_context(data, split, seed=3))
    windows = TrainWindows(split.train, samples_per_user=1, max_history=3, seed=0, values=objective.batch_needs.values)
    batch = Collator(features, model.collate_items, objective.batch_needs)([windows[i] for i in range(len(windows))])
    assert ("negatives" in batch) == (objective.batch_needs.num_negatives > 0)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(8):
        loss, logs = objective(model(batch), batch)
        assert math.isfinite(loss.item()) and logs["loss"] == pytest.approx(loss.item())
        optimizer.zero_grad()
        loss.backward()
        if len(losses) == 0:
            for name, p in model.heads.named_parameters():
                assert p.grad is not None and p.grad.abs().sum() > 0, f"head parameter {name} gets no gradient"
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses


def test_rating_reports_test_rmse_and_mae(learning_setup):
    base, data, features = learning_setup
    model = copy.deepcopy(base)
    split = leave_one_out(data.sequences)
    objective = build({"name": "rating"})
    objective.prepare(model, objective_context(data, split))
    with torch.no_grad():
        model.heads["rating"].weight.add_(torch.randn(model.dim))
    content = encode_catalog(model, features, len(data.item_ids), 64, progress=False)
    found = objective.held_out_metrics(model, content, data, split, max_history=3)
    errors = []
    with torch.no_grad():
        for seq, ratings in zip(data.sequences, data.values["rating"]):  # one user at a time
            history = content[torch.as_tensor(seq[:-1][-3:])].unsqueeze(0)
            user = model.user_vectors(history, torch.ones(1, history.shape[1], dtype=torch.bool))
            item = model.item_vectors(content[int(seq[-1])].unsqueeze(0))
            errors.append(float(model.heads["rating"](user, item)) - ratings[-1])
    errors = np.array(errors)
    assert found["cases"] == len(data.sequences)
    assert found["rmse"] == pytest.approx(float(np.sqrt((errors**2).mean())), rel=1e-4)
    assert found["mae"] == pytest.approx(float(np.abs(errors).mean()), rel=1e-4)
    # A multitask reports it under the task's name; objectives without such a prediction report nothing.
    multi = build({"name": "multitask", "tasks": {"retrieval": {}, "rating": {}}})
    multi.prepare(model, objective_context(data, split))
    assert multi.held_out_metrics(model, content, data, split, 3) == {"rating": found}
    assert build({"name": "retrieval"}).held_out_metrics(model, content, data, split, 3) == {}


def test_heads_are_saved_and_reloaded(rated_layout, tiny_bert, tmp_path):
    cfg = load_config(recipes.path("ecommerce"), [f"model.modalities.text.backbone.name=hf:{tiny_bert}", "model.head_rank=4"])
    del cfg.model.modalities["image"]
    torch.manual_seed(0)
    model = build_model(cfg.model)
    data = load_layout(rated_layout[0], ["title"])
    objective = build({"name": "multitask", "weighting": "uncertainty", "tasks": {"rating": {}, "ctr": {}, "category": {}}})
    objective.prepare(model, objective_context(data, leave_one_out(data.sequences)))
    with torch.no_grad():
        for p in model.heads.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.eval()
    loaded, manifest = load_package(export_package(model, cfg, tmp_path / "pkg"))
    assert set(manifest["heads"]) == {"rating", "ctr", "category", "multitask"}
    assert manifest["heads"]["category"]["classes"] == ["c0", "c1", "c2"]
    for name, head in model.heads.items():
        for (key, value), (key2, value2) in zip(head.state_dict().items(), loaded.heads[name].state_dict().items()):
            assert key == key2 and torch.equal(value, value2), f"heads.{name}.{key}"
    u, e = F.normalize(torch.randn(5, model.dim), dim=-1), F.normalize(torch.randn(5, model.dim), dim=-1)
    with torch.no_grad():
        torch.testing.assert_close(loaded.heads["rating"](u, e), model.heads["rating"](u, e))
    # Continued training on the loaded model keeps its trained heads (same shapes) instead of new ones.
    again = build({"name": "rating"})
    again.prepare(loaded, objective_context(data, leave_one_out(data.sequences)))
    assert again.head is loaded.heads["rating"]
    # init_from a package: the parent's heads are restored, a head the parent lacks starts untrained.
    torch.manual_seed(1)
    child = build_model(cfg.model)
    binary = build({"name": "ctr", "num_negatives": 1, "labels": "none"})
    binary.task = "click"
    binary.prepare(child, objective_context(data, leave_one_out(data.sequences)))
    init_from_package(child, str(tmp_path / "pkg"), cfg)
    assert set(child.heads) == {"rating", "ctr", "category", "multitask", "click"}
    assert torch.equal(child.heads["rating"].weight, model.heads["rating"].weight)
    assert child.heads["click"].scale.item() == 5.0 and binary.head is child.heads["click"]


# -- end to end -----------------------------------------------------------------------------------------

def test_ctr_reports_pointwise_metrics_on_held_out_positives_and_sampled_negatives(learning_setup):
    """The click head's AUC / log-loss / P/R/F1 on the test split, recomputed one case at a time with sklearn
    from the same seeded negatives (items of the user's history left out); a multitask reports it by task."""
    from sklearn.metrics import log_loss, roc_auc_score

    base, data, features = learning_setup
    model = copy.deepcopy(base)
    split = leave_one_out(data.sequences)
    objective = build({"name": "ctr", "num_negatives": 3, "labels": "none"})
    objective.prepare(model, objective_context(data, split, seed=5))
    with torch.no_grad():
        model.heads["ctr"].bias.fill_(-0.5)
    content = encode_catalog(model, features, len(data.item_ids), 64, progress=False)
    found = objective.held_out_metrics(model, content, data, split, max_history=3)
    negatives = objective._eval_sampler.sample(split.test.targets, 3, np.random.default_rng([5, 0xC7]))
    scores, labels = [], []
    with torch.no_grad():
        for history, target, drawn in zip(split.test.histories, split.test.targets, negatives):
            recent = content[torch.as_tensor(history[-3:])].unsqueeze(0)
            user = model.user_vectors(recent, torch.ones(1, recent.shape[1], dtype=torch.bool))
            for item, label in [(int(target), 1), *((int(j), 0) for j in drawn if j not in history)]:
                vector = model.item_vectors(content[item].unsqueeze(0))
                scores.append(float(model.heads["ctr"]((user * vector).sum(-1))))
                labels.append(label)
    probabilities = 1 / (1 + np.exp(-np.array(scores)))
    assert found["cases"] == len(split.test) and found["negatives_per_case"] == 3
    assert found["auc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)
    assert found["log_loss"] == pytest.approx(log_loss(labels, probabilities), rel=1e-4)
    predicted = probabilities >= 0.5
    tp = int((predicted & (np.array(labels) == 1)).sum())
    assert found["precision"] == pytest.approx(tp / max(1, int(predicted.sum())), abs=1e-6)
    assert found["recall"] == pytest.approx(tp / sum(labels), abs=1e-6)
    multi = build({"name": "multitask", "tasks": {"retrieval": {}, "ctr": {"num_negatives": 3, "labels": "none"}}})
    multi.prepare(model, objective_context(data, split, seed=5))
    assert multi.held_out_metrics(model, content, data, split, 3) == {"ctr": found}


def test_multitask_sasrec_recipe_runs_from_the_cli(tiny_bert, tmp_path, capsys):
    out = tmp_path / "run"
    # One cheap baseline: this test is about the objective and the encoder, not the baselines.
    overrides = tiny_overrides(tiny_bert, **{"train.log_every": 1, "model.max_history": 4, "eval.baselines": "[popularity]"})
    assert main(["recipe", "ecommerce-multitask", *overrides, "--out", str(out), "--quiet"]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "step" in r and r.get("split") is None and r.get("system") is None]  # not the baselines' training
    assert steps and all({"retrieval/loss", "ctr/loss", "ctr/accuracy", "category/loss"} <= set(r) for r in steps)
    assert all(math.isfinite(r["loss"]) for r in steps)
    report = json.loads((out / "report.json").read_text())
    manifest = json.loads((out / "adapter" / "crossrec.json").read_text())
    assert manifest["model"]["user_encoder"]["name"] == "sasrec" and set(manifest["heads"]) == {"ctr", "category"}
    model, _ = load_package(out / "adapter")
    assert type(model.user_encoder).__name__ == "SasRecUserEncoder"
    # The reported ranking metrics are the exported model's: recomputed from the package on the run's data
    # and split, they match exactly (a metric written by the wrong model or split would not).
    from crossrec_peft.config import load_config
    from crossrec_peft.data import load_data, make_split
    from crossrec_peft.evaluation import encode_catalog, evaluate_cases, model_scorer
    from crossrec_peft.pipeline import catalog_features

    cfg = load_config(out / "config.yaml")
    data = load_data(cfg)
    split = make_split(data, cfg.data)
    content = encode_catalog(model, catalog_features(model, data, cfg), len(data.item_ids), 64, progress=False)
    again = evaluate_cases(model_scorer(model, content, cfg.model.max_history), split.test, list(cfg.eval.ks), seed=cfg.seed, repeats=cfg.eval.repeats)
    assert again == pytest.approx(report["metrics"]["model"], abs=1e-9)
    assert report["metrics"]["model"]["ndcg@10"] > 0


def test_rating_on_implicit_data_stops_before_training(tiny_bert, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["recipe", "ecommerce", *tiny_overrides(tiny_bert), "train.objective=rating", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "rating needs explicit ratings" in err and "Traceback" not in err
    metrics = out / "metrics.jsonl"
    assert not metrics.exists() or not any('"step"' in line for line in metrics.read_text().splitlines())
