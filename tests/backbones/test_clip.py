"""open_clip towers: the shipped tiny architecture, loading saved weights through open_clip's real
`pretrained=<file>` path, LoRA on nn.MultiheadAttention, image checks, quantization."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from crossrec_peft.backbones.base import FeatureContext
from crossrec_peft.backbones.clip import MAX_IMAGE_PIXELS, ClipBackbone, ClipOptions, check_images, list_architectures
from crossrec_peft.errors import ConfigError, DataError
from crossrec_peft.methods.peft_methods import Lora, LoraOptions

ARCH = "crossrec-tiny-vit"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A tiny CLIP saved as safetensors, as a real pretrained checkpoint would be."""
    import open_clip
    from safetensors.torch import save_file

    from crossrec_peft.backbones.clip import _ensure_configs

    _ensure_configs()
    torch.manual_seed(1)
    model = open_clip.create_model(ARCH)
    path = tmp_path_factory.mktemp("clip") / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path, model


def test_tiny_architecture_is_registered_as_data():
    assert ARCH in list_architectures()
    with pytest.raises(ConfigError, match="Unknown open_clip architecture 'ViT-B-33'. Did you mean"):
        ClipBackbone("ViT-B-33", ClipOptions())


def test_saved_weights_load_through_pretrained_file(weights):
    path, reference = weights
    image = ClipBackbone(ARCH, ClipOptions(tower="image", pretrained=str(path)))
    text = ClipBackbone(ARCH, ClipOptions(tower="text", pretrained=str(path)))
    pixels = torch.randn(2, 3, 32, 32)
    reference.eval()
    reference.requires_grad_(False)  # frozen like ours, so nn.MultiheadAttention takes the same (fast) path
    with torch.no_grad():
        assert torch.equal(image(pixel_values=pixels), reference.encode_image(pixels))
        tokens = text.featurize([["a red lamp", "a blue desk"]], FeatureContext(item_ids=["a", "b"]))["text"]
        assert torch.equal(text(text=tokens), reference.encode_text(tokens))
    assert image.identity()["sha256"] and image.hidden_size == 64
    assert text.model.clip.visual is None  # the text tower drops the image tower's weights


def test_pickle_weights_refused(tmp_path):
    bad = tmp_path / "tiny.pt"
    bad.write_bytes(b"\x80\x04")
    with pytest.raises(ConfigError, match="not safetensors"):
        ClipBackbone(ARCH, ClipOptions(pretrained=str(bad)))


@pytest.mark.parametrize("tower", ["image", "text"])
def test_lora_adapts_attention_and_mlp_and_every_adapted_layer_learns(tower):
    backbone = ClipBackbone(ARCH, ClipOptions(tower=tower))
    Lora(LoraOptions(r=2)).attach(backbone)
    adapted = sorted({n.split(".lora_")[0] for n, p in backbone.named_parameters() if p.requires_grad})
    # 2 residual blocks x (attn's fused in_proj, attn's out_proj, mlp.c_fc, mlp.c_proj): open_clip 3.3's
    # nn.MultiheadAttention layout, which peft adapts as a whole. A version that moved to a fused custom
    # attention would change this count and fail here rather than adapt nothing.
    assert len(adapted) == 8, adapted
    assert sum(a.endswith(".attn") for a in adapted) == 2 and sum(a.endswith("out_proj") for a in adapted) == 2
    if tower == "image":
        out = backbone(pixel_values=torch.randn(3, 3, 32, 32))
    else:
        out = backbone(text=backbone.featurize([["red", "blue", "green"]], FeatureContext(item_ids=list("abc")))["text"])
    # LoRA B starts at zero, so only B receives gradient in the first step; every B must.
    out.pow(2).sum().backward()
    b_params = [(n, p) for n, p in backbone.named_parameters() if "lora_B" in n]
    assert b_params and all(p.grad is not None and p.grad.abs().sum() > 0 for _, p in b_params), [n for n, p in b_params if p.grad is None]


def _image(path, mode="RGB", size=(40, 30)):
    Image.new(mode, size, color=(10, 200, 30) if mode in ("RGB", "RGBA") else 128).save(path)
    return path


def test_image_checks_and_modes(tmp_path):
    _image(tmp_path / "ok.png")
    _image(tmp_path / "grey.png", "L")
    _image(tmp_path / "alpha.png", "RGBA")
    Image.new("P", (8, 8)).save(tmp_path / "palette.png")
    ctx = FeatureContext(item_ids=list("abcd"), root=tmp_path)
    paths = check_images(["ok.png", "grey.png", "alpha.png", "palette.png"], ctx)
    assert all(p is not None for p in paths)
    backbone = ClipBackbone(ARCH, ClipOptions())
    batch = backbone.collate({"paths": paths, "preprocess": backbone.preprocess}, torch.arange(4))
    assert batch["pixel_values"].shape == (4, 3, 32, 32) and batch["present"].all()


def _truncated(path):
    _image(path, size=(64, 64))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda d: None, "file not found"),
        (lambda d: _truncated(d / "x.png"), "truncated"),
        (lambda d: (d / "x.png").write_text("not an image"), "not a readable image"),
    ],
)
def test_bad_image_is_an_error_naming_item_and_path(tmp_path, make, expected):
    make(tmp_path)
    ctx = FeatureContext(item_ids=["item-7"], root=tmp_path, where=lambda r: f"items.jsonl, line {r + 1}")
    with pytest.raises(DataError) as err:
        check_images(["x.png"], ctx)
    message = str(err.value)
    assert "items.jsonl, line 1" in message and "item 'item-7'" in message and str(tmp_path / "x.png") in message
    assert expected in message and "on_bad_image=placeholder" in message


def test_huge_image_refused(tmp_path, monkeypatch):
    import crossrec_peft.backbones.clip as clip

    _image(tmp_path / "big.png", size=(300, 300))
    monkeypatch.setattr(clip, "MAX_IMAGE_PIXELS", 300 * 300 - 1)
    with pytest.raises(DataError, match="too large"):
        check_images(["big.png"], FeatureContext(item_ids=["a"], root=tmp_path))
    assert MAX_IMAGE_PIXELS >= 10_000_000


def test_placeholder_policy_counts_and_marks_missing(tmp_path, caplog):
    _image(tmp_path / "ok.png")
    ctx = FeatureContext(item_ids=list("abcd"), root=tmp_path, on_bad_image="placeholder")
    with caplog.at_level(logging.WARNING):
        paths = check_images(["ok.png", None, "gone.png", ""], ctx)
    assert [p is not None for p in paths] == [True, False, False, False]
    assert "3 of 4 items have no usable image" in caplog.text and "file not found: 1" in caplog.text and "no image given: 2" in caplog.text
    backbone = ClipBackbone(ARCH, ClipOptions())
    batch = backbone.collate({"paths": paths, "preprocess": backbone.preprocess}, torch.arange(4))
    assert batch["present"].tolist() == [True, False, False, False]


@pytest.mark.parametrize("mode", ["int8", "nf4"])
def test_quantized_tower_stays_close_and_trains_lora(mode, weights):
    path, reference = weights
    full = ClipBackbone(ARCH, ClipOptions(pretrained=str(path)))
    quant = ClipBackbone(ARCH, ClipOptions(pretrained=str(path), quantize=mode))
    assert quant.quantized_layers == 4  # c_fc and c_proj of 2 blocks; attention stays full precision
    pixels = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        a, b = full(pixel_values=pixels), quant(pixel_values=pixels)
    cos = torch.nn.functional.cosine_similarity(a, b).min().item()
    assert cos > (0.99 if mode == "int8" else 0.9), cos
    Lora(LoraOptions(r=2, target_modules=["attn"])).attach(quant)
    quant.train()
    quant(pixel_values=pixels).sum().backward()
    assert all(p.grad is not None for n, p in quant.named_parameters() if p.requires_grad)
    assert np.isfinite(cos)
