"""What a cached method keeps of a backbone's forward pass for each item (a `Keep`), and how it is computed.

- `Output`: the backbone's item embedding (what `frozen` reads). Needs only `backbone(**inputs)`: every
  backbone kind has it.
- `Pooled`: the embedding and every layer's pooled state, concatenated (what `side` reads). Needs the
  backbone to implement `layer_widths()` and `layer_states(**inputs)` (see `backbones.base.LayeredBackbone`).
- `Tokens(start)`: the token-level states entering layer `start` and their mask (what `top` reads). Needs
  `tokens_entering(start, **inputs)` and `forward_from(start, tokens, attention_mask)`.

Every kind also keeps `present`: whether the item has this modality at all (an item without an image).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch

from ..errors import ConfigError

Fields = dict[str, tuple[tuple[int, ...], str]]


def needs(backbone: Any, method: str, *functions: str) -> None:
    missing = [f for f in functions if not callable(getattr(backbone, f, None))]
    if missing:
        raise ConfigError(
            f"Method '{method}' reads cached layer states, which backbone '{getattr(backbone, 'model_id', type(backbone).__name__)}' "
            f"does not provide (it has no {', '.join(missing)}; see backbones.base.LayeredBackbone)."
        )


class Keep:
    name: str

    def fields(self, backbone: Any, features: Mapping[str, Any], dtype: str) -> Fields:
        raise NotImplementedError

    def encode(self, backbone: Any, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The kept values of a batch of present items (inputs as the backbone's collate returns them)."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"kind": self.name}


@dataclass
class Output(Keep):
    name = "output"

    def fields(self, backbone: Any, features: Mapping[str, Any], dtype: str) -> Fields:
        return {"output": ((int(backbone.hidden_size),), dtype), "present": ((), "uint8")}

    def encode(self, backbone: Any, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"output": backbone(**inputs)}


@dataclass
class Pooled(Keep):
    name = "pooled"

    def fields(self, backbone: Any, features: Mapping[str, Any], dtype: str) -> Fields:
        needs(backbone, "side", "layer_widths", "layer_states")
        width = sum(int(w) for w in backbone.layer_widths())
        return {"output": ((int(backbone.hidden_size),), dtype), "layers": ((width,), dtype), "present": ((), "uint8")}

    def encode(self, backbone: Any, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        output, layers = backbone.layer_states(**inputs)
        return {"output": output, "layers": torch.cat(list(layers), dim=-1)}


@dataclass
class Tokens(Keep):
    start: int = 0

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"tokens{self.start}"

    def fields(self, backbone: Any, features: Mapping[str, Any], dtype: str) -> Fields:
        needs(backbone, "top", "tokens_entering", "forward_from", "token_count")
        length = int(backbone.token_count(features))
        width = int(backbone.layer_widths()[self.start])
        return {"tokens": ((length, width), dtype), "mask": ((length,), "uint8"), "present": ((), "uint8")}

    def encode(self, backbone: Any, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        tokens, mask = backbone.tokens_entering(self.start, **inputs)
        return {"tokens": tokens, "mask": mask}

    def describe(self) -> dict[str, Any]:
        return {"kind": "tokens", "start": self.start}
