"""`side`: decoupled side adapters over cached per-layer states (after IISAN, Fu et al., SIGIR 2024).

The frozen backbone runs once per item (the layer cache keeps its embedding and every layer's pooled
state). A small side network then reads those states:

    s_0 = a_0(h_0)
    s_i = g_i * s_{i-1} + (1 - g_i) * a_i(h_i)      for each selected layer i (intra-modal gated fusion)
    e   = embedding + up(s_last)                     up starts at zero: an untrained `side` is `frozen`

where a_i = GELU(down_i(LayerNorm(h_i))) is the layer's bottleneck adapter and g_i = sigmoid(gate_i) a learned
gate (one scalar per layer, or one per side feature). The modalities' embeddings then meet in the model's
fusion (inter-modal) as for every method. No gradient reaches the backbone and training never runs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from ..cache import Keep, Pooled
from ..cache.layers import needs
from ..errors import ConfigError
from ..registry import methods
from .cached import PREFIX, CachedMethod

GATES = ("scalar", "vector")


@dataclass
class SideOptions:
    # Which cached layers the side network reads (layer 0: the embeddings; 1..L: the blocks' outputs):
    # "all", "last:<k>", "every:<n>" (every n-th block, ending at the last), or a comma list "2,4,6".
    layers: str = "all"
    bottleneck: int = 128  # width of the side state
    gate: str = "scalar"  # scalar | vector
    dropout: float = 0.1

    def check(self) -> str | None:
        if self.bottleneck <= 0:
            return f"bottleneck must be positive, got {self.bottleneck}."
        if self.gate not in GATES:
            return f"gate must be one of {', '.join(GATES)}, got '{self.gate}'."
        if not 0 <= self.dropout < 1:
            return f"dropout must be in [0, 1), got {self.dropout}."
        try:
            select_layers(self.layers, 10**6)  # the syntax; the range is checked against the backbone
        except ConfigError as exc:
            return str(exc)
        return None


def select_layers(spec: str, num_layers: int) -> list[int]:
    """Layer indices (0..num_layers) named by a `layers` option."""
    spec = str(spec).strip()
    every = list(range(num_layers + 1))
    try:
        if spec == "all":
            return every
        if spec.startswith("last:"):
            k = int(spec[5:])
            if k < 1:
                raise ValueError
            return every[-k:]
        if spec.startswith("every:"):
            n = int(spec[6:])
            if n < 1:
                raise ValueError
            return sorted(every[::-1][::n])
        chosen = sorted({int(x) for x in spec.split(",") if x.strip()})
    except ValueError:
        raise ConfigError(f"layers must be all, last:<k>, every:<n> or a list like 2,4,6; got '{spec}'.") from None
    if not chosen or chosen[0] < 0:
        raise ConfigError(f"layers '{spec}' selects no layer.")
    if chosen[-1] > num_layers:
        raise ConfigError(f"layers '{spec}' names layer {chosen[-1]}, but the backbone has layers 0..{num_layers}.")
    return chosen


class SideNetwork(nn.Module):
    def __init__(self, widths: list[int], layers: list[int], out_dim: int, options: SideOptions):
        super().__init__()
        self.layers = list(layers)
        offsets = [0]
        for w in widths:
            offsets.append(offsets[-1] + int(w))
        self.slices = [(offsets[i], offsets[i + 1]) for i in self.layers]
        b = options.bottleneck
        self.norms = nn.ModuleList(nn.LayerNorm(int(widths[i])) for i in self.layers)
        self.downs = nn.ModuleList(nn.Linear(int(widths[i]), b) for i in self.layers)
        # One gate per layer after the first (the first layer starts the side state).
        self.gates = nn.Parameter(torch.zeros(len(self.layers) - 1, b if options.gate == "vector" else 1)) if len(self.layers) > 1 else None
        self.act = nn.GELU()
        self.dropout = nn.Dropout(options.dropout)
        self.up = nn.Linear(b, out_dim)
        nn.init.zeros_(self.up.weight)  # the identity start: side == frozen before training
        nn.init.zeros_(self.up.bias)

    def forward(self, output: torch.Tensor, layers: torch.Tensor) -> torch.Tensor:
        state = None
        for i, ((lo, hi), norm, down) in enumerate(zip(self.slices, self.norms, self.downs)):
            adapted = self.act(down(norm(layers[:, lo:hi])))
            if state is None:
                state = adapted
            else:
                g = torch.sigmoid(self.gates[i - 1])
                state = g * state + (1 - g) * adapted
        return output + self.up(self.dropout(state))


@methods.register("side", options=SideOptions)
class Side(CachedMethod):
    """Side adapters over cached per-layer states (IISAN-style): the backbone never runs while training."""

    def __init__(self, options: Any = None):
        super().__init__(options if options is not None else SideOptions())

    def attach(self, backbone: nn.Module) -> None:
        backbone.requires_grad_(False)

    def load(self, backbone: nn.Module, directory, *, trainable: bool = False) -> None:
        self.attach(backbone)  # the side network's weights are in crossrec_weights.safetensors

    def keep(self, backbone: nn.Module) -> Keep:
        return Pooled()

    def own_backbone_reason(self) -> str | None:
        # A shared backbone's pass returns embeddings only; the side network needs every layer's state.
        return "side reads every layer's state, which a shared backbone's pass does not return"

    def module(self, backbone: nn.Module) -> nn.Module:
        needs(backbone, "side", "layer_widths", "layer_states")
        widths = list(backbone.layer_widths())
        layers = select_layers(self.options.layers, len(widths) - 1)
        return SideNetwork(widths, layers, int(backbone.hidden_size), self.options)

    def encode(self, backbone: nn.Module, module: nn.Module | None, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        assert module is not None
        return module(inputs[PREFIX + "output"], inputs[PREFIX + "layers"])
