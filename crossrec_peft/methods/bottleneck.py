"""Bottleneck adapters (Houlsby et al., 2019; Pfeiffer et al., 2021), our own modules (peft has no such type).

An adapter is ``h + up(act(down(h)))`` with ``up`` initialised to zero, so an untrained adapter is the identity
and the untuned model equals the frozen backbone. It is inserted by replacing a submodule of the transformer
with `Adapted`, which calls the original module (frozen, unchanged) and then the adapter on its output. Only
the output is touched, so any module can be adapted: an nn.Linear, a bitsandbytes Linear8bitLt or Linear4bit,
even an nn.Identity. The adapter's width is the transformer's hidden size (the backbone's ``adapter_width``
when it defines one, otherwise its ``hidden_size``), never read from the wrapped module; a convolutional tower,
whose stages differ in width, answers per point (``adapter_width_at``), and its adapters act on the channel
dimension (the architecture's ``feature_dim``).

Where adapters go is declared per architecture in `ArchSpec.adapter_points` (backbones/spec.py): a point name
("attention", "mlp") -> a module-path pattern relative to the transformer (``backbone.base_model``) in which
``*`` stands for one path component, the layer index. Houlsby adapts the "attention" and "mlp" points,
Pfeiffer only "mlp". The `points` option overrides the kind's points; each entry is either a point name of
the architecture or, when it contains a "." or a "*", a raw module-path pattern (which also works for
architectures that have no spec).

The adapters are ordinary trainable parameters of the backbone (``...dense.adapter.down.weight``), so the
package writer exports them into crossrec_weights.safetensors and `Method.load` rebuilds them by attaching.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Mapping, Optional

import torch
from torch import nn

from ..errors import ConfigError, PackageError, did_you_mean
from ..registry import methods
from .base import Method, describe_backbone, transformer

if TYPE_CHECKING:
    from ..model.routing import SharedBackbone

log = logging.getLogger(__name__)

KINDS = {"houlsby": ("attention", "mlp"), "pfeiffer": ("mlp",)}
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}


@dataclass
class BottleneckOptions:
    kind: str = "pfeiffer"  # houlsby: after attention output and MLP output; pfeiffer: after MLP output only
    size: int = 64  # bottleneck width
    activation: str = "relu"  # relu | gelu | tanh | silu
    # null: the kind's points. Otherwise point names of the architecture ("attention", "mlp") or raw
    # module-path patterns relative to the transformer, "*" for the layer index ("encoder.layer.*.output.dense").
    points: Optional[List[str]] = None

    def check(self) -> str | None:
        if self.kind not in KINDS:
            return f"kind must be one of {', '.join(KINDS)}, got '{self.kind}'.{did_you_mean(self.kind, KINDS)}"
        if self.size <= 0:
            return f"size (the bottleneck width) must be positive, got {self.size}."
        if self.activation not in ACTIVATIONS:
            return (f"activation must be one of {', '.join(ACTIVATIONS)}, got '{self.activation}'."
                    f"{did_you_mean(self.activation, ACTIVATIONS)}")
        if self.points is not None:
            if not self.points:
                return "points is empty: leave it null to use the kind's points, or name at least one point or pattern."
            for point in self.points:
                if not isinstance(point, str) or not point.strip():
                    return f"points must be non-empty strings (point names or module-path patterns), got {point!r}."
                if ".." in point or point.startswith(".") or point.endswith("."):
                    return f"points entry '{point}' is not a module path (empty component between dots)."
            if len(set(self.points)) != len(self.points):
                return f"points lists an entry twice: {list(self.points)}."
        return None


class BottleneckAdapter(nn.Module):
    """The residual bottleneck h + up(act(down(h))); `up` starts at zero, so the adapter starts as the identity.

    `dim` is the feature dimension of h: -1 for a transformer's hidden states, 1 for a CNN's channels
    ([batch, channels, height, width]: the same Linear weights act per pixel, as 1x1 convolutions would).
    """

    def __init__(self, width: int, size: int, activation: str, dim: int = -1):
        super().__init__()
        self.width = width
        self.dim = dim
        self.down = nn.Linear(width, size)
        self.act = ACTIVATIONS[activation]()
        self.up = nn.Linear(size, width)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def update(self, h: torch.Tensor) -> torch.Tensor:
        """up(act(down(h))) in h's layout and dtype: what the adapter adds to h."""
        # The adapter keeps its own (float32) dtype; a half-precision or quantized backbone's output is cast in
        # and the update cast back, so the residual stream keeps the backbone's dtype.
        x = h.to(self.down.weight.dtype)
        if self.dim not in (-1, h.dim() - 1):
            x = x.movedim(self.dim, -1)
            return self.up(self.act(self.down(x))).movedim(-1, self.dim).to(h.dtype)
        return self.up(self.act(self.down(x))).to(h.dtype)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.update(h)


class Adapted(nn.Module):
    """A frozen module followed by a bottleneck adapter on its output (the first element of a tuple output)."""

    def __init__(self, original: nn.Module, adapter: BottleneckAdapter, path: str):
        super().__init__()
        self.original = original
        self.adapter = adapter
        self.path = path  # where it sits in the transformer, for error messages

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        out = self.original(*args, **kwargs)
        if isinstance(out, torch.Tensor):
            return self._adapt(out)
        if isinstance(out, tuple) and out and isinstance(out[0], torch.Tensor):
            return (self._adapt(out[0]), *out[1:])
        raise TypeError(f"bottleneck adapter at '{self.path}': the wrapped {type(self.original).__name__} returned "
                        f"{type(out).__name__}, not a tensor; adapt a module whose output is the hidden states.")

    def _adapt(self, h: torch.Tensor) -> torch.Tensor:
        if h.shape[self.adapter.dim] != self.adapter.width:
            raise ConfigError(
                f"bottleneck adapter at '{self.path}' has width {self.adapter.width} (the backbone's hidden size) "
                f"but the {type(self.original).__name__} there outputs size {h.shape[self.adapter.dim]}: adapt modules whose output is "
                "the transformer's hidden states, or give the backbone an `adapter_width` attribute."
            )
        return self.adapter(h)


def adapted_modules(module: nn.Module) -> list[str]:
    """Paths (under `module`) of every module carrying a bottleneck adapter, in module order."""
    return [name for name, sub in module.named_modules() if isinstance(sub, Adapted)]


def compile_pattern(pattern: str) -> re.Pattern:
    """A module-path pattern as a regex: `*` is exactly one path component, everything else is literal."""
    return re.compile(r"[^.]+".join(re.escape(part) for part in pattern.split("*")))


def _is_pattern(entry: str) -> bool:
    return "." in entry or "*" in entry


def adapter_width(backbone: nn.Module, path: str) -> int:
    """The width of an adapter at `path` (relative to the transformer): the backbone's `adapter_width_at(path)`
    where widths differ per point (a CNN's stages), else its `adapter_width` or `hidden_size`."""
    at = getattr(backbone, "adapter_width_at", None)
    if callable(at):
        return int(at(path))
    return int(getattr(backbone, "adapter_width", None) or getattr(backbone, "hidden_size"))


def feature_dim(backbone: nn.Module) -> int:
    """The feature dimension at adapter points: the architecture's `feature_dim` (1 for CNN channels), else -1."""
    return int(getattr(getattr(backbone, "arch", None), "feature_dim", -1))



@methods.register("bottleneck", options=BottleneckOptions)
class Bottleneck(Method):
    """Bottleneck adapters (Houlsby or Pfeiffer) inserted after the attention and/or MLP outputs of every layer."""

    options: BottleneckOptions

    def __init__(self, options: BottleneckOptions | None = None):
        super().__init__(options or BottleneckOptions())
        self.adapted: list[str] = []  # module paths that got an adapter, filled by attach

    def _describe(self, backbone: nn.Module) -> str:
        return describe_backbone(backbone)

    def patterns(self, backbone: nn.Module) -> list[tuple[str, str]]:
        """(label, module-path pattern) for every insertion point this method adapts on `backbone`."""
        o = self.options
        arch = getattr(backbone, "arch", None)
        declared = dict(getattr(arch, "adapter_points", None) or {})
        entries = list(o.points) if o.points is not None else list(KINDS[o.kind])
        out = []
        for entry in entries:
            if _is_pattern(entry):
                out.append((entry, entry))
            elif entry in declared:
                out.append((entry, declared[entry]))
            elif not declared:
                raise ConfigError(
                    f"No bottleneck adapter points are declared for {self._describe(backbone)}: set the method's `points` "
                    "to module-path patterns relative to the transformer, with * for the layer index "
                    "(for a BERT-like model: [encoder.layer.*.attention.output.dense, encoder.layer.*.output.dense])."
                )
            else:
                raise ConfigError(
                    f"Unknown bottleneck adapter point '{entry}' for {self._describe(backbone)}."
                    f"{did_you_mean(entry, declared)} Its points: {', '.join(sorted(declared))}; a module-path "
                    "pattern contains a '.' or a '*'."
                )
        return out

    def attach(self, backbone: nn.Module) -> None:
        o = self.options
        root = transformer(backbone)
        patterns = self.patterns(backbone)
        named = list(root.named_modules())
        modules = dict(named)  # parents are looked up here, before any replacement (patterns may nest)
        existing = adapted_modules(root)
        targets: list[tuple[str, nn.Module]] = []
        seen: set[int] = set()
        for label, pattern in patterns:
            regex = compile_pattern(pattern)
            found = [(name, sub) for name, sub in named if name and regex.fullmatch(name)]
            if not found:
                general = sorted({re.sub(r"(?<=\.)\d+(?=\.|$)", "*", name) for name, _ in named if name})
                where = f"point '{label}' (pattern '{pattern}')" if label != pattern else f"pattern '{pattern}'"
                raise ConfigError(
                    f"Bottleneck adapter {where} matches no module of {self._describe(backbone)}."
                    f"{did_you_mean(pattern, general)} Patterns are module paths relative to the transformer "
                    "(backbone.base_model) with * for one path component such as the layer index."
                )
            for name, sub in found:
                if isinstance(sub, (Adapted, BottleneckAdapter)) or any(name.startswith(f"{a}.") for a in existing):
                    raise ConfigError(f"'{name}' of {self._describe(backbone)} already carries a bottleneck adapter.")
                if id(sub) not in seen:
                    seen.add(id(sub))
                    targets.append((name, sub))
        widths = {name: adapter_width(backbone, name) for name, _ in targets}
        for name, sub in targets:
            out_features, width = getattr(sub, "out_features", None), widths[name]
            if isinstance(out_features, int) and out_features != width:
                raise ConfigError(
                    f"Bottleneck adapter at '{name}' of {self._describe(backbone)}: the module outputs {out_features} "
                    f"features but the backbone's hidden size is {width}; adapt modules whose output is the hidden states."
                )

        root.requires_grad_(False)
        reference = next(root.parameters(), None)
        for name, sub in targets:
            tensor = next(iter(sub.parameters()), None)
            if tensor is None:
                tensor = next(iter(sub.buffers()), None)
            if tensor is None:  # an nn.Identity: the transformer's device
                tensor = reference
            device = tensor.device if tensor is not None else torch.device("cpu")
            adapter = BottleneckAdapter(widths[name], o.size, o.activation, feature_dim(backbone)).to(device=device, dtype=torch.float32)
            adapter.requires_grad_(True)
            wrapper = Adapted(sub, adapter, name)
            wrapper.train(sub.training)
            parent_name, _, attr = name.rpartition(".")
            parent = modules[parent_name]
            setattr(parent, attr, wrapper)
        self.adapted = adapted_modules(root)
        log.info("bottleneck (%s, size %d): %d adapters on %s", o.kind if o.points is None else "points", o.size,
                 len(self.adapted), self._describe(backbone))

    def share(self, shared: "SharedBackbone", domain: str, directory: Path, state: Mapping[str, torch.Tensor]) -> None:
        """Routed hooks: each adapter transforms its frozen module's output on this domain's rows only. The
        adapters come from `state` (``<module path>.adapter.<down|up>.<weight|bias>``, relative to the backbone)."""
        groups: dict[str, dict[str, torch.Tensor]] = {}
        for key, value in state.items():
            path, sep, rest = key.partition(".adapter.")
            if not sep:
                raise PackageError(f"{directory}: backbone tensor '{key}' is not part of a bottleneck adapter.")
            groups.setdefault(path, {})[rest] = value
        if not groups:
            raise PackageError(f"{directory}: the bottleneck method has no adapter tensors in its weights.")
        prefix = shared.transformer_prefix
        for path, tensors in groups.items():
            module = shared.module(path, str(directory))
            width = adapter_width(shared.backbone, path.removeprefix(prefix))
            down = tensors.get("down.weight")
            if down is None or down.shape[1] != width:
                got = "no down.weight" if down is None else f"width {down.shape[1]}"
                raise PackageError(f"{directory}: bottleneck adapter at '{path}' has {got}; backbone '{shared.identity.get('id')}' has hidden size {width}.")
            adapter = BottleneckAdapter(width, int(down.shape[0]), self.options.activation, feature_dim(shared.backbone))
            try:
                adapter.load_state_dict(tensors)
            except RuntimeError as exc:
                raise PackageError(f"{directory}: bottleneck adapter at '{path}': {str(exc).splitlines()[0]}") from None
            shared.keep(domain, adapter)
            shared.route_output(domain, module, adapter)
