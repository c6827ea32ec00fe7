"""Checking and describing a standard-layout directory: what `crossrec-peft data validate` and
`crossrec-peft data stats` print, usable from Python.

    from crossrec_peft.data.stats import validate_layout, layout_stats, plot_stats
    data = validate_layout("data/ml-small", fields=["title"])   # DataError naming file, row and field
    stats = layout_stats("data/ml-small")                         # counts, sparsity, lengths, image coverage
    plot_stats(stats, "ml-small.png")                              # histograms of history and text lengths

Everything is computed on Arrow columns and numpy arrays (one value per user or item, never one Python
object per interaction), so it runs on catalogs of millions of items.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import DataError
from .layout import RecData, _where, load_layout

# Columns of the items table that are not text even when stored as strings.
NOT_TEXT = ("item_id", "image")
# Quantiles reported for length distributions.
QUANTILES = {"p10": 0.1, "p25": 0.25, "median": 0.5, "p75": 0.75, "p90": 0.9, "p99": 0.99}


def text_fields(data: RecData) -> list[str]:
    """The items table's string columns other than item_id and image, in file order."""
    import pyarrow as pa

    schema = data.items.data.schema
    return [f.name for f in schema if f.name not in NOT_TEXT and (pa.types.is_string(f.type) or pa.types.is_large_string(f.type))]


def _lengths(column) -> tuple[np.ndarray, int]:
    """Characters per value (whitespace-trimmed; null = 0) and the number of empty values."""
    import pyarrow.compute as pc

    lengths = pc.fill_null(pc.utf8_length(pc.utf8_trim_whitespace(column)), 0).to_numpy(zero_copy_only=False)
    return lengths.astype(np.int64), int((lengths == 0).sum())


def distribution(values: np.ndarray) -> dict[str, float]:
    """min, quantiles, mean and max of a non-empty array."""
    values = np.asarray(values)
    if not len(values):
        return {}
    out: dict[str, float] = {"min": int(values.min())}
    # One call for all quantiles: each call partitions the whole array again.
    for name, value in zip(QUANTILES, np.quantile(values, list(QUANTILES.values()))):
        out[name] = float(value)
    out["mean"] = float(values.mean())
    out["max"] = int(values.max())
    return out


def image_paths(data: RecData) -> dict[str, Any]:
    """Which items have an image file that exists: `root` resolves relative paths (the data directory, as
    in runs); URLs are counted apart (runs read local files only)."""
    if "image" not in data.items.column_names:
        return {"column": False, "given": 0, "existing": 0, "urls": 0, "missing": 0, "coverage": 0.0, "first_missing": None}
    root = Path(data.source)
    values = data.items.data.column("image").to_pylist()  # one per item
    given = existing = urls = 0
    first_missing = None
    for row, value in enumerate(values):
        if value is None or not str(value).strip():
            continue
        given += 1
        text = str(value).strip()
        if "://" in text:
            urls += 1
            continue
        path = Path(text)
        if not path.is_absolute():
            path = root / path
        if os.path.isfile(path):
            existing += 1
        elif first_missing is None:
            first_missing = {"row": row, "where": _where(data.items_path, row), "path": str(path)}
    return {
        "column": True, "given": given, "existing": existing, "urls": urls, "missing": given - existing - urls,
        "coverage": existing / len(values) if len(values) else 0.0, "first_missing": first_missing,
    }


def validate_layout(
    directory: str | Path,
    *,
    fields: Sequence[str] | None = None,
    min_interactions: int = 3,
    images: bool = True,
    allow_outside_images: bool = False,
) -> RecData:
    """Load `directory` with every check of the loader (columns, empty or duplicate ids, unknown items,
    timestamps, users below `min_interactions`, the optional users table), then check that the text
    `fields` (default: `title` when the items have one) are never empty and (when `images`) every item's
    `image` as a run checks it: given, inside the data directory (unless `allow_outside_images`), a file
    that decodes, within the size limit. Raises DataError naming file, row and field; returns the data."""
    directory = Path(directory)
    wanted = list(fields) if fields is not None else None
    data = load_layout(directory, wanted or [], min_interactions=min_interactions)
    if wanted is None:
        wanted = ["title"] if "title" in data.items.column_names else []
    problems: list[str] = []
    for name in wanted:
        lengths, empty = _lengths(data.items.data.column(name))
        if empty:
            row = int(np.flatnonzero(lengths == 0)[0])
            more = f" ({empty - 1} more items have an empty {name})" if empty > 1 else ""
            problems.append(f"{_where(data.items_path, row)}, field '{name}': empty text (item '{data.item_ids[row]}').{more}")
    if images and "image" in data.items.column_names:
        # The run's own check (backbones/clip.py: check_images), so validate refuses what a run refuses.
        from ..backbones.clip import check_images

        context = data.feature_context("error", allow_outside_images)
        context.where = lambda row: f"{_where(data.items_path, row)}, field 'image'"
        context.bad_image_hint = (
            "Runs reading images stop on it unless data.on_bad_image=placeholder (or validate with --no-images)."
        )
        try:
            check_images(data.items.data.column("image").to_pylist(), context)
        except DataError as exc:
            problems.append(str(exc))
    if problems:
        raise DataError(" ".join(problems))
    return data


def layout_stats(directory: str | Path | RecData) -> dict[str, Any]:
    """Counts, sparsity, the history-length and item-popularity distributions, text length per text field,
    image coverage and the time span of a standard-layout directory (loaded without the minimum-history
    check, so that short users are counted rather than refused)."""
    data = directory if isinstance(directory, RecData) else load_layout(directory, [], min_interactions=1)
    n_items, n_users = len(data.item_ids), len(data.user_ids)
    lengths = np.fromiter((len(s) for s in data.sequences), dtype=np.int64, count=n_users)
    interactions = int(lengths.sum())
    flat = np.concatenate(data.sequences) if data.sequences else np.zeros(0, np.int64)
    popularity = np.bincount(flat, minlength=n_items)
    # Distinct (user, item) pairs by sorting one int64 key per interaction (numpy's hash-based np.unique is
    # several times slower on millions of distinct keys).
    keys = np.sort(np.repeat(np.arange(n_users, dtype=np.int64), lengths) * max(n_items, 1) + flat)
    distinct_pairs = int(1 + np.count_nonzero(np.diff(keys))) if interactions else 0
    del keys
    density = distinct_pairs / (n_items * n_users) if n_items and n_users else 0.0
    text = {}
    text_lengths = {}
    for name in text_fields(data):
        values, empty = _lengths(data.items.data.column(name))
        text[name] = {"empty": empty, "chars": distribution(values)}
        text_lengths[name] = values
    stats: dict[str, Any] = {
        "source": data.source,
        "items": n_items,
        "users": n_users,
        "interactions": interactions,
        "distinct_user_item_pairs": distinct_pairs,
        "density": density,
        "sparsity": 1.0 - density,
        "history_length": distribution(lengths),
        "users_below_3": int((lengths < 3).sum()),
        "item_interactions": distribution(popularity),
        "items_without_interactions": int((popularity == 0).sum()),
        "text": text,
        "image": {k: v for k, v in image_paths(data).items() if k != "first_missing"},
        "time": None,
    }
    if data.timestamps is not None:
        first = min(float(t[0]) for t in data.timestamps if len(t))
        last = max(float(t[-1]) for t in data.timestamps if len(t))
        stats["time"] = {"first": first, "last": last}
    # Arrays for plot_stats; not part of the JSON.
    stats["_arrays"] = {"history_length": lengths, "text_length": text_lengths}
    return stats


def public(stats: dict[str, Any]) -> dict[str, Any]:
    """The stats without the arrays kept for plotting (what `--json` prints)."""
    return {k: v for k, v in stats.items() if not k.startswith("_")}


def plot_stats(stats: dict[str, Any], path: str | Path) -> Path:
    """A PNG with the histogram of history lengths and, per text field, of text lengths (log counts)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers
    import matplotlib.pyplot as plt

    arrays = stats["_arrays"]
    texts = arrays["text_length"]
    panels = 1 + len(texts)
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.6), squeeze=False)
    lengths = arrays["history_length"]
    ax = axes[0][0]
    ax.hist(lengths, bins=_bins(lengths), color="#4c72b0")
    ax.set_yscale("log")
    ax.set_xlabel("interactions per user")
    ax.set_ylabel("users")
    ax.set_title(f"history length ({stats['users']:,} users)")
    for ax, (name, values) in zip(axes[0][1:], texts.items()):
        ax.hist(values, bins=_bins(values), color="#55a868")
        ax.set_yscale("log")
        ax.set_xlabel("characters")
        ax.set_ylabel("items")
        ax.set_title(f"{name} length ({stats['items']:,} items)")
    fig.suptitle(Path(stats["source"]).name or stats["source"])
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _bins(values: np.ndarray) -> np.ndarray:
    """Integer-aligned bins, at most 60 of them."""
    low, high = (int(values.min()), int(values.max())) if len(values) else (0, 1)
    step = max(1, int(np.ceil((high - low + 1) / 60)))
    return np.arange(low, high + step + 1, step) - 0.5


def format_stats(stats: dict[str, Any]) -> str:
    """The stats as the text `data stats` prints."""
    h = stats["history_length"]
    p = stats["item_interactions"]
    lines = [
        f"{stats['source']}",
        f"  items         {stats['items']:>12,}   ({stats['items_without_interactions']:,} without interactions)",
        f"  users         {stats['users']:>12,}   ({stats['users_below_3']:,} with fewer than 3 interactions)",
        f"  interactions  {stats['interactions']:>12,}   ({stats['distinct_user_item_pairs']:,} distinct user-item pairs)",
        f"  sparsity      {100 * stats['sparsity']:>11.4f}%   (density {stats['density']:.3g})",
        "  history length per user: " + _dist(h),
        "  interactions per item:   " + _dist(p),
    ]
    for name, t in stats["text"].items():
        lines.append(f"  text '{name}' (characters): " + _dist(t["chars"]) + (f"; {t['empty']:,} empty" if t["empty"] else ""))
    img = stats["image"]
    if img["column"]:
        lines.append(
            f"  images: {100 * img['coverage']:.1f}% of items have an existing file ({img['existing']:,}; "
            f"{img['missing']:,} missing, {img['urls']:,} URLs, {stats['items'] - img['given']:,} without one)"
        )
    else:
        lines.append("  images: no image column")
    if stats["time"]:
        from .split import iso_time

        lines.append(f"  timestamps: {iso_time(stats['time']['first'])} to {iso_time(stats['time']['last'])}")
    else:
        lines.append("  timestamps: none (histories in file order)")
    return "\n".join(lines)


def _dist(d: dict[str, float]) -> str:
    if not d:
        return "-"
    return f"min {d['min']:,}, median {d['median']:,.0f}, mean {d['mean']:,.1f}, p90 {d['p90']:,.0f}, p99 {d['p99']:,.0f}, max {d['max']:,}"
