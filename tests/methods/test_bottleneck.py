"""Bottleneck adapters: identity at start, option and pattern errors, explicit points, any wrapped module."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from crossrec_peft import recipes, registry
from crossrec_peft.backbones.spec import ARCHITECTURES
from crossrec_peft.backbones.text import TextBackbone, TextBackboneOptions
from crossrec_peft.config import component, load_config
from crossrec_peft.errors import ConfigError
from crossrec_peft.methods.base import Storage
from crossrec_peft.methods.bottleneck import Adapted, Bottleneck, BottleneckOptions, adapted_modules

TEXTS = ["red lamp", "blue desk with drawers", "green pen", "a mug"]


def text_backbone(tiny_bert) -> TextBackbone:
    return TextBackbone(str(tiny_bert), model_id="tiny-bert", options=TextBackboneOptions(max_length=12))


def encode(backbone: TextBackbone) -> torch.Tensor:
    enc = backbone.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        return backbone(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])


def method_config(*overrides: str):
    base = ["model.modalities.text.method=bottleneck"]
    return load_config(recipes.path("ecommerce"), base + [f"model.modalities.text.method.{o}" for o in overrides])


@pytest.mark.parametrize("kind", ["houlsby", "pfeiffer"])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_untrained_adapters_are_the_identity(tiny_bert, kind, activation):
    frozen = text_backbone(tiny_bert)
    adapted = text_backbone(tiny_bert)
    method = Bottleneck(BottleneckOptions(kind=kind, size=8, activation=activation))
    method.attach(adapted)
    assert len(method.adapted) == {"houlsby": 4, "pfeiffer": 2}[kind]
    assert torch.equal(encode(frozen), encode(adapted))
    # Only adapter tensors train, and they have the transformer's width.
    trainable = {n: p for n, p in adapted.named_parameters() if p.requires_grad}
    assert trainable and all(".adapter." in n for n in trainable)
    shapes = {tuple(p.shape) for n, p in trainable.items() if n.endswith("weight")}
    assert shapes == {(8, 32), (32, 8)}


def test_defaults_and_options_reach_the_method(tiny_bert):
    cfg = method_config("size=4", "activation=tanh")
    entry, _, options = component(registry.methods, cfg.model.modalities.text.method, "method")
    assert options == BottleneckOptions(kind="pfeiffer", size=4, activation="tanh", points=None)
    backbone = text_backbone(tiny_bert)
    method = entry.factory(options)
    assert isinstance(method, Bottleneck) and method.storage is Storage.WEIGHTS
    method.attach(backbone)
    assert method.adapted == ["encoder.layer.0.output.dense", "encoder.layer.1.output.dense"]
    wrapper = backbone.base_model.get_submodule("encoder.layer.0.output.dense")
    assert isinstance(wrapper, Adapted) and isinstance(wrapper.original, nn.Linear)
    assert wrapper.adapter.down.out_features == 4 and isinstance(wrapper.adapter.act, nn.Tanh)


@pytest.mark.parametrize(
    "override, message",
    [
        ("kind=adapterhub", "kind must be one of houlsby, pfeiffer"),
        ("kind=hulsby", "Did you mean 'houlsby'"),
        ("size=0", "size (the bottleneck width) must be positive"),
        ("activation=swish", "activation must be one of relu, gelu, tanh, silu"),
        ("points=[]", "points is empty"),
        ("points=[mlp,mlp]", "points lists an entry twice"),
        ("points=[encoder..dense]", "is not a module path"),
        ("reduction=16", "Unknown key 'model.modalities.text.method.reduction'"),
    ],
)
def test_bad_options_fail_before_loading(override, message):
    with pytest.raises(ConfigError) as info:
        method_config(override)
    assert message in str(info.value)
    assert "model.modalities.text.method" in str(info.value)


def test_pattern_matching_nothing_names_backbone_and_pattern(tiny_bert):
    backbone = text_backbone(tiny_bert)
    method = Bottleneck(BottleneckOptions(points=["encoder.layer.*.output.dens"]))
    with pytest.raises(ConfigError) as info:
        method.attach(backbone)
    text = str(info.value)
    assert "'encoder.layer.*.output.dens' matches no module" in text and "tiny-bert" in text
    assert "Did you mean 'encoder.layer.*.output.dense'" in text
    assert not adapted_modules(backbone)  # nothing was half-inserted


def test_unknown_point_name_lists_the_architecture_points(tiny_bert):
    with pytest.raises(ConfigError, match=r"Unknown bottleneck adapter point 'atention'.*Did you mean 'attention'.*attention, mlp"):
        Bottleneck(BottleneckOptions(points=["atention"])).attach(text_backbone(tiny_bert))


def test_declared_point_that_matches_nothing_names_the_point(tiny_bert, monkeypatch):
    broken = dict(ARCHITECTURES["bert"].adapter_points, mlp="encoder.layers.*.output.dense")
    spec = type(ARCHITECTURES["bert"])(lora_targets=("query",), adapter_points=broken)
    monkeypatch.setitem(ARCHITECTURES, "bert", spec)
    with pytest.raises(ConfigError, match=r"point 'mlp' \(pattern 'encoder.layers.\*.output.dense'\) matches no module of backbone 'tiny-bert'"):
        Bottleneck(BottleneckOptions(kind="pfeiffer")).attach(text_backbone(tiny_bert))


def test_explicit_raw_pattern_points(tiny_bert):
    backbone = text_backbone(tiny_bert)
    method = Bottleneck(BottleneckOptions(points=["attention", "encoder.layer.1.output.dense"], size=4))
    method.attach(backbone)
    assert method.adapted == [
        "encoder.layer.0.attention.output.dense",
        "encoder.layer.1.attention.output.dense",
        "encoder.layer.1.output.dense",
    ]
    # A module whose output is not the hidden states (the MLP's up projection, 64 wide) is refused.
    with pytest.raises(ConfigError, match=r"outputs 64 features but the backbone's hidden size is 32"):
        Bottleneck(BottleneckOptions(points=["encoder.layer.*.intermediate.dense"])).attach(text_backbone(tiny_bert))


def test_attaching_twice_is_refused(tiny_bert):
    backbone = text_backbone(tiny_bert)
    Bottleneck(BottleneckOptions()).attach(backbone)
    with pytest.raises(ConfigError, match="already carries a bottleneck adapter"):
        Bottleneck(BottleneckOptions()).attach(backbone)


# -- any module, any architecture ------------------------------------------------------------------------------


class Block(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.fc = nn.Linear(width, width)
        self.ls = nn.Identity()  # like open_clip's ls_1 / ls_2 without layer scale

    def forward(self, x):
        return x + self.ls(torch.tanh(self.fc(x)))


class ToyBackbone(nn.Module):
    """A backbone of an architecture without a spec (arch None), as a plugin might provide."""

    model_id = "toy"
    model_type = "toy"
    arch = None
    hidden_size = 8

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.model = nn.Module()
        self.model.blocks = nn.ModuleList([Block(8) for _ in range(3)])

    @property
    def base_model(self):
        return self.model

    def forward(self, x):
        for block in self.model.blocks:
            x = block(x)
        return x


def test_architecture_without_spec_needs_points():
    with pytest.raises(ConfigError, match=r"No bottleneck adapter points are declared for backbone 'toy'.*set the method's `points`"):
        Bottleneck(BottleneckOptions(kind="houlsby")).attach(ToyBackbone())


def test_wraps_identity_modules_and_nested_patterns():
    backbone = ToyBackbone()
    x = torch.randn(5, 8)
    before = backbone(x)
    method = Bottleneck(BottleneckOptions(points=["blocks.*.ls", "blocks.*", "blocks.1.fc"], size=3, activation="silu"))
    method.attach(backbone)
    # A block and a module inside it can both be adapted (the parent is looked up before any replacement).
    assert method.adapted == ["blocks.0", "blocks.0.original.ls", "blocks.1", "blocks.1.original.fc",
                              "blocks.1.original.ls", "blocks.2", "blocks.2.original.ls"]
    assert torch.equal(backbone(x), before)
    backbone(x).square().sum().backward()
    for name, p in backbone.named_parameters():
        assert p.requires_grad == (".adapter." in name), name
        if name.endswith("adapter.up.weight"):
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_wrong_width_of_an_identity_is_caught_at_the_first_forward():
    backbone = ToyBackbone()
    backbone.hidden_size = 6  # as if the backbone's output size differed from the transformer's width
    Bottleneck(BottleneckOptions(points=["blocks.*.ls"])).attach(backbone)
    with pytest.raises(ConfigError, match=r"'blocks.0.ls' has width 6 .* outputs size 8.*adapter_width"):
        backbone(torch.randn(2, 8))
    backbone = ToyBackbone()
    backbone.hidden_size = 6
    backbone.adapter_width = 8  # a backbone whose output size is not its transformer's width says so
    Bottleneck(BottleneckOptions(points=["blocks.*.ls"])).attach(backbone)
    assert backbone(torch.randn(2, 8)).shape == (2, 8)


def test_wraps_a_bitsandbytes_int8_linear():
    bnb = pytest.importorskip("bitsandbytes")
    backbone = ToyBackbone()
    x = torch.randn(4, 8)
    linear = backbone.model.blocks[0].fc
    try:
        quantized = bnb.nn.Linear8bitLt(8, 8, has_fp16_weights=False, threshold=6.0)
        quantized.load_state_dict(linear.state_dict())
        quantized.requires_grad_(False)
        backbone.model.blocks[0].fc = quantized
        before = backbone(x)
    except Exception as exc:  # no usable bitsandbytes build on this platform
        pytest.skip(f"bitsandbytes int8 layers cannot run here: {exc}")
    method = Bottleneck(BottleneckOptions(points=["blocks.*.fc"], size=4, activation="silu"))
    method.attach(backbone)
    assert isinstance(backbone.model.blocks[0].fc.original, bnb.nn.Linear8bitLt)
    assert torch.equal(backbone(x), before)
    backbone(x).sum().backward()
    grads = [p.grad for n, p in backbone.named_parameters() if n.endswith("adapter.up.weight")]
    assert len(grads) == 3 and all(g is not None and g.abs().sum() > 0 for g in grads)
    assert not any(p.requires_grad for n, p in backbone.named_parameters() if ".adapter." not in n)


# -- every declared architecture -------------------------------------------------------------------------------

TINY = {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 32, "vocab_size": 64}
TINY_DISTILBERT = {"dim": 16, "n_layers": 2, "n_heads": 2, "hidden_dim": 32, "vocab_size": 64}


class HFShim(nn.Module):
    """A randomly initialised tiny Hugging Face encoder of one model type, as a backbone."""

    def __init__(self, model_type: str):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        from crossrec_peft.backbones.spec import arch_spec

        torch.manual_seed(0)
        config = AutoConfig.for_model(model_type, **(TINY_DISTILBERT if model_type == "distilbert" else TINY))
        self.model = AutoModel.from_config(config).eval()
        self.model.requires_grad_(False)
        self.model_id, self.model_type, self.hidden_size = f"tiny-{model_type}", model_type, 16
        self.arch = arch_spec(model_type)

    @property
    def base_model(self):
        return self.model

    def forward(self, input_ids):
        return self.model(input_ids=input_ids).last_hidden_state


@pytest.mark.parametrize("model_type", sorted(t for t, spec in ARCHITECTURES.items() if spec.adapter_points and not t.startswith("timm-")))
def test_every_declared_architecture_gets_identity_adapters_at_each_point(model_type):
    backbone = HFShim(model_type)
    ids = torch.randint(5, 60, (2, 7))
    with torch.no_grad():
        before = backbone(ids)
    # tanh: with relu and a tiny random model, all units of one small adapter can be off for every token.
    method = Bottleneck(BottleneckOptions(kind="houlsby", size=4, activation="tanh"))
    method.attach(backbone)
    assert len(method.adapted) == 2 * 2, method.adapted  # 2 layers x (attention, mlp)
    with torch.no_grad():
        assert torch.equal(backbone(ids), before)
    out = backbone(ids)  # (a sum of squares would be constant after BERT's final LayerNorm: no gradient)
    (out * torch.randn_like(out)).sum().backward()
    ups = [p.grad for n, p in backbone.named_parameters() if n.endswith("adapter.up.weight")]
    assert len(ups) == 4 and all(g is not None and g.abs().sum() > 0 for g in ups)  # every adapter is on the path
