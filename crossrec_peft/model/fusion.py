"""Fusion heads: modality embeddings -> one item content vector. Registry kind `fusion`.

A fusion is built as ``factory(options, dims)`` with `dims` mapping modality name to embedding size, exposes
`out_dim`, and is called as ``fusion(embeddings, present)``: modality name -> embeddings [batch, dim] and
modality name -> bool [batch] (False where the item lacks that modality; its embedding row is zeros).

Every modality embedding is L2-normalised first, so modalities of different scales (a pretrained text
encoder, an image tower trained from scratch) start on an equal footing. Missing modalities follow the
`missing` option: `placeholder` substitutes a learned vector per modality, `mask` leaves the modality out
(of sums, means and attention keys; zeroed in `concat`, which then also reads presence flags). Whatever a
missing modality's row holds is never read. See docs/fusion.md.

Identity start: the project's "untuned" baseline is the model before training, so an untrained fusion must
not scramble the backbone's embeddings. In `sum`, `gated` and `concat`, the first modality whose size equals
the output size (the "anchor") is projected by the identity and every other modality by zero at the start:
a text-only model starts as exactly its (normalised) text embeddings, and an untrained multi-modal model
ranks like the anchor's zero-shot embeddings (training then learns what the others add). `attention` has no
such start (its LayerNorm and type embeddings already change the vectors).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..registry import fusions
from .heads import ResidualLowRank

MISSING = ("placeholder", "mask")


@fusions.register("mean")
class MeanFusion(nn.Module):
    """Average of the L2-normalised modality embeddings (equal sizes); a single modality passes through normalised."""

    def __init__(self, options: None, dims: dict[str, int]):
        super().__init__()
        sizes = sorted(set(dims.values()))
        if len(sizes) != 1:
            raise ConfigError(
                f"Fusion 'mean' needs modality embeddings of one size, got {dims}: choose a fusion that projects "
                f"(concat, sum, gated or attention; run `crossrec-peft ls fusion`)."
            )
        self.out_dim = sizes[0]
        self.order = list(dims)

    def forward(self, embeddings: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> torch.Tensor:
        # Missing modalities are left out of the mean (their rows are zeros, which normalise to zeros).
        stacked = torch.stack([F.normalize(embeddings[m], dim=-1) for m in self.order])
        weights = torch.stack([present[m] for m in self.order]).to(stacked.dtype).unsqueeze(-1)
        return (stacked * weights).sum(0) / weights.sum(0).clamp(min=1.0)


@dataclass
class FusionOptions:
    """Options shared by concat, sum, gated and attention (each reads the ones it needs)."""

    dim: Optional[int] = None  # output size; null: the largest modality size
    missing: str = "placeholder"  # placeholder (a learned vector stands in) | mask (left out)
    hidden: Optional[int] = None  # concat: MLP width (null: the output size)
    heads: int = 4  # attention: heads (must divide the output size)
    dropout: float = 0.0  # concat: inside the MLP; attention: on the attention weights
    # sum / gated: the anchor's projection is x + up(down(x)) and the gate a two-layer map through this rank,
    # instead of full out x in matrices: an adapter package stays small. null: full matrices.
    rank: Optional[int] = 32

    def check(self) -> str | None:
        if self.missing not in MISSING:
            return f"missing must be placeholder or mask, got '{self.missing}'."
        if self.dim is not None and self.dim <= 0:
            return f"dim must be positive, got {self.dim}."
        if self.hidden is not None and self.hidden <= 0:
            return f"hidden must be positive, got {self.hidden}."
        if self.heads <= 0:
            return f"heads must be positive, got {self.heads}."
        if not 0 <= self.dropout < 1:
            return f"dropout must be in [0, 1), got {self.dropout}."
        if self.rank is not None and self.rank <= 0:
            return f"rank must be positive (or null for full matrices), got {self.rank}."
        return None


class _Projecting(nn.Module):
    """Shared parts: option handling, normalisation, the missing-modality policy, identity-start projections."""

    def __init__(self, options: FusionOptions | None, dims: dict[str, int]):
        super().__init__()
        if not dims:
            raise ConfigError("A fusion needs at least one modality.")
        self.options = options or FusionOptions()
        self.order = list(dims)
        self.dims = dict(dims)
        self.out_dim = int(self.options.dim or max(dims.values()))
        if self.options.missing == "placeholder":
            # Zero at the start: an untrained model treats a missing modality as empty, like `mask` does.
            self.placeholders = nn.ParameterDict({m: nn.Parameter(torch.zeros(d)) for m, d in dims.items()})
        # The modality an untrained model passes through unchanged (None when no size matches).
        self.anchor = next((m for m in self.order if dims[m] == self.out_dim), None)

    def inputs(self, embeddings: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Normalised embeddings with missing rows replaced by the placeholder or by zeros, and the mask in
        force (all True under `placeholder`, where the placeholder takes part like a real embedding)."""
        out, mask = {}, {}
        for m in self.order:
            e = F.normalize(embeddings[m], dim=-1)
            p = present[m].to(device=e.device, dtype=torch.bool)
            # torch.where, not a product: a missing row is never read, whatever it holds (even inf or NaN).
            if self.options.missing == "placeholder":
                e = torch.where(p.unsqueeze(-1), e, self.placeholders[m].to(e.dtype).expand_as(e))
                p = torch.ones_like(p)
            else:
                e = torch.where(p.unsqueeze(-1), e, torch.zeros((), dtype=e.dtype, device=e.device))
            out[m], mask[m] = e, p
        return out, mask

    def projection(self, modality: str) -> nn.Module:
        if modality == self.anchor and self.options.rank:
            return ResidualLowRank(self.out_dim, self.options.rank)  # starts as the identity, 2*D*rank weights
        layer = nn.Linear(self.dims[modality], self.out_dim)
        nn.init.zeros_(layer.bias)
        # Identity start (see the module docstring): the untuned baseline is this model before training, so a
        # text-only model must start as its text embeddings, not a random projection of them. The anchor
        # starts as the identity, every other modality at zero (their weights still get gradients: the input
        # is not zero). Without an anchor (dim matches no modality) the default random init stays.
        if self.anchor is not None:
            with torch.no_grad():
                if modality == self.anchor:
                    layer.weight.copy_(torch.eye(self.out_dim))
                else:
                    layer.weight.zero_()
        return layer


@fusions.register("sum", options=FusionOptions)
class SumFusion(_Projecting):
    """Projected sum: each modality projected to the output size, then added (missing ones masked or replaced)."""

    def __init__(self, options: FusionOptions | None, dims: dict[str, int]):
        super().__init__(options, dims)
        self.proj = nn.ModuleDict({m: self.projection(m) for m in self.order})

    def forward(self, embeddings, present):
        e, mask = self.inputs(embeddings, present)
        # Under `mask` a missing modality adds nothing (not even its bias); a row with nothing present is zero.
        return sum(self.proj[m](e[m]) * mask[m].unsqueeze(-1).to(e[m].dtype) for m in self.order)


@fusions.register("gated", options=FusionOptions)
class GatedFusion(_Projecting):
    """Gated: projected modalities mixed by a learned per-dimension gate computed from all inputs."""

    def __init__(self, options: FusionOptions | None, dims: dict[str, int]):
        super().__init__(options, dims)
        self.proj = nn.ModuleDict({m: self.projection(m) for m in self.order})
        n = len(self.order)
        # Two modalities: one sigmoid gate per dimension (g, 1 - g). More: a softmax over modalities per
        # dimension. One: nothing to gate (a gate there would be a parameter without a gradient).
        self.gate = None
        if n > 1:
            width, out = sum(dims.values()), self.out_dim * (1 if n == 2 else n)
            rank = self.options.rank
            self.gate = nn.Sequential(nn.Linear(width, rank), nn.Linear(rank, out)) if rank else nn.Sequential(nn.Linear(width, out))
            self.gate.out_features = out
            # Equal weights at the start: a per-row constant, which keeps the identity start cosine-exact.
            nn.init.zeros_(self.gate[-1].weight)
            nn.init.zeros_(self.gate[-1].bias)

    def forward(self, embeddings, present):
        e, mask = self.inputs(embeddings, present)
        projected = torch.stack([self.proj[m](e[m]) for m in self.order], dim=1)  # [B, M, D]
        available = torch.stack([mask[m] for m in self.order], dim=1).unsqueeze(-1)  # [B, M, 1]
        on = available.to(projected.dtype)
        if self.gate is None:
            weights = on
        else:
            logits = self.gate(torch.cat([e[m] for m in self.order], dim=-1))
            if len(self.order) == 2:
                g = torch.sigmoid(logits).unsqueeze(1)  # [B, 1, D]
                weights = torch.cat([g, 1 - g], dim=1)
                # Under `mask` with one modality missing, the present one takes the whole row.
                weights = torch.where(available.all(dim=1, keepdim=True), weights, on)
            else:
                logits = logits.view(-1, len(self.order), self.out_dim)
                logits = logits.masked_fill(~available, torch.finfo(logits.dtype).min)
                # A row with nothing present: a uniform softmax, zeroed by `on`.
                weights = torch.softmax(logits, dim=1) * on
        return (weights * projected).sum(1)


@fusions.register("concat", options=FusionOptions)
class ConcatFusion(_Projecting):
    """Concatenation then an MLP (Linear, GELU, Linear), beside a linear path that starts as the identity."""

    def __init__(self, options: FusionOptions | None, dims: dict[str, int]):
        super().__init__(options, dims)
        flags = len(self.order) if self.options.missing == "mask" else 0  # presence flags join the input
        width = sum(dims.values()) + flags
        hidden = self.options.hidden or self.out_dim
        self.mlp = nn.Sequential(
            nn.Linear(width, hidden), nn.GELU(), nn.Dropout(self.options.dropout), nn.Linear(hidden, self.out_dim)
        )
        # Identity start (module docstring): an MLP alone would start as a random map of the embeddings, so a
        # linear path carries the anchor's block as the identity and the MLP's last layer starts at zero.
        self.linear = nn.Linear(width, self.out_dim)
        nn.init.zeros_(self.linear.bias)
        if self.anchor is not None:
            nn.init.zeros_(self.linear.weight)
            start = sum(dims[m] for m in self.order[: self.order.index(self.anchor)])
            with torch.no_grad():
                self.linear.weight[:, start : start + self.out_dim].copy_(torch.eye(self.out_dim))
            nn.init.zeros_(self.mlp[-1].weight)
            nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, embeddings, present):
        e, mask = self.inputs(embeddings, present)
        parts = [e[m] for m in self.order]
        if self.options.missing == "mask":
            parts.append(torch.stack([mask[m] for m in self.order], dim=-1).to(parts[0].dtype))
        x = torch.cat(parts, dim=-1)
        return self.linear(x) + self.mlp(x)


@fusions.register("attention", options=FusionOptions)
class AttentionFusion(_Projecting):
    """Cross-modal attention over one token per modality (+ type embedding), then the mean of the present tokens."""

    def __init__(self, options: FusionOptions | None, dims: dict[str, int]):
        super().__init__(options, dims)
        if self.out_dim % self.options.heads:
            raise ConfigError(
                f"Fusion 'attention': heads ({self.options.heads}) must divide the output size ({self.out_dim}); "
                f"set model.fusion.heads or model.fusion.dim."
            )
        self.proj = nn.ModuleDict({m: nn.Linear(d, self.out_dim) for m, d in dims.items()})
        self.types = nn.Parameter(torch.randn(len(self.order), self.out_dim) * 0.02)
        self.attn = nn.MultiheadAttention(self.out_dim, self.options.heads, dropout=self.options.dropout, batch_first=True)
        self.norm = nn.LayerNorm(self.out_dim)

    def forward(self, embeddings, present):
        e, mask = self.inputs(embeddings, present)
        tokens = torch.stack([self.proj[m](e[m]) for m in self.order], dim=1) + self.types.to(e[self.order[0]].dtype)
        available = torch.stack([mask[m] for m in self.order], dim=1)  # [B, M]
        # Missing tokens are not keys. A row with nothing present attends over all its tokens rather than over
        # none (which would be NaN); the mean below then gives it zeros.
        keys_ok = available | ~available.any(dim=1, keepdim=True)
        attended, _ = self.attn(tokens, tokens, tokens, key_padding_mask=~keys_ok, need_weights=False)
        tokens = self.norm(tokens + attended)
        w = available.unsqueeze(-1).to(tokens.dtype)
        return (tokens * w).sum(1) / w.sum(1).clamp(min=1.0)
