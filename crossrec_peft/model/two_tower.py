"""The recommender: an item tower over one encoder per modality, a user tower over item histories, and
cosine similarity scaled by a temperature.

    item  ─► per modality: backbone (+ method) ─► embedding ─► fusion ─► content h ─► item head ─► e
    user  ─► content h of each history item ─► user encoder ─► user head ─► u        score = cos(u, e) / T

Both towers share the content vectors h, so an evaluation encodes the catalog once and derives every user
from it.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones.base import FeatureContext
from ..methods.cached import is_cached
from .heads import ResidualLowRank


def gather_rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """`table[index]` (rows of [N, D] at any index shape), with a backward that sums repeated rows in a fixed
    order. Advanced indexing's backward (index_put_ with accumulate) adds them in parallel on a CPU, in an
    order that depends on the threads: with an item in several windows of a batch, two runs of one seed drifted
    apart after a few steps. F.embedding's backward sorts the indices first."""
    return F.embedding(index, table)


class ModalityEncoder(nn.Module):
    """One modality of an item: which fields it reads, its backbone and the method tuning that backbone."""

    def __init__(self, name: str, fields: Sequence[str], backbone: nn.Module, method: Any):
        super().__init__()
        self.name = name
        self.fields = list(fields)
        self.backbone = backbone
        self.method = method  # not a module: the method's weights live inside the backbone...
        # ...except a cached method's own network beside it (`side`), which reads cached layer states.
        make = getattr(method, "module", None)
        self.method_module = make(backbone) if callable(make) else None

    @property
    def out_dim(self) -> int:
        return int(self.backbone.hidden_size)

    def featurize(self, items: Mapping[str, Sequence[Any]], context: FeatureContext) -> dict[str, Any]:
        """Model inputs for every catalog item (columns of the items table, in catalog order). Cached methods
        turn them into layer-cache rows here: the frozen backbone runs once per item (crossrec_peft/cache)."""
        raw = self.backbone.featurize([items[f] for f in self.fields], context)
        cached = getattr(self.method, "cached_features", None)
        return cached(self.backbone, raw, context) if callable(cached) else raw

    def collate(self, features: dict[str, Any], index: torch.Tensor) -> dict[str, torch.Tensor]:
        if is_cached(features):
            return self.method.collate(features, index)
        return self.backbone.collate(features, index)

    def _encode(self, rows: dict[str, torch.Tensor]) -> torch.Tensor:
        if is_cached(rows):  # cache rows: the method's network (or the top layers), never the frozen part
            return self.method.encode(self.backbone, self.method_module, rows)
        if any(p.requires_grad for p in self.backbone.parameters()):
            return self.backbone(**rows)
        with torch.no_grad():  # a frozen backbone needs no activations kept for backward
            return self.backbone(**rows)

    def forward(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(embeddings [B, out_dim], present [B] bool). Rows whose item lacks this modality (collate marks them
        with a False in inputs["present"]) are not encoded and get zeros; the fusion decides what stands in."""
        inputs = dict(inputs)
        present = inputs.pop("present", None)
        some = inputs[next(iter(inputs))]
        if present is None:
            present = torch.ones(len(some), dtype=torch.bool, device=some.device)
        out = None
        if bool(present.any()):
            rows = {k: v[present] for k, v in inputs.items()} if not bool(present.all()) else inputs
            encoded = self._encode(rows)
            if bool(present.all()):
                out = encoded
            else:
                out = encoded.new_zeros(len(present), encoded.shape[-1]).index_copy(0, present.nonzero().squeeze(1), encoded)
        if out is None:
            param = next(self.backbone.parameters())
            out = torch.zeros(len(present), self.out_dim, device=param.device, dtype=param.dtype)
        return out, present


class TwoTowerModel(nn.Module):
    def __init__(
        self,
        modalities: Mapping[str, ModalityEncoder],
        fusion: nn.Module,
        user_encoder: nn.Module,
        *,
        head_rank: int,
        temperature: float,
        learn_temperature: bool,
    ):
        super().__init__()
        self.modalities = nn.ModuleDict(dict(modalities))
        self.fusion = fusion
        self.user_encoder = user_encoder
        dim = int(fusion.out_dim)
        self.dim = dim
        self.item_head = ResidualLowRank(dim, head_rank)
        self.user_head = ResidualLowRank(int(user_encoder.out_dim), head_rank)
        # Objective heads (rating, category, click calibration, task weights), keyed by task: trained with the
        # towers and saved in the adapter package (its manifest records each head's spec).
        self.heads = nn.ModuleDict()
        log_t = torch.tensor(math.log(temperature))
        if learn_temperature:
            self.log_temperature = nn.Parameter(log_t)
        else:
            self.register_buffer("log_temperature", log_t)

    # -- inputs ------------------------------------------------------------------------------------------------
    def featurize(self, items: Mapping[str, Sequence[Any]], context: FeatureContext | None = None) -> dict[str, dict[str, Any]]:
        """Inputs for the whole catalog, per modality. `items` maps field name to its column."""
        if context is None:
            context = FeatureContext(item_ids=[str(i) for i in range(len(next(iter(items.values()))))])
        return {name: enc.featurize(items, context) for name, enc in self.modalities.items()}

    def collate_items(self, features: dict[str, dict[str, torch.Tensor]], index: torch.Tensor) -> dict[str, dict[str, torch.Tensor]]:
        return {name: self.modalities[name].collate(features[name], index) for name in self.modalities}

    # -- towers ------------------------------------------------------------------------------------------------
    def encode_content(self, item_inputs: dict[str, dict[str, torch.Tensor]]) -> torch.Tensor:
        embeddings, present = {}, {}
        for name, enc in self.modalities.items():
            embeddings[name], present[name] = enc(item_inputs[name])
        return self.fusion(embeddings, present)

    def item_vectors(self, content: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.item_head(content), dim=-1)

    def user_vectors(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.user_head(self.user_encoder(history, mask)), dim=-1)

    @property
    def logit_scale(self) -> torch.Tensor:
        return torch.exp(-self.log_temperature)

    def user_prefixes(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, L, D]: at position t, the user encoded from history items 0..t (before the head). User
        encoders may provide `prefixes` to do this in one pass; otherwise they are called per position."""
        prefixes = getattr(self.user_encoder, "prefixes", None)
        if callable(prefixes):
            return prefixes(history, mask)
        return torch.stack([self.user_encoder(history[:, : t + 1], mask[:, : t + 1]) for t in range(history.shape[1])], dim=1)

    def forward(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Training pairs of a batch of windows (built by `data.batching.Collator`): for every position t >= 1
        of every window, the user from items before t and the item at t.

        Returns user vectors and target item vectors [N, D] for the N pairs, the logit scale, each pair's
        target item id (`target_item`) and window (`row`), which objectives use to mask false negatives.
        With sampled negatives in the batch, also their vectors (`negative_vectors` [P, D]), item ids
        (`negative_items` [P]) and each pair's negatives as indices into them (`negatives` [N, K])."""
        content = self.encode_content(batch["items"])
        sequence, mask = gather_rows(content, batch["sequence"]), batch["sequence_mask"]
        prefixes = self.user_prefixes(sequence, mask)
        valid = mask[:, 1:]
        rows = torch.arange(len(mask), device=mask.device).unsqueeze(1).expand_as(valid)
        outputs = {
            "users": F.normalize(self.user_head(prefixes[:, :-1][valid]), dim=-1),
            "items": self.item_vectors(sequence[:, 1:][valid]),
            "logit_scale": self.logit_scale,
            "target_item": batch["sequence_items"][:, 1:][valid],
            "row": rows[valid],
        }
        if "negative_pool" in batch:
            outputs["negative_vectors"] = self.item_vectors(gather_rows(content, batch["negative_pool"]))
            outputs["negative_items"] = batch["negative_pool_items"]
            outputs["negatives"] = batch["negatives"]
        return outputs
