"""Several domains' adapters on one frozen backbone, and batches whose rows belong to different domains.

A `SharedBackbone` holds one frozen backbone, loaded once, and every domain's adapter for it. How a domain's
weights sit on it is the domain's method's business (`Method.share`, methods/base.py); this module only
holds the machinery methods share with:

- routed hooks (`route_input`, `route_output`): a function applied to one frozen module's input or output,
  on the rows of one domain only. Hooks leave module paths and parameter names untouched, so several domains'
  functions sit on the same frozen Linear (even one a peft LoRA layer wraps). `keep` holds the tensors
  those functions use, so they move with the backbone.
- peft named adapters routed by peft itself (`add_named_peft`): one `PeftModel` whose adapters are the
  domains; a mixed batch passes peft's `adapter_names` (one per row, "__base__" for rows of other domains).
- views (`add_view`): a domain's own module tree over the same frozen tensors, onto which its method loads
  as it would onto a fresh backbone. Any method that leaves the frozen tensors alone shares this way; its
  rows run through the view in their own pass.

Each row is transformed only by its own domain's adapter (the others are the identity for it), so one call
over a mixed batch equals running each domain on its own rows (tests/model/test_routing.py).

A method's load that fails (torch's size mismatch, peft's missing target module) leaves the backbone as it was
and is raised as it came: the caller, which knows the package, turns it into the PackageError a user reads
(`OpenedPackage.loading`, package.py), the same one as for a standalone load.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from ..errors import PackageError
from ..methods.base import transformer
from ..methods.peft_methods import PEFT_WEIGHTS, adapter_tensors, check_peft_tensors

if TYPE_CHECKING:
    from ..methods.base import Method

BASE = "__base__"  # peft's adapter name for "no adapter" in a mixed batch
Fn = Callable[[torch.Tensor], torch.Tensor]


class Route:
    """The rows of the batch in flight: one domain for all (`single`) or row indices per domain (`groups`)."""

    def __init__(self) -> None:
        self.single: str | None = None
        self.groups: dict[str, torch.Tensor] = {}

    def apply(self, fns: Mapping[str, Fn], x: torch.Tensor) -> torch.Tensor | None:
        """`x` with each row transformed by its domain's function (rows of domains without one unchanged);
        None when no row has one. `x` itself is never changed: a module's output may be its input."""
        if self.single is not None:
            fn = fns.get(self.single)
            return None if fn is None else fn(x)
        present = [(rows, fns[d]) for d, rows in self.groups.items() if d in fns]
        if not present:
            return None
        out = x.clone()
        for rows, fn in present:
            out.index_copy_(0, rows, fn(x.index_select(0, rows)).to(out.dtype))
        return out


class ModuleRoutes:
    """Every domain's function on one frozen module's input and output, applied by forward hooks that are
    registered on first use and removed with the last domain."""

    def __init__(self, module: nn.Module, route: Route, path: str):
        self.module = module
        self.route = route
        self.path = path
        self.inputs: dict[str, Fn] = {}
        self.outputs: dict[str, Fn] = {}
        self._handles: list[Any] = []

    def add(self, domain: str, fn: Fn, *, on_input: bool) -> None:
        table = self.inputs if on_input else self.outputs
        previous = table.get(domain)
        table[domain] = fn if previous is None else (lambda x, first=previous, then=fn: then(first(x)))
        if not self._handles:
            self._handles = [self.module.register_forward_pre_hook(self._pre), self.module.register_forward_hook(self._post)]

    def remove(self, domain: str) -> None:
        self.inputs.pop(domain, None)
        self.outputs.pop(domain, None)
        if not (self.inputs or self.outputs):
            for handle in self._handles:
                handle.remove()
            self._handles = []

    def _pre(self, module: nn.Module, args: tuple) -> tuple | None:
        if not self.inputs or not args or not isinstance(args[0], torch.Tensor):
            return None
        x = self.route.apply(self.inputs, args[0])
        return None if x is None else (x, *args[1:])

    def _post(self, module: nn.Module, args: tuple, output: Any) -> Any:
        if not self.outputs:
            return None
        if isinstance(output, torch.Tensor):
            return self.route.apply(self.outputs, output)
        if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
            h = self.route.apply(self.outputs, output[0])
            return None if h is None else (h, *output[1:])
        raise TypeError(f"routed adapter at '{self.path}': the module returned {type(output).__name__}, not hidden states.")


_HOOK_TABLES = (
    "_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs", "_backward_hooks", "_backward_pre_hooks",
)


def structural_copy(module: nn.Module) -> nn.Module:
    """A new module tree over the same parameter and buffer tensors: every module object is copied (so
    replacing a child in the copy leaves the original alone), no tensor is. Hooks are not copied."""
    memo: dict[int, nn.Module] = {}

    def visit(m: nn.Module) -> nn.Module:
        if id(m) in memo:
            return memo[id(m)]
        c = copy.copy(m)
        memo[id(m)] = c
        c._parameters = dict(m._parameters)
        c._buffers = dict(m._buffers)
        c._non_persistent_buffers_set = set(m._non_persistent_buffers_set)
        for table in _HOOK_TABLES:
            if hasattr(m, table):
                setattr(c, table, OrderedDict())
        c._modules = {k: (visit(v) if v is not None else None) for k, v in m._modules.items()}
        return c

    return visit(module)


def _path_of(root: nn.Module, target: nn.Module) -> str:
    return next((name for name, m in root.named_modules() if m is target), "")


def _strip_peft(model: nn.Module) -> nn.Module:
    """`model` with every peft layer in it replaced by the frozen layer it wraps, and without the `peft_config`
    peft leaves on it: the module tree it had before peft wrapped it (the same layer objects, so routed hooks
    stay where they are). Returns `model`."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    tuned = [(name, m) for name, m in model.named_modules() if isinstance(m, BaseTunerLayer)]
    for name, layer in tuned:
        if any(name.startswith(f"{outer}.") for outer, _ in tuned if outer != name):
            continue  # inside another peft layer: goes with it
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, layer.get_base_layer())
    if "peft_config" in model.__dict__:
        del model.peft_config
    return model


class SharedBackbone(nn.Module):
    """One frozen backbone shared by several domains, each with its own method's adapter;
    `forward(inputs, domains)` encodes a batch whose row i belongs to `domains[i]`."""

    def __init__(self, backbone: nn.Module, identity: Mapping[str, Any] | None = None):
        super().__init__()
        self.backbone = backbone
        self.identity = dict(identity if identity is not None else backbone.identity())
        # Paths of the untouched backbone: a peft wrapper moves a Linear under `base_layer` later, but the
        # Linear object (where routed hooks sit) stays the same.
        self._modules_at = dict(backbone.named_modules())
        prefix = _path_of(backbone, transformer(backbone))
        self._transformer_prefix = f"{prefix}." if prefix else ""
        # The untouched module tree, for views (kept out of the module registry: its tensors are the backbone's).
        self.__dict__["_pristine"] = structural_copy(backbone)
        self._route = Route()
        self._routes: dict[int, ModuleRoutes] = {}
        self.adapters = nn.ModuleDict()  # domain -> tensors its routed functions use (moved with the backbone)
        self.views = nn.ModuleDict()  # domain -> its view of the backbone
        self.methods: dict[str, "Method"] = {}  # domain -> its method
        self._peft: set[str] = set()  # domains that are named adapters of the backbone's PeftModel
        self._active_peft: str | None = None

    @property
    def domains(self) -> list[str]:
        return list(self.methods)

    @property
    def transformer_prefix(self) -> str:
        """The transformer's path inside the backbone, with a trailing dot ("" when it is the backbone)."""
        return self._transformer_prefix

    # -- what methods use to share ---------------------------------------------------------------------------
    def module(self, path: str, where: str) -> nn.Module:
        """The frozen module at `path` (relative to the backbone) of the untouched backbone."""
        module = self._modules_at.get(path)
        if module is None:
            raise PackageError(f"{where}: the adapter names module '{path}', which backbone '{self.identity.get('id')}' does not have.")
        return module

    def transformer_module(self, path: str, where: str) -> nn.Module:
        """The frozen module at `path` relative to the transformer (how peft names modules)."""
        return self.module(self._transformer_prefix + path, where)

    def transformer_modules(self) -> Iterator[tuple[str, nn.Module]]:
        """(path relative to the transformer, module) for every module inside the untouched transformer: what a
        peft config's target_modules are matched against."""
        prefix = self._transformer_prefix
        for path, module in self._modules_at.items():
            if path.startswith(prefix) and path != prefix.rstrip("."):
                yield path[len(prefix):], module

    def route_input(self, domain: str, module: nn.Module, fn: Fn) -> None:
        """Apply `fn` to `module`'s input (its first argument) on `domain`'s rows."""
        self._routes_for(module).add(domain, fn, on_input=True)

    def route_output(self, domain: str, module: nn.Module, fn: Fn) -> None:
        """Apply `fn` to `module`'s output (the first element of a tuple output) on `domain`'s rows."""
        self._routes_for(module).add(domain, fn, on_input=False)

    def keep(self, domain: str, weights: nn.Module | nn.Parameter) -> None:
        """Hold tensors `domain`'s routed functions use (frozen, moved with the backbone, dropped on remove)."""
        if domain not in self.adapters:
            self.adapters[domain] = nn.ModuleDict()
        if isinstance(weights, nn.Parameter):
            holder = nn.Module()
            holder.weight = weights
            weights = holder
        weights.requires_grad_(False)
        self.adapters[domain][str(len(self.adapters[domain]))] = weights.eval()

    def add_named_peft(self, domain: str, directory: Path) -> None:
        """`domain`'s peft adapter (files in `directory`) as a named adapter of the backbone's `PeftModel`,
        routed per row by peft's `adapter_names`. Only for peft types whose layers route rows (LoRA): one
        PeftModel holds one type. A weight file lacking some of the adapter's tensors is refused."""
        from peft import PeftConfig, PeftModel

        config = PeftConfig.from_pretrained(str(directory))
        if self._peft:
            kind = next(iter(self.backbone.model.peft_config.values())).peft_type
            if config.peft_type != kind:
                raise PackageError(f"{directory}: a {config.peft_type} adapter cannot join the {kind} named adapters of backbone '{self.identity.get('id')}'.")
        first = not self._peft
        plain = self.backbone.model
        try:
            if first:
                self.backbone.model = PeftModel.from_pretrained(plain, str(directory), adapter_name=domain)
            else:
                # low_cpu_mem_usage: the new layers are created empty and filled from the file (no init).
                self.backbone.model.load_adapter(str(directory), adapter_name=domain, low_cpu_mem_usage=True)
            check_peft_tensors(Path(directory) / PEFT_WEIGHTS, adapter_tensors(self.backbone.model, domain))
        except Exception:
            # peft injects its layers before it reads the weights: a failed load leaves them in the backbone,
            # where the next domain's adapter would be wrapped around them (and lose its weights). A load refused
            # after it succeeded (a missing tensor) has also put the PeftModel in the backbone's place.
            if first:
                self.backbone.model = _strip_peft(plain)
            elif domain in self.backbone.model.peft_config:
                self.backbone.model.delete_adapter(domain)
            raise
        self.backbone.model.requires_grad_(False)
        self.backbone.model.eval()
        self._peft.add(domain)
        self._active_peft = None

    def add_view(self, domain: str, method: "Method", directory: Path, state: Mapping[str, torch.Tensor]) -> None:
        """`domain` gets its own module tree over the backbone's frozen tensors; `method` loads onto it as onto
        a fresh backbone and `state` (its exported tensors, names relative to the backbone) is assigned.
        A tensor of `state` that is one of the shared frozen tensors is refused: it would change every domain."""
        view = structural_copy(self._pristine)
        shared = {id(t) for t in self._pristine.parameters()} | {id(t) for t in self._pristine.buffers()}
        method.load(view, directory, trainable=False)
        tensors = dict(view.named_parameters())
        tensors.update(dict(view.named_buffers()))
        for name, value in state.items():
            target = tensors.get(name)
            if target is None:
                raise PackageError(f"{directory}: tensor '{name}' of method '{method.name}' is not in backbone '{self.identity.get('id')}' after the method loaded.")
            if id(target) in shared:
                raise PackageError(
                    f"{directory}: method '{method.name}' exports the backbone's own tensor '{name}', which other domains "
                    "share; such a method must say so in own_backbone_reason() (its domain then gets its own backbone)."
                )
            if target.shape != value.shape:
                raise PackageError(f"{directory}: tensor '{name}' has shape {tuple(value.shape)}, backbone '{self.identity.get('id')}' expects {tuple(target.shape)}.")
        with torch.no_grad():
            for name, value in state.items():
                tensors[name].copy_(value)
        view.requires_grad_(False).eval()
        self.views[domain] = view

    def _routes_for(self, module: nn.Module) -> ModuleRoutes:
        routes = self._routes.get(id(module))
        if routes is None:
            path = next((p for p, m in self._modules_at.items() if m is module), "?")
            routes = self._routes[id(module)] = ModuleRoutes(module, self._route, path)
        return routes

    # -- adding and removing domains -------------------------------------------------------------------------
    def add(self, domain: str, method: "Method", directory: Path, state: Mapping[str, torch.Tensor]) -> None:
        """Attach `domain`'s adapter through its method's `share`: `directory` holds the method's own files,
        `state` its exported tensors (names relative to the backbone, as in crossrec_weights.safetensors)."""
        if domain in self.methods:
            raise PackageError(f"Domain '{domain}' already has an adapter on backbone '{self.identity.get('id')}'.")
        reason = method.own_backbone_reason()
        if reason is not None:
            raise PackageError(f"{directory}: domain '{domain}' ({method.name}) cannot share backbone '{self.identity.get('id')}': {reason}")
        try:
            method.share(self, domain, Path(directory), state)
        except Exception:
            self.remove(domain)
            raise
        self.methods[domain] = method

    def remove(self, domain: str) -> None:
        """Detach `domain`'s adapter (its other domains keep theirs)."""
        for routes in self._routes.values():
            routes.remove(domain)
        if domain in self.adapters:
            del self.adapters[domain]
        if domain in self.views:
            del self.views[domain]
        if domain in self._peft:
            self._peft.discard(domain)
            self._active_peft = None
            if self._peft:
                self.backbone.model.delete_adapter(domain)
            else:
                # The last one: the plain backbone again. An empty PeftModel left in place would be wrapped in a
                # second one by the next add_named_peft, whose weights then load under the wrong names (lost).
                self.backbone.model = _strip_peft(self.backbone.model.base_model.model)
        self.methods.pop(domain, None)

    # -- encoding --------------------------------------------------------------------------------------------
    def _peft_context(self, domains: Sequence[str], single: str | None):
        if not self._peft:
            return nullcontext()
        if single is not None and single in self._peft:
            if self._active_peft != single:  # peft's ordinary single-adapter path
                self.backbone.model.base_model.set_adapter(single, inference_mode=True)
                self._active_peft = single
            return nullcontext()
        names = [d if d in self._peft else BASE for d in domains]
        return self.backbone.model.base_model._enable_peft_forward_hooks(adapter_names=names)

    def _encode(self, module: nn.Module, rows: Mapping[str, torch.Tensor], kept: list[str], device: torch.device) -> torch.Tensor:
        """One pass of `module` over rows of the domains `kept` (row i of `kept[i]`)."""
        unique = list(dict.fromkeys(kept))
        route = self._route
        if len(unique) == 1:
            route.single, route.groups = unique[0], {}
        else:
            route.single = None
            route.groups = {d: torch.tensor([i for i, x in enumerate(kept) if x == d], device=device) for d in unique}
        try:
            with (self._peft_context(kept, route.single) if module is self.backbone else nullcontext()):
                return module(**rows)
        finally:
            route.single, route.groups = None, {}

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
        # One pass of the backbone for every domain routed inside it, one pass per view for domains with one.
        passes: dict[str, list[int]] = {}
        for i, d in enumerate(kept):
            passes.setdefault(d if d in self.views else "", []).append(i)
        if list(passes) == [""]:
            encoded = self._encode(self.backbone, rows, kept, some.device)
        else:
            encoded = None
            for key, positions in passes.items():
                index = torch.tensor(positions, device=some.device)
                part = self._encode(self.views[key] if key else self.backbone, {k: v[index] for k, v in rows.items()},
                                    [kept[i] for i in positions], some.device)
                if encoded is None:
                    encoded = part.new_zeros(len(kept), part.shape[-1])
                encoded.index_copy_(0, index, part)
        if everything:
            return encoded, present
        return out.to(encoded.dtype).index_copy(0, present.nonzero().squeeze(1), encoded), present
