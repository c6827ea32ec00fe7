"""The standard layout: a directory with an items table and an interactions table.

    items.{parquet,jsonl,csv}         item_id, the text fields the recipe reads (title, ...), other attributes
    interactions.{parquet,jsonl,csv}  user_id, item_id, optional timestamp (file order otherwise)

Tables are read with `datasets` (Arrow, memory-mapped). Every problem is reported with the file, the row
(line for JSONL/CSV) and the field; nothing is dropped silently and the files are never modified.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import DataError

FORMATS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}


@dataclass
class RecData:
    """A catalog and each user's interactions as item indices, oldest first."""

    items: "datasets.Dataset"  # noqa: F821
    item_ids: list[str]
    user_ids: list[str]
    sequences: list[np.ndarray]
    source: str
    items_path: Path

    def columns(self, fields: Sequence[str]) -> dict[str, list]:
        return {f: self.items.data.column(f).to_pylist() for f in fields}

    def feature_context(self, on_bad_image: str = "error") -> "FeatureContext":  # noqa: F821
        from ..backbones.base import FeatureContext

        return FeatureContext(
            item_ids=self.item_ids, root=Path(self.source), where=lambda row: _where(self.items_path, row), on_bad_image=on_bad_image
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


def _where(path: Path, row: int) -> str:
    """Human location of a 0-based data row."""
    kind = FORMATS[path.suffix]
    if kind == "json":
        return f"{path}, line {row + 1}"
    if kind == "csv":
        return f"{path}, line {row + 2}"  # after the header
    return f"{path}, row {row + 1}"


def _and_more(count: int, what: str) -> str:
    return f" ({count} more {what})" if count > 0 else ""


def find_table(directory: Path, stem: str) -> Path:
    found = [directory / f"{stem}{ext}" for ext in FORMATS if (directory / f"{stem}{ext}").is_file()]
    if not found:
        raise DataError(
            f"{directory}: no {stem} table. Expected one of {', '.join(stem + e for e in FORMATS)} "
            f"(see docs/data.md for the standard layout)."
        )
    if len(found) > 1:
        raise DataError(f"{directory}: several {stem} tables ({', '.join(p.name for p in found)}): keep exactly one.")
    return found[0]


def read_table(path: Path):
    import datasets

    datasets.disable_progress_bars()
    try:
        kind = FORMATS[path.suffix]
        if kind == "parquet":
            return datasets.Dataset.from_parquet(str(path))
        if kind == "json":
            return datasets.Dataset.from_json(str(path))
        return datasets.Dataset.from_csv(str(path))
    except Exception as exc:
        detail = str(exc).strip().splitlines()
        raise DataError(f"{path}: cannot be read as {FORMATS[path.suffix].upper()}: {detail[0] if detail else type(exc).__name__}") from None


def _require_columns(ds, path: Path, columns: Sequence[str], hint: str = "") -> None:
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise DataError(
            f"{path}: missing column{'s' if len(missing) > 1 else ''} {', '.join(repr(c) for c in missing)}. "
            f"Columns present: {', '.join(ds.column_names) or 'none'}.{hint}"
        )


def _id_column(ds, path: Path, column: str) -> list[str]:
    values = ds.data.column(column).to_pylist()
    bad = [i for i, v in enumerate(values) if v is None or (isinstance(v, str) and not v.strip())]
    if bad:
        raise DataError(f"{_where(path, bad[0])}, field '{column}': empty value.{_and_more(len(bad) - 1, 'rows have one')}")
    return [str(v) for v in values]


def _timestamps(ds, path: Path) -> np.ndarray:
    import pandas as pd

    raw = ds.data.column("timestamp").to_pandas()
    if pd.api.types.is_numeric_dtype(raw):
        values = raw.to_numpy(dtype="float64")
    else:
        numbers = pd.to_numeric(raw, errors="coerce")
        if numbers.notna().all():  # numbers written as strings (CSV, JSON)
            values = numbers.to_numpy(dtype="float64")
        else:
            parsed = pd.to_datetime(raw, errors="coerce", utc=True, format="ISO8601")
            seconds = parsed.astype("int64").to_numpy() / 1e9
            values = np.where(parsed.isna().to_numpy(), np.nan, seconds)
    bad = np.flatnonzero(np.isnan(values))
    if len(bad):
        raise DataError(
            f"{_where(path, int(bad[0]))}, field 'timestamp': missing or unparsable value "
            f"{raw.iloc[int(bad[0])]!r} (use numbers or ISO 8601).{_and_more(len(bad) - 1, 'rows have one')}"
        )
    return values


def load_layout(directory: str | Path, fields: Sequence[str], *, min_interactions: int = 3) -> RecData:
    """Load and check a standard-layout directory; `fields` are the item columns the model reads (each
    backbone checks their values when it prepares its inputs)."""
    import pandas as pd

    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"Data directory '{directory}' does not exist.")
    items_path = find_table(directory, "items")
    inter_path = find_table(directory, "interactions")

    items = read_table(items_path)
    _require_columns(
        items, items_path, ["item_id", *fields],
        f" The model reads the item fields {', '.join(fields)} (set model.modalities.<name>.fields to change them).",
    )
    item_ids = _id_column(items, items_path, "item_id")
    index = pd.Index(item_ids)
    if not index.is_unique:
        dup = np.flatnonzero(index.duplicated(keep=False))
        first = item_ids[dup[0]]
        rows = [int(r) for r in dup if item_ids[r] == first]
        raise DataError(
            f"{_where(items_path, rows[1])}, field 'item_id': duplicate item id '{first}' "
            f"(first at {_where(items_path, rows[0]).split(', ', 1)[1]}).{_and_more(len(dup) - len(rows), 'rows repeat other ids')}"
        )

    inter = read_table(inter_path)
    _require_columns(inter, inter_path, ["user_id", "item_id"])
    users = _id_column(inter, inter_path, "user_id")
    inter_items = _id_column(inter, inter_path, "item_id")
    item_codes = index.get_indexer(inter_items)
    unknown = np.flatnonzero(item_codes < 0)
    if len(unknown):
        r = int(unknown[0])
        raise DataError(
            f"{_where(inter_path, r)}, field 'item_id': item '{inter_items[r]}' is not in {items_path.name}."
            f"{_and_more(len(unknown) - 1, 'rows name unknown items')}"
        )
    order_key = _timestamps(inter, inter_path) if "timestamp" in inter.column_names else np.arange(len(users), dtype="float64")
    user_codes, user_index = pd.factorize(pd.Series(users), sort=False)
    # Stable: rows of equal timestamp keep their file order.
    order = np.lexsort((np.arange(len(users)), order_key, user_codes))
    sorted_users = user_codes[order]
    bounds = np.flatnonzero(np.diff(sorted_users)) + 1
    sequences = np.split(item_codes[order].astype(np.int64), bounds)
    user_ids = [str(u) for u in user_index[sorted_users[np.concatenate([[0], bounds])]]] if len(order) else []

    short = [i for i, s in enumerate(sequences) if len(s) < min_interactions]
    if short:
        u = user_ids[short[0]]
        first_row = users.index(u)
        raise DataError(
            f"{_where(inter_path, first_row)}, field 'user_id': user '{u}' has {len(sequences[short[0]])} "
            f"interaction(s); leave-one-out evaluation needs at least {min_interactions}."
            f"{_and_more(len(short) - 1, 'users are that short')} Remove such users or add their interactions."
        )
    if not sequences:
        raise DataError(f"{inter_path}: no interactions.")
    return RecData(items=items, item_ids=item_ids, user_ids=user_ids, sequences=sequences, source=str(directory), items_path=items_path)
