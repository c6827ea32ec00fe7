"""The standard layout: a directory with an items table and an interactions table.

    items.{parquet,jsonl,csv}         item_id, the text fields the recipe reads (title, ...), other attributes
    interactions.{parquet,jsonl,csv}  user_id, item_id, optional timestamp (file order otherwise)
    users.{parquet,jsonl,csv}         optional: user_id and attributes (e.g. a risk profile), one row per user

Tables are read by tables.py into Arrow (Parquet memory-mapped through `datasets`; ids always as text).
Every problem is reported with the file, the row (line for JSONL/CSV) and the field; nothing is dropped
silently and the files are never modified.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import DataError
from .tables import FORMATS, find_table, read_table, where as _where  # noqa: F401  (re-exported)


@dataclass
class RecData:
    """A catalog and each user's interactions as item indices, oldest first."""

    items: "datasets.Dataset"  # noqa: F821
    item_ids: list[str]
    user_ids: list[str]
    sequences: list[np.ndarray]
    source: str
    items_path: Path
    # Each interaction's timestamp (seconds), aligned with `sequences`; None when the interactions table has
    # no timestamp column (histories are then in file order and only leave-one-out can split them).
    timestamps: list[np.ndarray] | None = None
    # Optional per-interaction numbers (INTERACTION_VALUES present in the table: "rating", "label"), aligned
    # with `sequences`; missing cells are NaN. Objectives such as `rating` and `ctr` read them.
    values: dict[str, list[np.ndarray]] = field(default_factory=dict)
    # The optional users table (user_id + attributes such as a risk profile), as in the directory; None without one.
    users: "datasets.Dataset | None" = None  # noqa: F821

    def columns(self, fields: Sequence[str]) -> dict[str, list]:
        return {f: self.items.data.column(f).to_pylist() for f in fields}

    def feature_context(self, on_bad_image: str = "error", allow_outside: bool = False) -> "FeatureContext":  # noqa: F821
        from ..backbones.base import FeatureContext

        return FeatureContext(
            item_ids=self.item_ids, root=Path(self.source), where=lambda row: _where(self.items_path, row), on_bad_image=on_bad_image,
            allow_outside=allow_outside,
        )

    @property
    def num_interactions(self) -> int:
        return int(sum(len(s) for s in self.sequences))

    def summary(self) -> dict:
        lengths = np.array([len(s) for s in self.sequences])
        return {
            "source": self.source,
            "items": len(self.item_ids),
            "users": len(self.user_ids),
            "interactions": self.num_interactions,
            "history_length": {"min": int(lengths.min()), "median": float(np.median(lengths)), "max": int(lengths.max())},
        }


def _and_more(count: int, what: str) -> str:
    return f" ({count} more {what})" if count > 0 else ""


def _require_columns(ds, path: Path, columns: Sequence[str], hint: str = "") -> None:
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise DataError(
            f"{path}: missing column{'s' if len(missing) > 1 else ''} {', '.join(repr(c) for c in missing)}. "
            f"Columns present: {', '.join(ds.column_names) or 'none'}.{hint}"
        )


def _id_column(ds, path: Path, column: str):
    """The ids of `column` as one Arrow string column (numbers become their text), never one Python object
    per row: interaction logs have tens of millions of rows. An empty id raises DataError."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = ds.data.column(column)
    if values.type != pa.string():  # numbers, large strings, dictionaries: one type for the lookups below
        try:
            values = pc.cast(values, pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise DataError(f"{path}, field '{column}': ids must be text or numbers, not {values.type}.") from None
    empty = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(values), ""), True)
    bad = np.flatnonzero(empty.to_numpy(zero_copy_only=False)) if pc.any(empty).as_py() else []
    if len(bad):
        raise DataError(f"{_where(path, int(bad[0]))}, field '{column}': empty value.{_and_more(len(bad) - 1, 'rows have one')}")
    return values


INTERACTION_VALUES = ("rating", "label")


def _numbers(ds, path: Path, column: str) -> np.ndarray:
    """A numeric interaction column as float64; empty cells become NaN, text that is not a number is an error."""
    import pandas as pd

    raw = ds.data.column(column).to_pandas()
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype="float64")
    bad = np.flatnonzero(np.isnan(values) & raw.notna().to_numpy() | np.isinf(values))
    if len(bad):
        raise DataError(
            f"{_where(path, int(bad[0]))}, field '{column}': {raw.iloc[int(bad[0])]!r} is not a finite number."
            f"{_and_more(len(bad) - 1, 'rows have one')}"
        )
    return values


def _timestamps(ds, path: Path) -> np.ndarray:
    """Seconds per interaction. Each value is read on its own (docs/data.md): numbers (int or float, also
    written as text) are seconds or positions, text that is not a number is ISO 8601; one file may mix them.
    An empty or unparsable value is named by its own line and value."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    column = ds.data.column("timestamp")
    if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):  # Parquet datetimes
        seconds = pc.cast(pc.cast(column, pa.timestamp("us", tz="UTC")), pa.int64()).to_numpy(zero_copy_only=False) / 1e6
        values = np.asarray(pc.is_null(column).to_numpy(zero_copy_only=False), dtype=bool)
        values = np.where(values, np.nan, seconds)
        raw = None
    else:
        raw = column.to_pandas()
        if pd.api.types.is_bool_dtype(raw) or not (pd.api.types.is_numeric_dtype(raw) or pd.api.types.is_object_dtype(raw) or pd.api.types.is_string_dtype(raw)):
            raise DataError(f"{path}, field 'timestamp': values of type {column.type} are not times; use numbers or ISO 8601 text.")
        if pd.api.types.is_numeric_dtype(raw):
            values = raw.to_numpy(dtype="float64")
        else:
            text = raw.astype("string").str.strip()
            values = pd.to_numeric(text, errors="coerce").to_numpy(dtype="float64")
            rest = np.flatnonzero(np.isnan(values) & text.notna().to_numpy() & (text != "").fillna(False).to_numpy())
            if len(rest):  # the values that are not numbers: ISO 8601 dates and times
                parsed = pd.to_datetime(text.iloc[rest], errors="coerce", utc=True, format="ISO8601")
                seconds = parsed.to_numpy(dtype="datetime64[ns]").astype("int64") / 1e9
                values[rest] = np.where(parsed.isna().to_numpy(), np.nan, seconds)
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        r = int(bad[0])
        value = None if raw is None else raw.iloc[r]
        if value is None or (isinstance(value, float) and np.isnan(value)) or (isinstance(value, str) and not value.strip()) or value is pd.NA:
            problem = "empty value (every interaction needs a time when the table has a timestamp column)"
        else:
            shown = value if isinstance(value, str) else (float(value) if isinstance(value, (float, np.floating)) else value)
            problem = f"cannot read {str(shown)!r} as a time (use seconds as a number, or ISO 8601 such as 2024-01-31T09:00:00Z)"
        raise DataError(f"{_where(path, r)}, field 'timestamp': {problem}.{_and_more(len(bad) - 1, 'rows have one')}")
    return values


def load_layout(directory: str | Path, fields: Sequence[str], *, min_interactions: int = 3) -> RecData:
    """Load and check a standard-layout directory; `fields` are the item columns the model reads (each
    backbone checks their values when it prepares its inputs)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    directory = Path(directory)
    if not directory.is_dir():
        what = "is a file, not a directory in the standard layout" if directory.exists() else "does not exist"
        raise DataError(f"Data directory '{directory}' {what}.")
    items_path = find_table(directory, "items")
    inter_path = find_table(directory, "interactions")

    items = read_table(items_path)
    _require_columns(
        items, items_path, ["item_id", *fields],
        f" The model reads the item fields {', '.join(fields)} (set model.modalities.<name>.fields to change them, or "
        "model.modalities.<name>=null to leave a modality out, e.g. model.modalities.image=null for data without images).",
    )
    item_column = _id_column(items, items_path, "item_id")
    item_ids = item_column.to_pylist()  # one per item: the catalog is what the model encodes
    if len(pc.unique(item_column)) != len(item_ids):
        index = pd.Index(item_ids)
        dup = np.flatnonzero(index.duplicated(keep=False))
        first = item_ids[dup[0]]
        rows = [int(r) for r in dup if item_ids[r] == first]
        raise DataError(
            f"{_where(items_path, rows[1])}, field 'item_id': duplicate item id '{first}' "
            f"(first at {_where(items_path, rows[0]).split(', ', 1)[1]}).{_and_more(len(dup) - len(rows), 'rows repeat other ids')}"
        )

    inter = read_table(inter_path)
    _require_columns(inter, inter_path, ["user_id", "item_id"])
    if inter.num_rows == 0:
        raise DataError(f"{inter_path}: no interactions.")
    # Interactions stay in Arrow: codes come from Arrow kernels, so no Python object is made per row.
    users = _id_column(inter, inter_path, "user_id")
    inter_items = _id_column(inter, inter_path, "item_id")
    found = pc.index_in(inter_items, value_set=item_column.combine_chunks())
    unknown = np.flatnonzero(pc.is_null(found).to_numpy(zero_copy_only=False)) if found.null_count else []
    if len(unknown):
        r = int(unknown[0])
        raise DataError(
            f"{_where(inter_path, r)}, field 'item_id': item '{inter_items[r].as_py()}' is not in {items_path.name}."
            f"{_and_more(len(unknown) - 1, 'rows name unknown items')}"
        )
    item_codes = found.to_numpy().astype(np.int64)
    has_time = "timestamp" in inter.column_names
    order_key = _timestamps(inter, inter_path) if has_time else np.arange(len(users), dtype="float64")
    encoded = pc.dictionary_encode(users)  # codes in order of first appearance; chunks share the dictionary
    user_codes = np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in encoded.chunks])
    # By user, then time; Arrow's sort is stable (rows of equal timestamp keep their file order) and about
    # twice as fast as numpy's lexsort or stable argsorts on tens of millions of rows.
    keys = pa.table({"user": user_codes, "time": order_key})
    order = pc.sort_indices(keys, sort_keys=[("user", "ascending"), ("time", "ascending")]).to_numpy()
    del keys
    sorted_users = user_codes[order]
    bounds = np.flatnonzero(np.diff(sorted_users)) + 1
    starts = np.concatenate([[0], bounds]).astype(np.int64)
    ends = np.append(bounds, len(order)).tolist()

    def per_user(values: np.ndarray) -> list[np.ndarray]:
        """Views of one array sorted by user and time, one per user (np.split is slow per piece)."""
        return [values[a:b] for a, b in zip(starts.tolist(), ends)]

    sequences = per_user(item_codes[order])
    timestamps = per_user(order_key[order]) if has_time else None
    values = {c: per_user(_numbers(inter, inter_path, c)[order]) for c in INTERACTION_VALUES if c in inter.column_names}
    user_ids = [str(u) for u in encoded.chunks[-1].dictionary.take(sorted_users[starts]).to_pylist()]

    short = np.flatnonzero(np.diff(np.append(starts, len(order))) < min_interactions)
    if len(short):
        u = user_ids[short[0]]
        first_row = int(np.flatnonzero(user_codes == sorted_users[starts[short[0]]])[0])
        raise DataError(
            f"{_where(inter_path, first_row)}, field 'user_id': user '{u}' has {len(sequences[short[0]])} "
            f"interaction(s); runs need at least {min_interactions} (data.min_interactions)."
            f"{_and_more(len(short) - 1, 'users are that short')} Remove such users or add their interactions."
        )
    return RecData(
        items=items, item_ids=item_ids, user_ids=user_ids, sequences=sequences, source=str(directory), items_path=items_path,
        timestamps=timestamps, users=load_users(directory), values=values,
    )


def load_users(directory: Path):
    """The directory's optional users table (users.parquet / .jsonl / .csv), checked: a user_id column with
    unique, non-empty ids. None when there is none."""
    if not any((directory / f"users{ext}").is_file() for ext in FORMATS):
        return None
    path = find_table(directory, "users")
    users = read_table(path)
    _require_columns(users, path, ["user_id"], " The users table describes each user once (see docs/data.md).")
    ids = _id_column(users, path, "user_id").to_pylist()
    seen: dict[str, int] = {}
    for row, uid in enumerate(ids):
        if uid in seen:
            raise DataError(
                f"{_where(path, row)}, field 'user_id': duplicate user id '{uid}' (first at {_where(path, seen[uid]).split(', ', 1)[1]})."
            )
        seen[uid] = row
    return users
