"""Domains (registry kind `domain`): what a domain's items look like and how its demo catalog is generated."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..registry import domains


@dataclass(frozen=True)
class Domain:
    name: str
    description: str
    text_fields: tuple[str, ...]
    # generate(directory, num_items=..., num_users=..., seed=...) writes the standard layout.
    generate: Callable[..., None]
    # Bumped whenever the generator's output changes, so cached demo catalogs are rebuilt.
    generator_version: int = 1


@domains.register("ecommerce")
def ecommerce(options: None = None, argument: str | None = None) -> Domain:
    """Products with titles, descriptions, categories and images; demo tastes for category, style, colour and pattern."""
    from .demo import ecommerce as gen

    return Domain(
        name="ecommerce",
        description="Products with titles, descriptions and categories",
        text_fields=("title", "category"),
        generate=gen.generate,
        generator_version=2,
    )


def get_domain(name: str) -> Domain:
    entry, argument = domains.resolve(name)
    return entry.factory(None, argument)


def demo_directory(domain: Domain, cache_dir: str | Path, *, num_items: int, num_users: int, seed: int) -> Path:
    return Path(cache_dir) / f"{domain.name}-v{domain.generator_version}-i{num_items}-u{num_users}-s{seed}"
