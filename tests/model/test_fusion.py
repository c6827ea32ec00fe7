"""Fusion heads: the (fusion x missing policy x modality layout) table (shapes, missing modalities, gradients),
the identity start, option validation, and a real TwoTowerModel (tiny BERT + tiny CLIP image tower) per fusion."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from omegaconf import OmegaConf

from crossrec_peft import recipes, registry
from crossrec_peft.backbones.base import FeatureContext
from crossrec_peft.cli import main
from crossrec_peft.config import component, load_config
from crossrec_peft.data.batching import Collator
from crossrec_peft.errors import ConfigError
from crossrec_peft.model import build_model
from crossrec_peft.objectives import InBatchSoftmax, RetrievalOptions
from tests.conftest import TINY_CLIP_IMAGE

FUSIONS = ["concat", "sum", "gated", "attention"]
POLICIES = ["placeholder", "mask"]
# name -> (modality sizes, extra options). "two": out_dim 48 = text's size, so text is the identity-start anchor;
# "two-dim24": an output size matching no modality (no anchor: random start); "one": a text-only model.
LAYOUTS = {
    "two": ({"text": 48, "image": 32}, {}),
    "two-dim24": ({"text": 48, "image": 32}, {"dim": 24}),
    "one": ({"text": 48}, {}),
}
# Presence per row (text, image). Row 4 repeats row 1's text and row 5 row 2's image; rows 3 and 6 have nothing.
PRESENT = [(1, 1), (1, 0), (0, 1), (0, 0), (1, 0), (0, 1), (0, 0), (1, 1)]
B = len(PRESENT)
TABLE = [
    pytest.param(name, missing, layout, id=f"{name}-{missing}-{layout}")
    for name in FUSIONS
    for missing in POLICIES
    for layout in LAYOUTS
]


def build(name, dims, **options):
    entry, _, opts = component(registry.fusions, {"name": name, **options}, "model.fusion")
    return entry.factory(opts, dims)


def build_case(name, missing, layout):
    torch.manual_seed(0)
    dims, extra = LAYOUTS[layout]
    return build(name, dims, missing=missing, **extra), dims


def make_batch(dims, seed=0, pattern=PRESENT):
    """Random embeddings with zero rows where a modality is missing (as ModalityEncoder returns them)."""
    g = torch.Generator().manual_seed(seed)
    emb, present = {}, {}
    for col, (m, d) in enumerate(dims.items()):
        present[m] = torch.tensor([bool(row[col]) for row in pattern])
        e = torch.randn(len(pattern), d, generator=g)
        if len(pattern) == B:
            e[4], e[5] = e[1], e[2]  # same content as rows 1 and 2 wherever present there
        emb[m] = torch.where(present[m].unsqueeze(-1), e, torch.zeros(()))
    return emb, present


def garbage(emb, present, seed=1):
    """The same batch with large random values, inf and NaN in every missing row."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for m, e in emb.items():
        junk = torch.randn(e.shape, generator=g) * 1e3
        junk[:, 0] = float("inf")
        junk[:, 1] = float("nan")
        out[m] = torch.where(present[m].unsqueeze(-1), e, junk)
    return out


@pytest.mark.parametrize("name, missing, layout", TABLE)
def test_shape_finite_and_missing_content_is_never_read(name, missing, layout):
    fusion, dims = build_case(name, missing, layout)
    emb, present = make_batch(dims)
    out = fusion(emb, present)
    expected_dim = LAYOUTS[layout][1].get("dim", max(dims.values()))
    assert fusion.out_dim == expected_dim and out.shape == (B, expected_dim)
    assert torch.isfinite(out).all()
    # Rows whose present modalities are identical give identical outputs.
    same = [(1, 4), (3, 6)] + ([(2, 5)] if len(dims) == 2 else [(2, 3), (2, 5), (2, 6)])
    for a, b in same:
        assert torch.allclose(out[a], out[b], atol=1e-6), (a, b)
    assert not torch.allclose(out[0], out[1], atol=1e-4)  # ... and different content gives different outputs
    # Whatever a missing row holds (here: junk, inf, NaN) is never read.
    assert torch.allclose(fusion(garbage(emb, present), present), out, atol=1e-6)
    # Inference (eval, no grad: MultiheadAttention's fast path) gives the same vectors.
    fusion.eval()
    with torch.no_grad():
        assert torch.allclose(fusion(emb, present), out, atol=1e-5)
    if missing == "mask" and name != "concat":
        assert torch.equal(out[3], torch.zeros(expected_dim))  # nothing present: nothing to say


@pytest.mark.parametrize("name, missing, layout", TABLE)
def test_whole_batch_without_any_modality_is_finite(name, missing, layout):
    fusion, dims = build_case(name, missing, layout)
    emb, present = make_batch(dims, pattern=[(0, 0)] * 3)
    out = fusion(emb, present)
    assert out.shape == (3, fusion.out_dim) and torch.isfinite(out).all()
    emb, present = make_batch(dims, pattern=[(1, 0)])  # a batch of one
    assert torch.isfinite(fusion(emb, present)).all()


def cosine_loss(out, seed=2):
    target = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    return -F.cosine_similarity(out, target, dim=-1).sum()


@pytest.mark.parametrize("name, missing, layout", TABLE)
def test_gradients_reach_every_parameter_and_placeholders_only_when_missing(name, missing, layout):
    fusion, dims = build_case(name, missing, layout)
    has_placeholders = hasattr(fusion, "placeholders")
    assert has_placeholders == (missing == "placeholder")
    emb, present = make_batch(dims)
    emb = {m: e.requires_grad_() for m, e in emb.items()}
    optimizer = torch.optim.SGD(fusion.parameters(), lr=0.5)
    # Zero-started parts (the non-anchor projections, concat's last MLP layer) block gradients to what lies
    # behind them only until the first step has moved them.
    for _ in range(3):
        optimizer.zero_grad()
        for e in emb.values():
            e.grad = None
        cosine_loss(fusion(emb, present)).backward()
        optimizer.step()
    grads = {n: p.grad for n, p in fusion.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    dead = [n for n, g in grads.items() if not n.startswith("placeholders.") and g.abs().sum() == 0]
    assert not dead, dead
    if has_placeholders:  # every modality is missing in some row of this batch
        assert all(grads[f"placeholders.{m}"].abs().sum() > 0 for m in dims)
    for m, e in emb.items():  # nothing flows into a missing row's content
        assert e.grad[~present[m]].abs().sum() == 0 and e.grad[present[m]].abs().sum() > 0

    # Nothing missing: the placeholders get no gradient; everything else still does.
    full, all_present = make_batch(dims, seed=3, pattern=[(1, 1)] * 4)
    fusion.zero_grad(set_to_none=True)
    cosine_loss(fusion(full, all_present)).backward()
    for n, p in fusion.named_parameters():
        if n.startswith("placeholders."):
            assert p.grad is None or p.grad.abs().sum() == 0, n


@pytest.mark.parametrize("missing", POLICIES)
@pytest.mark.parametrize("name", ["sum", "gated", "concat"])
def test_identity_start_keeps_the_zero_shot_embeddings(name, missing):
    emb, present = make_batch({"text": 48, "image": 32}, pattern=[(1, 1)] * 6)
    text = F.normalize(emb["text"], dim=-1)
    # One modality whose size is the output size: the untrained fusion is the identity on it (after the
    # L2 normalisation every fusion applies, as `mean` does), so a text-only model is the zero-shot baseline.
    single = build(name, {"text": 48}, missing=missing)
    assert torch.allclose(single({"text": emb["text"]}, {"text": present["text"]}), text, atol=1e-6)
    # With more modalities the anchor (the first of the output size) passes through up to a per-row constant:
    # cosine similarities, and so rankings, equal the text-only ones until training moves the weights.
    both = build(name, {"text": 48, "image": 32}, missing=missing)
    assert torch.allclose(F.normalize(both(emb, present), dim=-1), text, atol=1e-6)
    same_size = build(name, {"text": 32, "image": 32}, missing=missing)  # two of the size: the first is the anchor
    emb32, present32 = make_batch({"text": 32, "image": 32}, pattern=[(1, 1)] * 6)
    assert torch.allclose(F.normalize(same_size(emb32, present32), dim=-1), F.normalize(emb32["text"], dim=-1), atol=1e-6)


def test_identity_is_only_a_start():
    fusion = build("gated", {"text": 48})
    emb, present = make_batch({"text": 48}, pattern=[(1,)] * 4)
    optimizer = torch.optim.SGD(fusion.parameters(), lr=0.5)
    cosine_loss(fusion(emb, present)).backward()
    optimizer.step()
    assert not torch.allclose(fusion(emb, present), F.normalize(emb["text"], dim=-1), atol=1e-3)


def test_mean_fusion_keeps_its_behaviour():
    with pytest.raises(ConfigError, match="one size"):
        build("mean", {"text": 48, "image": 32})
    with pytest.raises(ConfigError, match="takes no options"):
        component(registry.fusions, {"name": "mean", "missing": "mask"}, "model.fusion")
    emb, present = make_batch({"text": 8})
    single = build("mean", {"text": 8})
    assert torch.allclose(single(emb, present), F.normalize(emb["text"], dim=-1))  # passes through normalised
    dims = {"a": 8, "b": 8}
    emb, present = make_batch(dims)
    out = build("mean", dims)(emb, present)
    assert torch.isfinite(out).all() and torch.equal(out[3], torch.zeros(8))
    assert torch.allclose(out[1], F.normalize(emb["a"][1], dim=-1))  # b missing: left out of the mean
    both = (F.normalize(emb["a"][0], dim=-1) + F.normalize(emb["b"][0], dim=-1)) / 2
    assert torch.allclose(out[0], both)


def test_gated_mixes_more_than_two_modalities_per_dimension():
    dims = {"text": 16, "image": 16, "audio": 16}
    fusion = build("gated", dims, missing="mask")
    assert fusion.gate.out_features == 3 * 16  # one logit per modality and dimension (softmax over modalities)
    assert build("gated", {"text": 16, "image": 16}).gate.out_features == 16  # two: one sigmoid gate per dimension
    assert build("gated", {"text": 16}).gate is None
    emb, present = make_batch(dims, pattern=[(1, 1, 1), (1, 0, 1), (0, 0, 0), (0, 1, 0)])
    out = fusion(emb, present)
    assert torch.isfinite(out).all() and torch.equal(out[2], torch.zeros(16))
    # Only the image present: the row is the image's projection alone (zero at the start: text is the anchor).
    assert torch.allclose(out[3], fusion.proj["image"](F.normalize(emb["image"][3], dim=-1)))


@pytest.mark.parametrize("dims", [{"text": 16, "image": 8}, {"text": 16, "image": 8, "audio": 12}], ids=["two", "three"])
def test_gated_under_mask_gives_a_lone_modality_the_whole_row(dims):
    torch.manual_seed(0)
    fusion = build("gated", dims, missing="mask")
    with torch.no_grad():  # a trained-looking gate and projections, not the start
        for p in fusion.parameters():
            p.copy_(torch.randn_like(p))
    pattern = [(1,) * len(dims)] + [tuple(int(i == j) for j in range(len(dims))) for i in range(len(dims))]
    emb, present = make_batch(dims, pattern=pattern)
    out = fusion(emb, present)
    for row, m in enumerate(dims, start=1):
        assert torch.allclose(out[row], fusion.proj[m](F.normalize(emb[m][row], dim=-1)), atol=1e-6), m
    # With all present, the gate's weights per dimension sum to one: a convex mix of the projections.
    projected = torch.stack([fusion.proj[m](F.normalize(emb[m][0], dim=-1)) for m in dims])
    assert (out[0] <= projected.max(0).values + 1e-6).all() and (out[0] >= projected.min(0).values - 1e-6).all()


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"name": "gated", "missing": "bogus"}, r"'model\.fusion': missing must be placeholder or mask, got 'bogus'"),
        ({"name": "attention", "head": 2}, r"Unknown key 'model\.fusion\.head' for fusion 'attention'\. Did you mean 'heads'\?"),
        ({"name": "sum", "mising": "mask"}, r"Did you mean 'missing'\?"),
        ({"name": "concat", "dims": 64}, r"Did you mean 'dim'\?"),
        ({"name": "sum", "dim": 0}, "dim must be positive"),
        ({"name": "concat", "hidden": -3}, "hidden must be positive"),
        ({"name": "attention", "heads": 0}, "heads must be positive"),
        ({"name": "attention", "dropout": 1.5}, r"dropout must be in \[0, 1\)"),
        ({"name": "sum", "dim": "big"}, r"Invalid value for 'model\.fusion\.dim'"),
    ],
)
def test_options_are_validated(spec, message):
    with pytest.raises(ConfigError, match=message):
        component(registry.fusions, spec, "model.fusion")


def test_attention_heads_must_divide_the_output_size():
    with pytest.raises(ConfigError, match=r"heads \(5\) must divide the output size \(48\)"):
        build("attention", {"text": 48, "image": 32}, heads=5)
    assert build("attention", {"text": 48, "image": 32}, heads=5, dim=40).out_dim == 40


def test_ls_prints_one_line_per_fusion(capsys):
    for entry in registry.fusions.entries():
        assert entry.description and entry.description == entry.factory.__doc__.strip().splitlines()[0]
    assert main(["ls", "fusion"]) == 0
    out = capsys.readouterr().out
    for name in ["mean", *FUSIONS]:
        assert name in out


# -- a real model: tiny BERT text tower + tiny open_clip image tower, items with and without images -------------

N = 10
ITEMS = {
    "title": [f"{c} {n} number {i}" for i, (c, n) in enumerate(zip(["red", "blue"] * 5, ["lamp", "desk", "pen", "mug", "cup"] * 2))],
    "category": ["home", "office"] * 5,
    # Items 2 and 5 have no image: their image modality is missing.
    "image": [None if i in (2, 5) else f"img/{i}.png" for i in range(N)],
}
# Windows of item indices (each position after the first is a training target); items 2 and 5 appear twice.
WINDOWS = [np.array([0, 1, 2, 3]), np.array([4, 5, 6]), np.array([7, 8]), np.array([2, 5, 9])]
PAIRS = sum(len(w) - 1 for w in WINDOWS)


def tiny_config(tiny_bert, fusion: str, text_only: bool = False):
    overrides = [
        f"model.modalities.text.backbone.name=hf:{tiny_bert}",
        "model.modalities.text.backbone.max_length=12",
        "model.modalities.text.method.r=2",
        "model.head_rank=4",
        f"model.fusion={fusion}",  # a component-valued override: replaces the recipe's fusion and its options
        *(f"{k}={v}" for k, v in TINY_CLIP_IMAGE.items()),  # an image tower that trains, of size 64
    ]
    cfg = load_config(recipes.path("ecommerce"), overrides)
    if text_only:
        raw = OmegaConf.to_container(cfg)
        del raw["model"]["modalities"]["image"]
        cfg = load_config(raw)
    return cfg


def model_batch(model, root):
    context = FeatureContext(item_ids=[str(i) for i in range(N)], root=root, on_bad_image="placeholder")
    features = model.featurize(ITEMS, context)
    return Collator(features, model.collate_items)(WINDOWS)


@pytest.mark.parametrize(
    "fusion",
    ["concat", "sum", "{name: gated, missing: mask}", "{name: attention, heads: 2, missing: mask}"],
    ids=["concat", "sum", "gated-mask", "attention-mask"],
)
def test_two_tower_model_trains_through_each_fusion(tiny_bert, image_root, fusion):
    cfg = tiny_config(tiny_bert, fusion)
    # Another fusion replaces the recipe's with its defaults; naming the recipe's fusion again sets options on
    # top of the recipe's.
    asked = yaml.safe_load(fusion)
    asked = asked if isinstance(asked, dict) else {"name": asked}
    recipe_fusion = OmegaConf.to_container(load_config(recipes.path("ecommerce")).model.fusion)
    if asked["name"] == recipe_fusion["name"]:
        asked = {**recipe_fusion, **asked}
    assert OmegaConf.to_container(cfg.model.fusion) == asked
    torch.manual_seed(0)
    model = build_model(cfg.model)
    # tiny BERT 32, image 64: the largest size unless the fusion's `dim` says otherwise
    size = asked.get("dim") or 64
    assert set(model.fusion.dims) == {"text", "image"} and model.fusion.out_dim == size
    batch = model_batch(model, image_root)
    assert not bool(batch["items"]["image"]["present"].all())  # items 2 and 5 lack their image
    model.train()
    outputs = model(batch)
    assert outputs["users"].shape == (PAIRS, size) and outputs["items"].shape == (PAIRS, size)
    assert torch.isfinite(outputs["users"]).all() and torch.isfinite(outputs["items"]).all()
    loss, _ = InBatchSoftmax(RetrievalOptions())(outputs, batch)
    assert torch.isfinite(loss)
    loss.backward()
    fusion_grads = [p.grad for p in model.fusion.parameters()]
    assert fusion_grads and all(g is not None and torch.isfinite(g).all() for g in fusion_grads)
    assert any(g.abs().sum() > 0 for g in fusion_grads)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.modalities["image"].parameters())


@pytest.mark.parametrize("fusion", ["sum", "gated"])
def test_text_only_model_starts_as_the_zero_shot_baseline(tiny_bert, image_root, fusion):
    model = build_model(tiny_config(tiny_bert, fusion, text_only=True).model)
    model.eval()
    batch = model_batch(model, image_root)
    with torch.no_grad():
        content = model.encode_content(batch["items"])
        text_inputs = {k: v for k, v in batch["items"]["text"].items() if k != "present"}
        pooled = model.modalities["text"].backbone(**text_inputs)
        items = model.item_vectors(content)
    assert torch.allclose(content, F.normalize(pooled, dim=-1), atol=1e-6)
    assert torch.allclose(items, F.normalize(pooled, dim=-1), atol=1e-6)
