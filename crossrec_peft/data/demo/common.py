"""The latent-taste model shared by every domain's demo generator.

Items carry categorical attributes (category, style, colour, ...) and a popularity. Each user draws a small
preferred set per attribute; the chance of picking an item is

    p(item | user) ∝ popularity^pop_exponent * exp(sum_a weight_a * [item's a in user's preferred set for a])

and, with probability `stickiness`, the next item is drawn from the previous item's category only (a
sequential signal). Histories have no repeats. Attributes with weight 0 are pure noise: a model that learns
to ignore them wins. The generators render the attributes as text (and, later, images), so what a model can
learn is exactly what the text shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Attribute:
    name: str
    cardinality: int
    weight: float  # taste strength; 0 = noise
    preferred: int = 1  # values each user prefers


def sample_histories(
    rng: np.random.Generator,
    item_attrs: dict[str, np.ndarray],
    attributes: list[Attribute],
    popularity: np.ndarray,
    *,
    num_users: int,
    min_length: int = 4,
    mean_extra: float = 5.0,
    max_length: int = 40,
    pop_exponent: float = 0.5,
    stickiness: float = 0.3,
    sticky_attribute: str = "category",
) -> list[np.ndarray]:
    num_items = len(popularity)
    base_logit = pop_exponent * np.log(popularity)
    by_value = {v: np.flatnonzero(item_attrs[sticky_attribute] == v) for v in np.unique(item_attrs[sticky_attribute])}
    histories = []
    for _ in range(num_users):
        logit = base_logit.copy()
        for attr in attributes:
            if attr.weight:
                liked = rng.choice(attr.cardinality, size=attr.preferred, replace=False)
                logit += attr.weight * np.isin(item_attrs[attr.name], liked)
        length = min(max_length, min_length + rng.poisson(mean_extra) + int(rng.geometric(0.15)) - 1, num_items)
        taken = np.zeros(num_items, dtype=bool)
        seq = []
        for step in range(length):
            pool = None
            if step and rng.random() < stickiness:
                pool = by_value[item_attrs[sticky_attribute][seq[-1]]]
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


def interactions_table(histories: list[np.ndarray], item_ids: list[str], rng: np.random.Generator, user_prefix: str) -> dict[str, list]:
    width = len(str(len(histories)))
    users, items, stamps = [], [], []
    start = 1_600_000_000
    for u, seq in enumerate(histories):
        t = start + int(rng.integers(0, 86_400 * 30))
        for item in seq:
            t += int(rng.integers(600, 86_400 * 3))
            users.append(f"{user_prefix}{u:0{width}d}")
            items.append(item_ids[item])
            stamps.append(t)
    return {"user_id": users, "item_id": items, "timestamp": stamps}
