"""User encoders: a user's history of item content vectors -> one vector. Registry kind `user_encoder`.

Built as ``factory(options, dim)``; called with history vectors [batch, length, dim] and a boolean mask
[batch, length] that is True at real (not padded) positions. Histories are ordered oldest to newest.
An encoder may also provide ``prefixes(history, mask) -> [batch, length, dim]`` (position t encodes items
0..t) so that training on every position of a window takes one pass; without it, the model calls the
encoder once per position.
An encoder whose output is a weighted sum of the history vectors may provide
``pooling_weights(history, mask) -> [batch, length]`` with ``forward == (weights[..., None] * history).sum(1)``:
explanations then split a score exactly into one term per history item (crossrec_peft/explain.py); others are
explained by leaving each item out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import user_encoders


@user_encoders.register("mean")
class MeanUserEncoder(nn.Module):
    """Mean of the history's item vectors (the towers' heads add the learned projection)."""

    def __init__(self, options: None, dim: int):
        super().__init__()
        self.out_dim = dim

    def forward(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = mask.to(history.dtype).unsqueeze(-1)
        return (history * weights).sum(1) / weights.sum(1).clamp(min=1.0)

    def pooling_weights(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """1/n for each of the n real items: forward is the weighted sum of the history with these."""
        weights = mask.to(history.dtype)
        return weights / weights.sum(1, keepdim=True).clamp(min=1.0)

    def prefixes(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Running means: position t is the mean of items 0..t."""
        weights = mask.to(history.dtype).unsqueeze(-1)
        return (history * weights).cumsum(1) / weights.cumsum(1).clamp(min=1.0)


def _causal_last(prefixes: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The prefix state at each row's last real position (rows without items read position 0)."""
    last = (mask.long().sum(1) - 1).clamp(min=0)
    return prefixes[torch.arange(len(prefixes), device=prefixes.device), last]


def width_groups(mask: torch.Tensor) -> list[tuple[torch.Tensor, int]]:
    """Rows grouped by the power of two at or above their width (the position after their last real item, at
    least 1): (row indices, the group's widest row). Encoding each group cut to its widest row costs at most
    about twice the rows' own widths, against the batch's widest row for every row."""
    positions = torch.arange(1, mask.shape[1] + 1, device=mask.device)
    widths = (mask * positions).amax(1).clamp(min=1)
    buckets = torch.ceil(torch.log2(widths.double())).long()
    groups = []
    for bucket in torch.unique(buckets).tolist():
        rows = torch.nonzero(buckets == bucket).flatten()
        groups.append((rows, int(widths[rows].max())))
    return groups


@dataclass
class AttentionOptions:
    # Size of the space where history items are scored against the learned query.
    key_dim: int = 64


@user_encoders.register("attention", options=AttentionOptions)
class AttentionUserEncoder(nn.Module):
    """Attention pooling over the history with a learned query (starts as the mean; learns which items count)."""

    def __init__(self, options: AttentionOptions, dim: int):
        super().__init__()
        if options.key_dim <= 0:
            raise ConfigError(f"attention 'key_dim' must be positive, got {options.key_dim}.")
        self.out_dim = dim
        self.keys = nn.Linear(dim, options.key_dim, bias=False)
        # A zero query gives every item the same weight: the untrained encoder is the mean encoder.
        self.query = nn.Parameter(torch.zeros(options.key_dim))
        self.scale = options.key_dim**-0.5

    def pooling_weights(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The attention weights [B, L] (zero at padding): forward is the weighted sum of the history with these."""
        scores = (self.keys(history) @ self.query) * self.scale
        weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=1)
        # A row without any item has only -inf scores (NaN weights): it gets the zero vector.
        return torch.nan_to_num(weights, nan=0.0)

    def forward(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (self.pooling_weights(history, mask).unsqueeze(-1) * history).sum(1)

    def prefixes(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Position t pools items 0..t: one [L, L] causal mask instead of L calls."""
        length = history.shape[1]
        scores = (self.keys(history) @ self.query) * self.scale  # [B, L]
        causal = torch.ones(length, length, dtype=torch.bool, device=history.device).tril()
        allowed = causal.unsqueeze(0) & mask.unsqueeze(1)  # [B, t, s]: item s visible at prefix t
        weights = torch.softmax(scores.unsqueeze(1).masked_fill(~allowed, float("-inf")), dim=-1)
        return torch.nan_to_num(weights, nan=0.0) @ history


@dataclass
class SasRecOptions:
    # Transformer width: history vectors are projected down to it and the output back up, which keeps the
    # adapter small next to a 384-d content space.
    hidden: int = 64
    layers: int = 2
    heads: int = 2
    dropout: float = 0.1
    # Learned positions; longer histories keep their most recent max_length items.
    max_length: int = 50

    def check(self) -> str | None:
        for key in ("hidden", "layers", "heads", "max_length"):
            if getattr(self, key) <= 0:
                return f"sasrec '{key}' must be positive, got {getattr(self, key)}."
        if self.hidden % self.heads:
            return f"sasrec 'hidden' ({self.hidden}) must be divisible by 'heads' ({self.heads})."
        if not 0 <= self.dropout < 1:
            return f"sasrec 'dropout' must be in [0, 1), got {self.dropout}."
        return None

    def check_history(self, max_history: int) -> str | None:
        """Training windows hold max_history + 1 items, and each needs a position."""
        if self.max_length < max_history + 1:
            return f"sasrec max_length ({self.max_length}) must be at least model.max_history + 1 ({max_history + 1})."
        return None


@user_encoders.register("sasrec", options=SasRecOptions)
class SasRecUserEncoder(nn.Module):
    """SASRec: a causal transformer over the history with learned positions; every position predicts the next item."""

    def __init__(self, options: SasRecOptions, dim: int):
        super().__init__()
        problem = options.check()
        if problem:
            raise ConfigError(problem)
        self.out_dim = dim
        self.max_length = options.max_length
        self.down = nn.Linear(dim, options.hidden)
        self.positions = nn.Embedding(options.max_length, options.hidden)
        nn.init.normal_(self.positions.weight, std=0.02)
        layer = nn.TransformerEncoderLayer(
            options.hidden, options.heads, dim_feedforward=4 * options.hidden, dropout=options.dropout,
            batch_first=True, norm_first=True,
        )
        self.layers = nn.TransformerEncoder(layer, options.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(options.hidden)
        self.up = nn.Linear(options.hidden, dim)
        # Output = running mean of the history + up(transformer state), with `up` starting at zero: the untrained
        # encoder is the mean encoder, and order effects are learned on top of it.
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def prefixes(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, L, dim]: position t sees items 0..t only (causal mask); padded positions are never attended to.

        Rows are encoded in groups of similar width, each group cut after its last real position: nothing
        after a row's last item can reach its earlier positions (causality), so cutting changes no state that
        is read, and it spares the transformer the padding of short rows, most of a batch when histories are
        short (73% of the positions of the `amazon` recipe's training batches on Scientific). What positions
        after a row's last item hold is padding, as before: no caller reads them."""
        length = history.shape[1]
        if length > self.max_length:
            raise ConfigError(
                f"sasrec has {self.max_length} positions but got a history window of {length} items: set "
                f"model.user_encoder.max_length to at least model.max_history + 1."
            )
        groups = width_groups(mask) if length else []
        if not groups or (len(groups) == 1 and groups[0][1] == length):
            return self._prefixes(history, mask)
        parts = [
            nn.functional.pad(self._prefixes(history[rows, :width], mask[rows, :width]), (0, 0, 0, length - width))
            for rows, width in groups
        ]
        order = torch.cat([rows for rows, _ in groups])
        return torch.cat(parts)[torch.argsort(order)]

    def _prefixes(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """`prefixes` over the whole padded batch at once (what each width group runs)."""
        length = history.shape[1]
        pos = torch.arange(length, device=history.device)
        x = self.down(history) + self.positions(pos)
        causal = torch.ones(length, length, dtype=torch.bool, device=history.device).triu(1)  # True = blocked
        # Causality hides every later position from a real one; the padding mask is passed as well so that
        # no position ever reads a padded one.
        blocked = causal.unsqueeze(0) | ~mask.unsqueeze(1)
        # Key 0 stays open: a row without any item would otherwise attend to nothing (NaN). For every real
        # row it is open already (item 0 is real and precedes every position).
        blocked[:, :, 0] = False
        heads = self.layers.layers[0].self_attn.num_heads
        attn_mask = blocked.repeat_interleave(heads, dim=0)
        z = self.norm(self.layers(x, mask=attn_mask))
        weights = mask.to(history.dtype).unsqueeze(-1)
        running_mean = (history * weights).cumsum(1) / weights.cumsum(1).clamp(min=1.0)
        return running_mean + self.up(z)

    def forward(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if history.shape[1] > self.max_length:
            history, mask = history[:, -self.max_length :], mask[:, -self.max_length :]
        return _causal_last(self.prefixes(history, mask), mask)
