"""Per-architecture facts that methods need, in one table (peft keeps its default LoRA targets the same way).

Keys are Hugging Face ``config.model_type`` values, and ``timm-<model class>`` for timm image towers (one
entry covers every timm architecture built by that class, e.g. all EfficientNets and MobileNetV2s).
LoRA / IA3 module names are suffixes matched by peft; bottleneck adapter points are full module-path
patterns (see `ArchSpec.adapter_points`).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ArchSpec:
    lora_targets: tuple[str, ...]
    # IA3 rescales keys and values; "feed-forward" modules scale their input instead of their output. For
    # BERT "output.dense" matches both the attention output and the feed-forward output (peft's default).
    ia3_targets: tuple[str, ...] = ()
    ia3_feedforward: tuple[str, ...] = ()
    # Bottleneck adapter insertion points, declared like AdapterHub's AdapterModelInterface: a point name
    # ("attention": the attention block's output projection, "mlp": the feed-forward block's output
    # projection) -> the path of the module whose output is adapted, relative to the transformer
    # (`backbone.base_model`, without any peft wrapper), with * for the layer index (one path component).
    # Any module works (Linear, a bitsandbytes layer, nn.Identity): the adapter wraps its output. Empty: the
    # architecture has no declared points and the bottleneck method needs explicit `points` patterns.
    adapter_points: dict[str, str] = field(default_factory=dict, hash=False, compare=True)
    # The dimension of the features at adapter points and IA3 targets: -1 for transformers (hidden states
    # [batch, tokens, hidden]), 1 for convolutional towers ([batch, channels, height, width]).
    feature_dim: int = -1
    # peft's `layers_pattern`: the module-path component followed by the layer (for a CNN: stage) index, which
    # the LoRA/IA3 option `layers` selects from (e.g. "blocks" in "blocks.5.0.conv_pw").
    layers_pattern: str | None = None


_BERT_LIKE = ArchSpec(
    lora_targets=("query", "value"),
    ia3_targets=("key", "value", "output.dense"),
    ia3_feedforward=("output.dense",),
    adapter_points={"attention": "encoder.layer.*.attention.output.dense", "mlp": "encoder.layer.*.output.dense"},
)

ARCHITECTURES: dict[str, ArchSpec] = {
    "bert": _BERT_LIKE,
    "roberta": _BERT_LIKE,
    "xlm-roberta": _BERT_LIKE,
    "electra": _BERT_LIKE,
    "camembert": _BERT_LIKE,
    "distilbert": ArchSpec(
        ("q_lin", "v_lin"), ("k_lin", "v_lin", "lin2"), ("lin2",),
        adapter_points={"attention": "transformer.layer.*.attention.out_lin", "mlp": "transformer.layer.*.ffn.lin2"},
    ),
    "mpnet": ArchSpec(
        ("q", "v"), ("k", "v", "output.dense"), ("output.dense",),
        adapter_points={"attention": "encoder.layer.*.attention.attn.o", "mlp": "encoder.layer.*.output.dense"},
    ),
    "deberta-v2": ArchSpec(
        ("query_proj", "value_proj"), ("key_proj", "value_proj", "output.dense"), ("output.dense",),
        adapter_points=dict(_BERT_LIKE.adapter_points),
    ),
}




def _timm_inverted_residual(stages: int) -> ArchSpec:
    # timm's EfficientNet/MobileNet blocks (_efficientnet_blocks): `conv_pw` is the 1x1 expansion of an
    # InvertedResidual (the projection of the first stage's DepthwiseSeparableConv) and `conv_pwl` its 1x1
    # projection; the depthwise 3x3/5x5 convs are left alone (few weights, nothing low-rank to gain).
    # IA3 scales the expansion's output and the projection's input (the expanded channels), as it scales a
    # transformer's keys/values and its feed-forward input. Bottleneck points: "mlp" (the Pfeiffer position)
    # is the output of every block, "stageN" the outputs of the blocks of stage N (blocks.N.*).
    points = {"mlp": "blocks.*.*", **{f"stage{i}": f"blocks.{i}.*" for i in range(stages)}}
    return ArchSpec(
        lora_targets=("conv_pw", "conv_pwl"),
        ia3_targets=("conv_pw", "conv_pwl"),
        ia3_feedforward=("conv_pwl",),
        adapter_points=points,
        feature_dim=1,
        layers_pattern="blocks",
    )


ARCHITECTURES.update({
    "timm-efficientnet": _timm_inverted_residual(7),
    "timm-mobilenetv3": _timm_inverted_residual(7),
})


def arch_spec(model_type: str) -> ArchSpec | None:
    return ARCHITECTURES.get(model_type)
