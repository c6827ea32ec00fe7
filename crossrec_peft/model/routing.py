"""Several domains' adapters on one frozen backbone, and batches whose rows belong to different domains.

A `SharedBackbone` holds one frozen backbone, loaded once, and every domain's adapter for it:

- LoRA through peft: each domain is a named adapter of one `PeftModel`. A mixed batch passes peft's
  `adapter_names` (one name per row; "__base__" for rows whose domain has no LoRA); a single-domain batch
  runs peft's ordinary path with that domain's adapter active.
- IA3 and bottleneck adapters through our own forward hooks on the frozen modules they adapt: peft's IA3
  layers cannot route rows, and bottleneck adapters are ours. Hooks leave module paths and parameter names
  untouched, so they sit on the same frozen Linear that a peft LoRA layer wraps, and a LoRA domain, an IA3
  domain and a bottleneck domain share one backbone.

Each row is transformed only by its own domain's adapter (the others are the identity for it), so one pass
over a mixed batch equals running each domain on its own rows (tests/model/test_routing.py).
"""

from __future__ import annotations

import json
import re
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..errors import PackageError

BASE = "__base__"  # peft's adapter name for "no adapter" in a mixed batch


class _Route:
    """The rows of the batch in flight: one domain for all (`single`) or row indices per domain (`groups`)."""

    def __init__(self) -> None:
        self.single: str | None = None
        self.groups: dict[str, torch.Tensor] = {}

    def scale(self, scales: Mapping[str, torch.Tensor], x: torch.Tensor, dim: int = -1) -> torch.Tensor | None:
        """`x` times each row's domain's scale vector over dimension `dim` (IA3: the last one for a Linear, the
        channels for a convolution); None if no row has one. A mixed batch builds one [rows, features] scale
        matrix: no gather or scatter of the activations."""
        dim = dim % x.dim()
        if self.single is not None:
            scale = scales.get(self.single)
            if scale is None:
                return None
            shape = (1,) * dim + (x.shape[dim],) + (1,) * (x.dim() - dim - 1)
            return (x.to(scale.dtype) * scale.view(shape)).to(x.dtype)
        present = [(rows, scales[d]) for d, rows in self.groups.items() if d in scales]
        if not present:
            return None
        matrix = torch.ones(len(x), x.shape[dim], dtype=present[0][1].dtype, device=x.device)
        for rows, scale in present:
            matrix[rows] = scale
        shape = (len(x),) + (1,) * (dim - 1) + (x.shape[dim],) + (1,) * (x.dim() - dim - 1)
        return (x.to(matrix.dtype) * matrix.view(shape)).to(x.dtype)

    def adapt(self, adapters: Mapping[str, nn.Module], h: torch.Tensor, *, fresh: bool) -> torch.Tensor | None:
        """`h` plus each row's domain's bottleneck update (`BottleneckAdapter`: h + up(act(down(h))));
        None if no row has an adapter. In a mixed batch the updates are added in place when `h` is `fresh`
        (a new tensor that nothing else reads), otherwise to a copy."""
        if self.single is not None:
            adapter = adapters.get(self.single)
            return None if adapter is None else adapter(h)
        out = None
        for domain, rows in self.groups.items():
            adapter = adapters.get(domain)
            if adapter is None:
                continue
            x = h[rows]
            update = adapter.update(x)
            if out is None:
                out = h if fresh else h.clone()
            out.index_add_(0, rows, update)
        return out


class _ModuleRoutes:
    """Every domain's IA3 scale of one frozen module's input (feed-forward) or output, and every domain's
    bottleneck adapter on its output, applied by forward hooks registered on first use."""

    def __init__(self, module: nn.Module, route: _Route, path: str):
        self.module = module
        self.route = route
        self.path = path
        # IA3 scales a convolution's channels (dimension 1), a Linear's last dimension.
        self.dim = 1 if isinstance(module, nn.modules.conv._ConvNd) else -1
        self.input_scales: dict[str, torch.Tensor] = {}
        self.output_scales: dict[str, torch.Tensor] = {}
        self.adapters: dict[str, nn.Module] = {}
        self._handles: list[Any] = []

    def add_scale(self, domain: str, scale: torch.Tensor, *, on_input: bool) -> None:
        (self.input_scales if on_input else self.output_scales)[domain] = scale
        self._hook()

    def add_adapter(self, domain: str, adapter: nn.Module) -> None:
        self.adapters[domain] = adapter
        self._hook()

    def _hook(self) -> None:
        if not self._handles:
            self._handles = [self.module.register_forward_pre_hook(self._pre), self.module.register_forward_hook(self._post)]

    def remove(self, domain: str) -> None:
        for table in (self.input_scales, self.output_scales, self.adapters):
            table.pop(domain, None)
        if not (self.input_scales or self.output_scales or self.adapters):
            for handle in self._handles:
                handle.remove()
            self._handles = []

    def _pre(self, module: nn.Module, args: tuple) -> tuple | None:
        if not self.input_scales or not args or not isinstance(args[0], torch.Tensor):
            return None
        x = self.route.scale(self.input_scales, args[0], self.dim)
        return None if x is None else (x, *args[1:])

    def _apply(self, h: torch.Tensor, args: tuple) -> torch.Tensor | None:
        out = self.route.scale(self.output_scales, h, self.dim) if self.output_scales else None
        if self.adapters:
            # An output that shares memory with an input (nn.Identity, a view) must not be changed in place.
            storage = h.untyped_storage().data_ptr()
            fresh = out is not None or not any(
                isinstance(a, torch.Tensor) and a.untyped_storage().data_ptr() == storage for a in args
            )
            adapted = self.route.adapt(self.adapters, h if out is None else out, fresh=fresh)
            out = adapted if adapted is not None else out
        return out

    def _post(self, module: nn.Module, args: tuple, output: Any) -> Any:
        if not self.output_scales and not self.adapters:
            return None
        if isinstance(output, torch.Tensor):
            return self._apply(output, args)
        if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
            h = self._apply(output[0], args)
            return None if h is None else (h, *output[1:])
        raise TypeError(f"routed adapter at '{self.path}': the module returned {type(output).__name__}, not hidden states.")


def _transformer_path(backbone: nn.Module) -> str:
    """Where the transformer (what peft wraps and bottleneck paths are relative to) sits inside the backbone."""
    root = getattr(backbone, "base_model", None)
    if root is None:
        root = getattr(backbone, "model", backbone)
    return next((name for name, m in backbone.named_modules() if m is root), "")


def _feedforward(config: Mapping[str, Any], key: str) -> bool:
    """peft's rule for IA3: does this target scale its input (feed-forward) rather than its output?"""
    modules = config.get("feedforward_modules") or []
    if isinstance(modules, str):
        return re.fullmatch(modules, key) is not None
    return any(key == m or key.endswith(f".{m}") for m in modules)


class SharedBackbone(nn.Module):
    """One frozen backbone shared by several domains, each with its own adapter (LoRA, IA3, bottleneck or
    none); `forward(inputs, domains)` encodes a batch whose row i belongs to `domains[i]`."""

    def __init__(self, backbone: nn.Module, identity: Mapping[str, Any] | None = None):
        super().__init__()
        self.backbone = backbone
        self.identity = dict(identity if identity is not None else backbone.identity())
        # Paths of the untouched backbone: a peft wrapper moves a Linear under `base_layer` later, but the
        # Linear object (where our hooks sit) stays the same.
        self._modules_at = dict(backbone.named_modules())
        prefix = _transformer_path(backbone)
        self._transformer_prefix = f"{prefix}." if prefix else ""
        self._route = _Route()
        self._routes: dict[int, _ModuleRoutes] = {}
        self.adapters = nn.ModuleDict()  # domain -> its routed (non-peft) weights
        self.methods: dict[str, str] = {}  # domain -> method name
        self._lora: set[str] = set()
        self._active_lora: str | None = None

    @property
    def domains(self) -> list[str]:
        return list(self.methods)

    # -- adding and removing domains -------------------------------------------------------------------------
    def _module(self, path: str, where: str) -> nn.Module:
        module = self._modules_at.get(path)
        if module is None:
            raise PackageError(f"{where}: the adapter names module '{path}', which backbone '{self.identity.get('id')}' does not have.")
        return module

    def _routes_for(self, module: nn.Module, path: str) -> _ModuleRoutes:
        routes = self._routes.get(id(module))
        if routes is None:
            routes = self._routes[id(module)] = _ModuleRoutes(module, self._route, path)
        return routes

    def add(self, domain: str, method: Mapping[str, Any], directory: Path, state: Mapping[str, torch.Tensor]) -> None:
        """Attach `domain`'s adapter: peft files in `directory` (LoRA, IA3) or routed tensors from `state`
        (bottleneck: names relative to the backbone, as in crossrec_weights.safetensors)."""
        if domain in self.methods:
            raise PackageError(f"Domain '{domain}' already has an adapter on backbone '{self.identity.get('id')}'.")
        name = str(method.get("name"))
        try:
            if name in ("lora", "ia3"):
                self._add_peft(domain, directory)
            elif name == "bottleneck":
                self._add_bottleneck(domain, method, state, directory)
            elif state:
                raise PackageError(f"{directory}: method '{name}' cannot share a backbone with other domains.")
        except Exception:
            self.remove(domain)
            raise
        self.methods[domain] = name

    def _add_peft(self, domain: str, directory: Path) -> None:
        config_path = directory / "adapter_config.json"
        try:
            config = json.loads(config_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise PackageError(f"{config_path}: cannot be read ({exc}).") from None
        kind = config.get("peft_type")
        if kind == "LORA":
            self._add_lora(domain, directory)
        elif kind == "IA3":
            self._add_ia3(domain, directory, config)
        else:
            raise PackageError(f"{config_path}: peft type {kind!r} cannot be routed per domain (LoRA and IA3 can).")

    def _add_lora(self, domain: str, directory: Path) -> None:
        from peft import PeftModel

        try:
            if not self._lora:
                self.backbone.model = PeftModel.from_pretrained(self.backbone.model, str(directory), adapter_name=domain)
            else:
                # low_cpu_mem_usage: the new LoRA layers are created empty and filled from the file (no init).
                self.backbone.model.load_adapter(str(directory), adapter_name=domain, low_cpu_mem_usage=True)
        except RuntimeError as exc:  # torch's size mismatch
            raise PackageError(
                f"{directory}: the LoRA weights do not fit backbone '{self.identity.get('id')}': {str(exc).splitlines()[0][:300]}"
            ) from None
        self.backbone.model.requires_grad_(False)
        self.backbone.model.eval()
        self._lora.add(domain)
        self._active_lora = None

    def _add_ia3(self, domain: str, directory: Path, config: Mapping[str, Any]) -> None:
        from safetensors.torch import load_file

        weights = load_file(str(directory / "adapter_model.safetensors"))
        container = nn.ParameterDict()
        for key, value in weights.items():
            if not key.endswith(".ia3_l"):
                raise PackageError(f"{directory}: unexpected IA3 tensor '{key}'.")
            # peft saves "base_model.model.<path in the transformer>.ia3_l".
            inner = key[: -len(".ia3_l")].removeprefix("base_model.model.")
            module = self._module(self._transformer_prefix + inner, str(directory))
            on_input = _feedforward(config, inner)
            features = getattr(module, "in_features" if on_input else "out_features", None)
            if isinstance(module, nn.modules.conv._ConvNd):
                features = module.in_channels if on_input else module.out_channels
            if features is not None and value.numel() != features:
                raise PackageError(
                    f"{directory}: IA3 vector for '{inner}' has {value.numel()} entries, the module of backbone "
                    f"'{self.identity.get('id')}' has {features} {'inputs' if on_input else 'outputs'}."
                )
            scale = nn.Parameter(value.flatten().float(), requires_grad=False)
            container[str(len(container))] = scale
            self._routes_for(module, inner).add_scale(domain, scale, on_input=on_input)
        self.adapters[domain] = container

    def _add_bottleneck(self, domain: str, method: Mapping[str, Any], state: Mapping[str, torch.Tensor], directory: Path) -> None:
        from ..methods.bottleneck import BottleneckAdapter, adapter_width, feature_dim

        groups: dict[str, dict[str, torch.Tensor]] = {}
        for key, value in state.items():
            path, sep, rest = key.partition(".adapter.")
            if not sep:
                raise PackageError(f"{directory}: backbone tensor '{key}' is not part of a bottleneck adapter.")
            groups.setdefault(path, {})[rest] = value
        if not groups:
            raise PackageError(f"{directory}: the bottleneck method has no adapter tensors in its weights.")
        container = nn.ModuleDict()
        for path, tensors in groups.items():
            module = self._module(path, str(directory))
            width = adapter_width(self.backbone, path.removeprefix(self._transformer_prefix))
            down = tensors.get("down.weight")
            if down is None or down.shape[1] != width:
                got = "no down.weight" if down is None else f"width {down.shape[1]}"
                raise PackageError(f"{directory}: bottleneck adapter at '{path}' has {got}; backbone '{self.identity.get('id')}' has hidden size {width}.")
            adapter = BottleneckAdapter(width, int(down.shape[0]), str(method.get("activation", "relu")), feature_dim(self.backbone))
            try:
                adapter.load_state_dict(tensors)
            except RuntimeError as exc:
                raise PackageError(f"{directory}: bottleneck adapter at '{path}': {str(exc).splitlines()[0]}") from None
            adapter.requires_grad_(False).eval()
            container[str(len(container))] = adapter
            self._routes_for(module, path).add_adapter(domain, adapter)
        self.adapters[domain] = container

    def remove(self, domain: str) -> None:
        """Detach `domain`'s adapter (its other domains keep theirs)."""
        for routes in self._routes.values():
            routes.remove(domain)
        if domain in self.adapters:
            del self.adapters[domain]
        if domain in self._lora:
            self.backbone.model.delete_adapter(domain)
            self._lora.discard(domain)
            self._active_lora = None
        self.methods.pop(domain, None)

    # -- encoding --------------------------------------------------------------------------------------------
    def _lora_context(self, domains: Sequence[str], single: str | None):
        if not self._lora:
            return nullcontext()
        if single is not None and single in self._lora:
            if self._active_lora != single:  # peft's ordinary single-adapter path
                self.backbone.model.base_model.set_adapter(single, inference_mode=True)
                self._active_lora = single
            return nullcontext()
        names = [d if d in self._lora else BASE for d in domains]
        return self.backbone.model.base_model._enable_peft_forward_hooks(adapter_names=names)

    @torch.no_grad()
    def forward(self, inputs: Mapping[str, torch.Tensor], domains: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(embeddings [B, dim], present [B]) for a batch whose row i belongs to `domains[i]`. Rows marked
        absent in inputs["present"] are not encoded and get zeros (as in `ModalityEncoder.forward`)."""
        inputs = dict(inputs)
        present = inputs.pop("present", None)
        some = inputs[next(iter(inputs))]
        if present is None:
            present = torch.ones(len(some), dtype=torch.bool, device=some.device)
        present = present.to(some.device)
        if len(domains) != len(present):
            raise ValueError(f"{len(domains)} domains for a batch of {len(present)} rows")
        param = next(self.backbone.parameters())
        out = torch.zeros(len(present), int(self.backbone.hidden_size), device=param.device, dtype=param.dtype)
        if not bool(present.any()):
            return out, present
        everything = bool(present.all())
        rows = inputs if everything else {k: v[present] for k, v in inputs.items()}
        kept = list(domains) if everything else [d for d, p in zip(domains, present.tolist()) if p]
        unique = list(dict.fromkeys(kept))
        route = self._route
        if len(unique) == 1:
            route.single, route.groups = unique[0], {}
        else:
            route.single = None
            route.groups = {d: torch.tensor([i for i, x in enumerate(kept) if x == d], device=some.device) for d in unique}
        try:
            with self._lora_context(kept, route.single):
                encoded = self.backbone(**rows)
        finally:
            route.single, route.groups = None, {}
        if everything:
            return encoded, present
        return out.to(encoded.dtype).index_copy(0, present.nonzero().squeeze(1), encoded), present

