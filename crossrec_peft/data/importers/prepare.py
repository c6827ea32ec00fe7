"""Preparation steps shared by the importers and usable by runs: text normalisation, deduplication of
repeated (user, item, timestamp) rows and k-core filtering.

The array functions work on integer codes (one per distinct user / item, e.g. from `codes`) so they run on
millions of interactions without one Python object per row; the table functions wrap them for pyarrow
tables with `user_id`, `item_id` and `timestamp` columns.
"""

from __future__ import annotations

import html
import re
import unicodedata

import numpy as np

_SPACE = re.compile(r"\s+")
# C0/C1 control characters other than whitespace (which the whitespace rule handles).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]")


def normalize_text(text: str | None, *, unescape_html: bool = True, max_length: int | None = None) -> str:
    """HTML entities unescaped (`&amp;` -> `&`, repeatedly for double-escaped text), control characters
    removed, runs of whitespace (tabs, newlines, non-breaking spaces) made one space, ends stripped, and
    the result cut to `max_length` characters (at a word boundary when one is near). None becomes ""."""
    if text is None:
        return ""
    if unescape_html and "&" in text:
        for _ in range(3):  # "&amp;amp;" is common in scraped catalogs
            unescaped = html.unescape(text)
            if unescaped == text:
                break
            text = unescaped
    text = _CONTROL.sub("", text)
    text = _SPACE.sub(" ", text).strip()
    if max_length is not None and len(text) > max_length:
        cut = text[:max_length]
        space = cut.rfind(" ")
        if space >= max_length * 0.8:
            cut = cut[:space]
        text = cut.rstrip()
    return unicodedata.normalize("NFC", text)


def codes(values) -> np.ndarray:
    """Integer codes (0..n-1 in order of first appearance) for a pyarrow array / chunked array or a list."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not isinstance(values, (pa.Array, pa.ChunkedArray)):
        values = pa.array(values)
    if len(values) == 0:
        return np.zeros(0, dtype=np.int64)
    encoded = pc.dictionary_encode(values)
    if isinstance(encoded, pa.ChunkedArray):
        # dictionary_encode shares one dictionary across the chunks.
        return np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in encoded.chunks]).astype(np.int64)
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)


def duplicate_mask(users: np.ndarray, items: np.ndarray, timestamps: np.ndarray | None = None) -> np.ndarray:
    """True for every row that repeats an earlier row's (user, item, timestamp); the first stays False.
    Without timestamps, repeats of (user, item) are marked."""
    n = len(users)
    if n == 0:
        return np.zeros(0, dtype=bool)
    keys = [np.arange(n), items, users] if timestamps is None else [np.arange(n), np.asarray(timestamps), items, users]
    order = np.lexsort(keys)  # last key is primary; ties keep file order
    same = np.ones(n - 1, dtype=bool)
    for key in keys[1:]:
        k = np.asarray(key)[order]
        same &= k[1:] == k[:-1]
    dup = np.zeros(n, dtype=bool)
    dup[order[1:][same]] = True
    return dup


def kcore_mask(users: np.ndarray, items: np.ndarray, k: int, *, item_k: int | None = None) -> np.ndarray:
    """Rows to keep so that every remaining user has at least `k` interactions and every remaining item at
    least `item_k` (default `k`), iterating until nothing changes (removing an item can push a user below k
    and the reverse). Codes must be non-negative integers."""
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    item_k = k if item_k is None else item_k
    keep = np.ones(len(users), dtype=bool)
    if len(users) == 0 or (k <= 1 and item_k <= 1):
        return keep
    nu, ni = int(users.max()) + 1, int(items.max()) + 1
    while True:
        u_count = np.bincount(users[keep], minlength=nu)
        i_count = np.bincount(items[keep], minlength=ni)
        ok = keep & (u_count[users] >= k) & (i_count[items] >= item_k)
        if ok.sum() == keep.sum():
            return keep
        keep = ok


def deduplicate(table, *, user: str = "user_id", item: str = "item_id", timestamp: str | None = "timestamp"):
    """The table without rows repeating an earlier (user, item, timestamp)."""
    import pyarrow as pa

    ts = None
    if timestamp is not None and timestamp in table.column_names:
        ts = codes(table[timestamp])
    dup = duplicate_mask(codes(table[user]), codes(table[item]), ts)
    return table.filter(pa.array(~dup))


def k_core(table, k: int, *, item_k: int | None = None, user: str = "user_id", item: str = "item_id"):
    """The table's rows that survive k-core filtering (see `kcore_mask`)."""
    import pyarrow as pa

    return table.filter(pa.array(kcore_mask(codes(table[user]), codes(table[item]), k, item_k=item_k)))


def kcore_sequences(sequences: list[np.ndarray], k: int, *, item_k: int | None = None) -> list[np.ndarray]:
    """k-core on per-user item-index sequences (as in RecData): each user's sequence keeps its order;
    users left with nothing are removed (so the result may be shorter than the input)."""
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    users = np.repeat(np.arange(len(sequences)), lengths)
    items = np.concatenate(sequences) if len(sequences) else np.zeros(0, dtype=np.int64)
    keep = kcore_mask(users, items, k, item_k=item_k)
    bounds = np.cumsum(lengths)[:-1]
    kept = [seq[mask] for seq, mask in zip(sequences, np.split(keep, bounds))]
    return [s for s in kept if len(s)]
