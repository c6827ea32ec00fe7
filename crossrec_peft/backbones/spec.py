"""Per-architecture facts that methods need, in one table (peft keeps its default LoRA targets the same way).

Keys are Hugging Face ``config.model_type`` values. Module names are suffixes matched by peft.
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


_BERT_LIKE = ArchSpec(
    lora_targets=("query", "value"),
    ia3_targets=("key", "value", "output.dense"),
    ia3_feedforward=("output.dense",),
)

ARCHITECTURES: dict[str, ArchSpec] = {
    "bert": _BERT_LIKE,
    "roberta": _BERT_LIKE,
    "xlm-roberta": _BERT_LIKE,
    "electra": _BERT_LIKE,
    "camembert": _BERT_LIKE,
    "distilbert": ArchSpec(("q_lin", "v_lin"), ("k_lin", "v_lin", "lin2"), ("lin2",)),
    "mpnet": ArchSpec(("q", "v"), ("k", "v", "output.dense"), ("output.dense",)),
    "deberta-v2": ArchSpec(("query_proj", "value_proj"), ("key_proj", "value_proj", "output.dense"), ("output.dense",)),
}


def arch_spec(model_type: str) -> ArchSpec | None:
    return ARCHITECTURES.get(model_type)
