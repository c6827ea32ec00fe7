"""Domains (registry kind `domain`): what a domain's items look like and how its demo catalog is generated."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

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
    # The metrics a report for this domain leads with (names as in the run report's metrics).
    metrics: tuple[str, ...] = ("ndcg@10", "recall@10")
    # The built-in recipe (recipes/<name>.yaml) that trains on this domain's demo catalog.
    recipe: str | None = None
    # Metrics beyond ranking that the run reports for every system: extra_metrics(data, split, ks, seed=)
    # returns (a callable scorer -> {name: value}, "") or (None, why it cannot run on this data).
    extra_metrics: Callable[..., tuple[Callable | None, str]] | None = None


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
        recipe="ecommerce",
    )


@domains.register("video")
def video(options: None = None, argument: str | None = None) -> Domain:
    """Videos with titles, genres, durations and cover images; demo tastes for genre (drifting), mood and cover palette."""
    from .demo import video as gen

    return Domain(
        name="video",
        description="Videos (films, episodes, clips) with titles, genres, descriptions and cover images",
        text_fields=("title", "genres"),
        generate=gen.generate,
        generator_version=1,
        metrics=("ndcg@10", "recall@10", "mrr@10"),
        recipe="video",
    )


@domains.register("finance")
def finance(options: None = None, argument: str | None = None) -> Domain:
    """Investment products (stocks, bonds, funds, ETFs) in FAR-Trans columns with factsheet images; demo tastes
    for risk (the customer's profile), sector, fees, asset category and the price trend; a suitability check."""
    from ..suitability import suitability_check
    from .demo import finance as gen

    return Domain(
        name="finance",
        description="Investment products (FAR-Trans layout) with descriptions, risk levels and factsheet images",
        text_fields=("description",),
        generate=gen.generate,
        generator_version=1,
        recipe="finance",
        extra_metrics=suitability_check,
    )


def get_domain(name: str) -> Domain:
    entry, argument = domains.resolve(name)
    return entry.factory(None, argument)


_DEMO_NAME = re.compile(r"(?P<domain>.+)-v(?P<version>\d+)-i(?P<num_items>\d+)-u(?P<num_users>\d+)-s(?P<seed>\d+)")


def demo_directory(domain: Domain, cache_dir: str | Path, *, num_items: int, num_users: int, seed: int) -> Path:
    return Path(cache_dir) / f"{domain.name}-v{domain.generator_version}-i{num_items}-u{num_users}-s{seed}"


def parse_demo_directory(path: str | Path) -> dict[str, Any] | None:
    """What demo_directory put in a name: domain, version, num_items, num_users and seed; None for other names."""
    match = _DEMO_NAME.fullmatch(Path(path).name)
    if match is None:
        return None
    return {k: (v if k == "domain" else int(v)) for k, v in match.groupdict().items()}
