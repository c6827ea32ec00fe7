"""The shared shape of every domain's demo generator: a latent-taste model and a `generate` skeleton.

A domain declares its catalog as a `DemoSpec`: the latent `Attribute`s of its items (what users have a taste
for, and the noise), a `describe` renderer that turns one item's attribute values into its text columns, an
optional `draw_image` renderer, and the shape of its histories. `generate(spec, ...)` does the rest the same
way for every domain, so the domains differ only in what they declare.

Items carry categorical attributes and a popularity. Each user draws a small preferred set per attribute;
the chance of picking an item is

    p(item | user) ∝ popularity^pop_exponent * exp(sum_a weight_a * [item's a in user's preferred set for a])

and, with probability `stickiness`, the next item is drawn from the previous item's `sticky_attribute` value
only (a sequential signal). An attribute with `drift` > 0 changes along the history: before each step, with
that probability, one of the user's preferred values is swapped for another, so recent items tell the
current taste better than old ones. Histories have no repeats. Attributes with weight 0 are pure noise: a
model that learns to ignore them wins. The renderers show the attributes as text and images, so what a model
can learn is exactly what those show.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np


@dataclass(frozen=True)
class Attribute:
    """One latent item attribute: `cardinality` values drawn uniformly per item."""

    name: str
    cardinality: int
    weight: float  # taste strength; 0 = noise
    preferred: int = 1  # values each user prefers
    drift: float = 0.0  # chance, before each history step, that one preferred value is replaced


@dataclass(frozen=True)
class HistoryShape:
    """How long histories are and how users move through the catalog (see the module docstring)."""

    min_length: int = 4
    mean_extra: float = 5.0
    max_length: int = 40
    pop_exponent: float = 0.5
    stickiness: float = 0.3
    sticky_attribute: str = "category"


@dataclass(frozen=True)
class DemoSpec:
    """A domain's demo catalog, declared.

    `describe(values, rng)` returns one item's columns (text and visible attributes) from its attribute
    values (`{name: index}`); it may draw noise from `rng`. `draw_image(path, values)` renders its picture
    (no randomness: the picture shows attributes only). `extras(rng, num_items)` returns item columns drawn
    after the histories, so adding such a noise column never changes the histories. `columns` is the items
    table's column order and must name exactly the columns produced (`item_id` and, with images, `image`
    included).
    """

    name: str
    stream: int  # the generator's random stream: numpy.random.default_rng([seed, stream])
    item_prefix: str
    user_prefix: str
    attributes: tuple[Attribute, ...]
    columns: tuple[str, ...]
    describe: Callable[[Mapping[str, int], np.random.Generator], dict[str, Any]]
    draw_image: Callable[[Path, Mapping[str, int]], None] | None = None
    extras: Callable[[np.random.Generator, int], dict[str, list]] | None = None
    history: HistoryShape = field(default_factory=HistoryShape)
    # Seconds between two interactions of a user: uniform in [low, high).
    gap_seconds: tuple[int, int] = (600, 86_400 * 3)


def generate(spec: DemoSpec, directory: Path, *, num_items: int, num_users: int, seed: int) -> None:
    """Write `spec`'s demo catalog in the standard layout (items, interactions, images/) to `directory`."""
    rng = np.random.default_rng([seed, spec.stream])
    attrs = {a.name: rng.integers(0, a.cardinality, size=num_items) for a in spec.attributes}
    popularity = rng.lognormal(0.0, 1.0, size=num_items)
    width = len(str(num_items))
    item_ids = [f"{spec.item_prefix}{i:0{width}d}" for i in range(num_items)]
    columns: dict[str, list] = {"item_id": item_ids}
    for i, item_id in enumerate(item_ids):
        values = {name: int(v[i]) for name, v in attrs.items()}
        for key, value in spec.describe(values, rng).items():
            columns.setdefault(key, []).append(value)
        if spec.draw_image is not None:
            spec.draw_image(directory / "images" / f"{item_id}.png", values)
    if spec.draw_image is not None:
        columns["image"] = [f"images/{i}.png" for i in item_ids]
    histories = sample_histories(rng, attrs, list(spec.attributes), popularity, num_users=num_users, shape=spec.history)
    if spec.extras is not None:
        columns.update(spec.extras(rng, num_items))
    if set(columns) != set(spec.columns):
        # A renderer and the declared schema disagree: a bug in the domain's spec, not in user data.
        raise ValueError(f"demo '{spec.name}': columns produced {sorted(columns)} != declared {sorted(spec.columns)}")
    items = {name: columns[name] for name in spec.columns}
    write_layout(directory, items, interactions_table(histories, item_ids, rng, spec.user_prefix, gap_seconds=spec.gap_seconds))


def _taste_logit(base: np.ndarray, item_attrs: dict[str, np.ndarray], attributes: list[Attribute], liked: dict[str, np.ndarray]) -> np.ndarray:
    logit = base.copy()
    for attr in attributes:
        if attr.weight:
            logit += attr.weight * np.isin(item_attrs[attr.name], liked[attr.name])
    return logit


def sample_histories(
    rng: np.random.Generator,
    item_attrs: dict[str, np.ndarray],
    attributes: list[Attribute],
    popularity: np.ndarray,
    *,
    num_users: int,
    shape: HistoryShape | None = None,
    **overrides: Any,
) -> list[np.ndarray]:
    """Each user's item indices, oldest first, under the latent-taste model. `overrides` set single
    `HistoryShape` fields (`stickiness=0.5`)."""
    shape = shape or HistoryShape()
    if overrides:
        shape = HistoryShape(**{**shape.__dict__, **overrides})
    num_items = len(popularity)
    base_logit = shape.pop_exponent * np.log(popularity)
    sticky = item_attrs[shape.sticky_attribute]
    by_value = {v: np.flatnonzero(sticky == v) for v in np.unique(sticky)}
    drifting = [a for a in attributes if a.weight and a.drift]
    histories = []
    for _ in range(num_users):
        liked = {a.name: rng.choice(a.cardinality, size=a.preferred, replace=False) for a in attributes if a.weight}
        logit = _taste_logit(base_logit, item_attrs, attributes, liked)
        length = min(shape.max_length, shape.min_length + rng.poisson(shape.mean_extra) + int(rng.geometric(0.15)) - 1, num_items)
        taken = np.zeros(num_items, dtype=bool)
        seq: list[int] = []
        for step in range(length):
            # Only attributes that drift draw here, so catalogs without drift keep their random stream.
            if step and drifting:
                changed = False
                for attr in drifting:
                    if rng.random() < attr.drift and attr.preferred < attr.cardinality:
                        others = np.setdiff1d(np.arange(attr.cardinality), liked[attr.name])
                        liked[attr.name][rng.integers(attr.preferred)] = rng.choice(others)
                        changed = True
                if changed:
                    logit = _taste_logit(base_logit, item_attrs, attributes, liked)
            pool = None
            if step and rng.random() < shape.stickiness:
                pool = by_value[sticky[seq[-1]]]
                pool = pool[~taken[pool]]
                if not len(pool):
                    pool = None
            if pool is None:
                pool = np.flatnonzero(~taken)
            w = np.exp(logit[pool] - logit[pool].max())
            item = int(pool[rng.choice(len(pool), p=w / w.sum())])
            taken[item] = True
            seq.append(item)
        histories.append(np.array(seq, dtype=np.int64))
    return histories


def write_layout(directory: Path, items: dict[str, list], interactions: dict[str, list]) -> None:
    """Write the standard layout as Parquet through `datasets`."""
    import datasets

    directory.mkdir(parents=True, exist_ok=True)
    datasets.disable_progress_bars()
    datasets.Dataset.from_dict(items).to_parquet(str(directory / "items.parquet"))
    datasets.Dataset.from_dict(interactions).to_parquet(str(directory / "interactions.parquet"))


def interactions_table(
    histories: list[np.ndarray],
    item_ids: list[str],
    rng: np.random.Generator,
    user_prefix: str,
    *,
    gap_seconds: tuple[int, int] = (600, 86_400 * 3),
) -> dict[str, list]:
    """The interactions table: users numbered in order, timestamps increasing along each history."""
    width = len(str(len(histories)))
    users, items, stamps = [], [], []
    start = 1_600_000_000
    low, high = gap_seconds
    for u, seq in enumerate(histories):
        t = start + int(rng.integers(0, 86_400 * 30))
        for item in seq:
            t += int(rng.integers(low, high))
            users.append(f"{user_prefix}{u:0{width}d}")
            items.append(item_ids[item])
            stamps.append(t)
    return {"user_id": users, "item_id": items, "timestamp": stamps}
