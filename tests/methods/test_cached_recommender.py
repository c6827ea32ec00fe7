"""Cached-method domains in a Recommender beside a LoRA domain: a mixed-domain batch scores every row as
its domain's package alone does. `top` with LoRA shares the backbone (its uncached forward is exact); `side`
and `top` tuning full layers get a backbone of their own, as their `own_backbone_reason` says."""

from __future__ import annotations

import pytest
import torch

from tests._packages import alone_scores, make_package, recommender_with
from tests.conftest import small_layout

DOMAINS = ["lora", "side", "top-lora", "top-full"]


@pytest.fixture(scope="module")
def setup(tiny_bert, tmp_path_factory):
    root = tmp_path_factory.mktemp("cached-routing")
    data = small_layout(root / "data", num_items=16)
    packages = {m: make_package(tiny_bert, root / "pk", m, m, seed=i, data=data) for i, m in enumerate(DOMAINS)}
    return recommender_with(packages), packages, data


def test_which_domains_share_the_backbone(setup):
    rec, _, _ = setup
    text = {d: rec._domains[d].model.modalities["text"] for d in DOMAINS}
    assert set(rec._domains["lora"].shared) == {"text"} and set(rec._domains["top-lora"].shared) == {"text"}
    assert rec._domains["lora"].shared["text"] is rec._domains["top-lora"].shared["text"]
    for own in ("side", "top-full"):
        assert rec._domains[own].shared == {}
        assert text[own].backbone is not rec._domains["lora"].shared["text"].backbone


def test_mixed_batch_equals_each_domain_alone(setup):
    rec, packages, data = setup
    histories = [["i1", "i2"], ["i3"], ["i5", "i6", "i7"], ["i0", "i4"], ["i9", "i10"], ["i2", "i11"]]
    domains = ["side", "lora", "top-lora", "top-full", "side", "lora"]
    candidates = ["i0", "i4", "i8", "i11", "i15", "i13"]
    mixed = rec.score(histories, candidates, domains=domains)
    for row, (history, domain) in enumerate(zip(histories, domains)):
        expected = alone_scores(packages[domain], data, history, candidates)
        assert torch.allclose(mixed[row], expected, atol=1e-5), (domain, mixed[row], expected)
    same = rec.score([histories[0]] * len(DOMAINS), candidates, domains=DOMAINS)
    for i in range(1, len(DOMAINS)):  # the domains really differ
        assert (same[i] - same[0]).abs().max() > 1e-3, DOMAINS[i]
