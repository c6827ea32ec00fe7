"""Per-architecture facts that methods need, in one table (peft keeps its default LoRA targets the same way).

Keys are Hugging Face ``config.model_type`` values. LoRA / IA3 module names are suffixes matched by peft;
bottleneck adapter points are full module-path patterns (see `ArchSpec.adapter_points`).
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


def arch_spec(model_type: str) -> ArchSpec | None:
    return ARCHITECTURES.get(model_type)
