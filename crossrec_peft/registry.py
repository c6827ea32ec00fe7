"""One registry type for every pluggable kind of component.

A `Registry` maps a name to an `Entry` (a factory, the dataclass of its options and a one-line description).
Built-ins register themselves when their module is imported; third-party plugins are modules that a
distribution declares under the entry-point group ``crossrec_peft.plugins``; they are imported the first time
a lookup misses, so installing a plugin is enough to use it.

Names may carry an argument after a colon: ``hf:bert-base-uncased`` looks up the entry ``hf`` and hands it
the argument ``bert-base-uncased``.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from .errors import ConfigError, did_you_mean

ENTRY_POINT_GROUP = "crossrec_peft.plugins"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    name: str
    factory: Callable[..., Any]
    options: type | None = None  # a dataclass validating the entry's options in a config
    description: str = ""
    takes_argument: bool = False  # True for prefix entries such as "hf" in "hf:<model>"
    # For `ls`: a callable saying whether the component works on this machine now ("offline, bundled",
    # "not installed: pip install ..."); None: nothing to check.
    availability: Callable[[], str] | None = None


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(
        self,
        name: str,
        *,
        options: type | None = None,
        description: str = "",
        takes_argument: bool = False,
        availability: Callable[[], str] | None = None,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: ``@methods.register("lora", options=LoraOptions)``."""
        if options is not None and not dataclasses.is_dataclass(options):
            raise TypeError(f"options of {self.kind} '{name}' must be a dataclass")

        def decorate(factory: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._entries and self._entries[name].factory is not factory:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            summary = description or next(iter((factory.__doc__ or "").strip().splitlines()), "")
            self._entries[name] = Entry(name, factory, options, summary, takes_argument, availability)
            if isinstance(factory, type) and "registered_name" not in vars(factory):
                factory.registered_name = name  # for messages (a method names itself in errors)
            return factory

        return decorate

    def names(self) -> list[str]:
        load_plugins()
        return sorted(self._entries)

    def entries(self) -> Iterator[Entry]:
        for name in self.names():
            yield self._entries[name]

    def __contains__(self, name: str) -> bool:
        try:
            self.resolve(name)
        except ConfigError:
            return False
        return True

    def resolve(self, name: str) -> tuple[Entry, str | None]:
        """The entry for `name` and the argument after its colon (or None)."""
        for attempt in range(2):
            if name in self._entries and not self._entries[name].takes_argument:
                return self._entries[name], None
            prefix, sep, argument = name.partition(":")
            if sep and prefix in self._entries and self._entries[prefix].takes_argument:
                if not argument:
                    raise ConfigError(f"{self.kind} '{name}' needs an argument after the colon.")
                return self._entries[prefix], argument
            if attempt == 0 and not load_plugins():
                break
        known = sorted(self._entries)
        shown = [f"{n}:<arg>" if self._entries[n].takes_argument else n for n in known]
        raise ConfigError(
            f"Unknown {self.kind} '{name}'.{did_you_mean(name.partition(':')[0], known)} "
            f"Known {self.kind}s: {', '.join(shown)}. Run `crossrec-peft ls {self.kind}` for descriptions."
        )

    def get(self, name: str) -> Entry:
        return self.resolve(name)[0]


_loaded_plugins: set[str] = set()


def load_plugins() -> bool:
    """Import every plugin module not imported yet; True when at least one new module was imported."""
    new = False
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        key = f"{ep.name}={ep.value}"
        if key in _loaded_plugins:
            continue
        _loaded_plugins.add(key)
        try:
            ep.load()
        except Exception as exc:  # a broken plugin must not break the built-ins
            log.warning("crossrec-peft plugin %s (%s) failed to load: %s", ep.name, ep.value, exc)
            continue
        new = True
    return new


backbones = Registry("backbone")
methods = Registry("method")
fusions = Registry("fusion")
user_encoders = Registry("user_encoder")
objectives = Registry("objective")
domains = Registry("domain")

REGISTRIES: dict[str, Registry] = {
    r.kind: r for r in (backbones, methods, fusions, user_encoders, objectives, domains)
}
