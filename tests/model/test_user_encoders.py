"""User encoders: one-pass prefixes equal per-position calls, padding is ignored, nothing leaks from later
items into earlier prefixes, histories keep their most recent items, and trained encoders survive the
adapter package."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crossrec_peft import recipes, registry
from crossrec_peft.config import component, load_config
from crossrec_peft.errors import ConfigError
from crossrec_peft.evaluation import pad_histories
from crossrec_peft.model import build_model
from crossrec_peft.package import export_package, load_package

DIM = 16
SPECS = [{"name": "mean"}, {"name": "attention", "key_dim": 8}, {"name": "sasrec", "hidden": 8, "heads": 2, "layers": 2, "max_length": 12}]
IDS = [s["name"] for s in SPECS]


def make(spec: dict, seed: int = 0) -> torch.nn.Module:
    """The encoder, moved off its initial values (attention's zero query and sasrec's zero output projection
    would make both the mean encoder and hide ordering and masking mistakes)."""
    entry, _, options = component(registry.user_encoders, spec, "model.user_encoder")
    torch.manual_seed(seed)
    encoder = entry.factory(options, DIM)
    with torch.no_grad():
        for p in encoder.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return encoder.eval()


def batch(lengths=(6, 3, 1), width=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    history = torch.randn(len(lengths), width, DIM, generator=g)
    mask = torch.arange(width).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    return history, mask


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_prefixes_equal_per_position_calls(spec):
    encoder = make(spec)
    history, mask = batch()
    with torch.no_grad():
        prefixes = encoder.prefixes(history, mask)
        for t in range(history.shape[1]):
            one = encoder(history[:, : t + 1], mask[:, : t + 1])
            real = mask[:, t]  # positions past a row's end are padding: only real ones are compared
            torch.testing.assert_close(prefixes[real, t], one[real], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_padding_is_ignored(spec):
    encoder = make(spec)
    history, mask = batch()
    noisy = history.clone()
    noisy[~mask] = 100.0 * torch.randn_like(noisy[~mask])
    with torch.no_grad():
        torch.testing.assert_close(encoder(history, mask), encoder(noisy, mask), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(encoder.prefixes(history, mask)[mask], encoder.prefixes(noisy, mask)[mask], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_no_future_leakage_in_prefixes(spec):
    encoder = make(spec)
    history, mask = batch(lengths=(6, 6))
    history.requires_grad_(True)
    prefixes = encoder.prefixes(history, mask)
    for t in range(5):
        (grad,) = torch.autograd.grad(prefixes[:, t].sum(), history, retain_graph=True)
        assert grad[:, t + 1 :].abs().max() == 0, f"prefix {t} depends on later items"
        assert grad[:, : t + 1].abs().sum() > 0, f"prefix {t} ignores its own items"
    # The same, by changing the last item: no earlier prefix moves, the last one does.
    changed = history.detach().clone()
    changed[:, -1] += 1.0
    with torch.no_grad():
        before, after = encoder.prefixes(history.detach(), mask), encoder.prefixes(changed, mask)
    torch.testing.assert_close(before[:, :-1], after[:, :-1])
    assert not torch.allclose(before[:, -1], after[:, -1])


def test_sasrec_and_attention_start_as_the_mean_and_sasrec_learns_order():
    history, mask = batch()
    mean = component(registry.user_encoders, {"name": "mean"}, "u")[0].factory(None, DIM)
    for spec in SPECS[1:]:
        entry, _, options = component(registry.user_encoders, spec, "u")
        fresh = entry.factory(options, DIM).eval()
        with torch.no_grad():
            torch.testing.assert_close(fresh(history, mask), mean(history, mask))
    sasrec = make(SPECS[2])
    full = mask.all(1)
    reversed_history = history.flip(1)
    with torch.no_grad():
        # Positions make SASRec order-aware: reversing a full history changes the user (the mean cannot tell).
        assert not torch.allclose(sasrec(history[full], mask[full]), sasrec(reversed_history[full], mask[full]), atol=1e-4)
        torch.testing.assert_close(mean(history[full], mask[full]), mean(reversed_history[full], mask[full]))


def test_sasrec_keeps_the_most_recent_items_beyond_max_length():
    encoder = make(SPECS[2])  # max_length 12
    history, mask = batch(lengths=(20, 20), width=20)
    with torch.no_grad():
        torch.testing.assert_close(encoder(history, mask), encoder(history[:, -12:], mask[:, -12:]))
    with pytest.raises(ConfigError, match="at least model.max_history \\+ 1"):
        encoder.prefixes(history, mask)  # training windows must fit the positions: a clear error


@pytest.mark.parametrize(
    "mask_rows",
    [
        [[1] * 12, [1] * 3 + [0] * 9, [1] + [0] * 11, [0] * 12, [1] * 7 + [0] * 5, [1] * 2 + [0] * 10],  # right-padded
        [[1] * 5 + [0] * 7, [1] * 5 + [0] * 7],  # one group narrower than the batch
        [[1] * 5 + [0] * 7, [1] * 7 + [0] * 5, [1] * 2 + [0] * 10],  # rows of one group (5 and 7 wide) cut at 7
        [[1, 0, 1] + [0] * 9, [0] * 4 + [1] * 4 + [0] * 4, [1] * 12],  # holes: a row is cut after its last item
    ],
    ids=["mixed-widths", "one-narrow-group", "shared-group", "holes"],
)
def test_sasrec_prefixes_in_width_groups_equal_the_whole_batch(mask_rows):
    """SASRec encodes rows in groups cut after their widest row's last real item: every real position's state
    and gradient is the one the whole padded batch gives (`_prefixes`)."""
    encoder = make(SPECS[2])  # max_length 12
    mask = torch.tensor(mask_rows, dtype=torch.bool)
    history = torch.randn(len(mask), 12, DIM, generator=torch.Generator().manual_seed(3))
    grouped_in, whole_in = history.clone().requires_grad_(True), history.clone().requires_grad_(True)
    grouped, whole = encoder.prefixes(grouped_in, mask), encoder._prefixes(whole_in, mask)
    torch.testing.assert_close(grouped[mask], whole[mask], atol=1e-5, rtol=1e-4)
    weights = torch.randn(int(mask.sum()), DIM, generator=torch.Generator().manual_seed(4))
    (grouped[mask] * weights).sum().backward()
    (whole[mask] * weights).sum().backward()
    torch.testing.assert_close(grouped_in.grad, whole_in.grad, atol=1e-5, rtol=1e-4)
    for p in encoder.parameters():  # the two passes' parameter gradients add up: compare them apart
        p.grad = None
    (encoder.prefixes(history, mask)[mask] * weights).sum().backward()
    grouped_grads = [p.grad.clone() for p in encoder.parameters()]
    encoder.zero_grad()
    (encoder._prefixes(history, mask)[mask] * weights).sum().backward()
    for a, p in zip(grouped_grads, encoder.parameters()):
        torch.testing.assert_close(a, p.grad, atol=1e-5, rtol=1e-4)


def test_width_groups_bound_the_padding():
    """Rows fall in groups by the power of two at or above their width, so no row is padded to more than
    about twice its own width (here 21-position windows with mostly short histories, as on Scientific)."""
    from crossrec_peft.model.user_encoders import width_groups

    widths = torch.tensor([1, 2, 2, 3, 5, 8, 9, 21, 4, 1, 16, 17])
    mask = torch.arange(21).unsqueeze(0) < widths.unsqueeze(1)
    groups = width_groups(mask)
    assert sorted(torch.cat([rows for rows, _ in groups]).tolist()) == list(range(len(widths)))
    for rows, width in groups:
        assert width == int(widths[rows].max())
        assert all(width < 2 * w or width == w for w in widths[rows].tolist())
    assert sum(len(rows) * width for rows, width in groups) < 0.5 * len(widths) * 21


def test_sasrec_positions_must_fit_the_training_window():
    with pytest.raises(ConfigError, match=r"max_length \(5\) must be at least model.max_history \+ 1 \(6\)"):
        load_config(recipes.path("ecommerce"), ["model.user_encoder={name: sasrec, max_length: 5}", "model.max_history=5"])
    load_config(recipes.path("ecommerce"), ["model.user_encoder={name: sasrec, max_length: 6}", "model.max_history=5"])


def test_histories_longer_than_max_history_keep_the_most_recent_items():
    index, mask = pad_histories([np.arange(10), np.array([3, 4])], max_history=4)
    assert index[0].tolist() == [6, 7, 8, 9] and index[1, :2].tolist() == [3, 4] and mask.sum(1).tolist() == [4, 2]


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"name": "sasrec", "hidden": 10, "heads": 3}, "divisible by 'heads'"),
        ({"name": "sasrec", "layers": 0}, "'layers' must be positive"),
        ({"name": "sasrec", "dropout": 1.5}, "'dropout' must be in"),
        ({"name": "attention", "key_dims": 3}, "Did you mean 'key_dim'"),
    ],
)
def test_bad_options_are_config_errors(spec, message):
    with pytest.raises(ConfigError, match=message):
        entry, _, options = component(registry.user_encoders, spec, "model.user_encoder")
        entry.factory(options, DIM)


@pytest.mark.parametrize("spec", SPECS[1:], ids=IDS[1:])
def test_trained_encoder_round_trips_through_the_package(spec, tiny_bert, tmp_path):
    cfg = load_config(
        recipes.path("ecommerce"),
        [f"model.modalities.text.backbone.name=hf:{tiny_bert}", "model.head_rank=4", "model.max_history=5", f"model.user_encoder={spec}"],
    )
    del cfg.model.modalities["image"]  # the text tower is enough to carry the user encoder
    torch.manual_seed(0)
    model = build_model(cfg.model)
    with torch.no_grad():
        for p in model.user_encoder.parameters():
            p.add_(0.3 * torch.randn_like(p))
    model.eval()
    loaded, manifest = load_package(export_package(model, cfg, tmp_path / "pkg"))
    assert manifest["model"]["user_encoder"]["name"] == spec["name"]
    history, mask = batch(width=6)
    history = history.repeat(1, 1, model.dim // DIM + 1)[..., : model.dim]
    with torch.no_grad():
        torch.testing.assert_close(loaded.user_vectors(history, mask), model.user_vectors(history, mask))
        fresh = build_model(cfg.model).eval()
        assert not torch.allclose(fresh.user_vectors(history, mask), model.user_vectors(history, mask), atol=1e-4)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_pooling_weights_reproduce_the_encoder(spec):
    """`pooling_weights` (what exact explanations rely on): forward is the weighted sum of the history with
    them, they sum to 1 over real items and are 0 at padding. SASRec has none (leave-one-out explains it)."""
    encoder = make(spec).eval()
    pooling = getattr(encoder, "pooling_weights", None)
    if spec["name"] == "sasrec":
        assert pooling is None
        return
    torch.manual_seed(1)
    history = torch.randn(3, 5, DIM)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False], [True] + [False] * 4])
    weights = pooling(history, mask)
    torch.testing.assert_close((weights.unsqueeze(-1) * history).sum(1), encoder(history, mask))
    torch.testing.assert_close(weights.sum(1), torch.ones(3))
    assert (weights[~mask] == 0).all()
    if spec["name"] == "attention":
        assert weights[0].std() > 1e-3, "the trained query weighs items differently"
