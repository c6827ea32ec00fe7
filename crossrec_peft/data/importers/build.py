"""Assembling the output tables.

Items are gathered as pyarrow tables (columnar; catalogs are far smaller than interaction logs), checked
for duplicate ids and written once. Interactions are streamed chunk by chunk to a staging Parquet file in
the temporary output directory; at the end the id columns are read back as integer codes, deduplication and
k-core filtering compute a keep mask, and the staging file is copied batch by batch into
interactions.parquet. Internal columns start with an underscore (`_line`: the row's location in its
input, `_raw`: its raw text) and are never written.
"""

from __future__ import annotations

import json
from typing import Callable

import numpy as np

from ...errors import DataError
from .core import CHUNK_ROWS, ImportContext, SourceFile, describe_counts
from .prepare import codes, duplicate_mask, kcore_mask


def _public(table):
    return table.drop_columns([c for c in table.column_names if c.startswith("_")])


def _content_codes(table, columns: list[str]) -> np.ndarray:
    """One code per distinct combination of `columns`' values (nulls distinct from "")."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not columns:
        return np.zeros(table.num_rows, dtype=np.int64)
    parts = []
    for name in columns:
        col = table[name]
        try:
            as_text = pc.cast(col, pa.large_string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            texts = [json.dumps(v, sort_keys=True, default=str) for v in col.to_pylist()]
            as_text = pa.chunked_array([pa.array(texts, type=pa.large_string())])
        # "v" + value, so that a null ("\x00null") differs from every string.
        prefixed = pc.binary_join_element_wise(_large("v"), as_text, _large(""))
        parts.append(pc.fill_null(prefixed, "\x00null"))
    key = pc.binary_join_element_wise(*parts, _large("\x1f")) if len(parts) > 1 else parts[0]
    return codes(key)


def _large(text: str):
    import pyarrow as pa

    return pa.scalar(text, pa.large_string())


def _first_difference(a: dict, b: dict, columns: list[str]) -> str:
    for name in columns:
        if a.get(name) != b.get(name):
            return name
    return columns[0] if columns else "item_id"


class Builder:
    def __init__(self, ctx: ImportContext):
        self.ctx = ctx
        self._item_parts: list = []
        self.items = None  # pyarrow table after finish_items
        self._item_set = None
        self._writer = None
        self._schema = None
        self.staging = ctx.work / ".staging-interactions.parquet"
        self.staged = 0
        self.users = None  # optional pyarrow table with user_id

    # ------------------------------------------------------------------------------------------ items

    def add_items(self, table) -> None:
        if table.num_rows:
            self._item_parts.append(table)

    def finish_items(
        self,
        source: SourceFile,
        *,
        duplicates: str = "error",
        latest_by: str | None = None,
        count_identical: bool = True,
        labels: dict[str, str] | None = None,
    ) -> None:
        """Check ids across the whole items file and fix the catalog.

        duplicates="error": a repeated id with the same content is dropped (duplicate_item_identical), with
        different content it is a bad row (duplicate_item; the first definition is kept).
        duplicates="latest": the row with the greatest `latest_by` (then the last in the file) is kept and
        the others are counted as superseded (FAR-Trans assets are listed once per market and update).
        `labels` name the input columns behind output columns, for messages."""
        import pyarrow as pa

        problems = self.ctx.problems
        if not self._item_parts:
            problems.checkpoint()
            self._empty(source, "items")
        table = pa.concat_tables(self._item_parts, promote_options="permissive")
        self._item_parts = []
        ids = codes(table["item_id"])
        n = table.num_rows
        if duplicates == "latest":
            key = table[latest_by].to_numpy() if latest_by else np.zeros(n)
            keep = latest_rows(ids, key, table["_line"].to_numpy())
            self.ctx.report.drop(source.kind, "superseded", int(n - keep.sum()))
        else:
            content = [c for c in table.column_names if not c.startswith("_") and c != "item_id"]
            contents = _content_codes(table, content)
            _, first_rows = np.unique(ids, return_index=True)
            first_of = np.empty(int(ids.max()) + 1 if n else 0, dtype=np.int64)
            first_of[ids[first_rows]] = first_rows
            is_first = np.zeros(n, dtype=bool)
            is_first[first_rows] = True
            same = contents == contents[first_of[ids]]
            identical = ~is_first & same
            conflict = np.flatnonzero(~is_first & ~same)
            if count_identical:
                self.ctx.report.drop(source.kind, "duplicate_item_identical", int(identical.sum()))
            if len(conflict):
                firsts = first_of[ids[conflict]]
                rows = table.take(pa.array(conflict)).to_pylist()
                first_rows_ = table.take(pa.array(firsts)).to_pylist()
                for row, first in zip(rows, first_rows_):
                    name = _first_difference(row, first, content)
                    label = (labels or {}).get(name, name)
                    public = {k: v for k, v in row.items() if not k.startswith("_")}
                    raw = row.get("_raw") or json.dumps(public, ensure_ascii=False, default=str)
                    problems.add(
                        source, int(row["_line"]), label, "duplicate_item",
                        f"item '{row['item_id']}' is already defined at {source.unit} {int(first['_line'])} with a different "
                        f"{name} ({_short(first.get(name))} there, {_short(row.get(name))} here).",
                        raw,
                    )
            keep = is_first
        table = table.filter(pa.array(keep))
        table = table.sort_by("_line").drop_columns([c for c in ("_raw",) if c in table.column_names])
        problems.checkpoint()
        if table.num_rows == 0:
            self._empty(source, "items")
        self.items = table
        self._item_set = table["item_id"].combine_chunks()

    def known_items(self, ids) -> np.ndarray:
        """True where an id (list or pyarrow array) is in the catalog."""
        import pyarrow as pa
        import pyarrow.compute as pc

        arr = ids if isinstance(ids, (pa.Array, pa.ChunkedArray)) else pa.array(ids, type=pa.string())
        return pc.fill_null(pc.is_in(arr, value_set=self._item_set), False).to_numpy(zero_copy_only=False)

    def set_items(self, table) -> None:
        """Replace the catalog (e.g. after joining tags); must keep the same ids."""
        self.items = table

    # ------------------------------------------------------------------------------------ interactions

    def add_interactions(self, table) -> None:
        import pyarrow.parquet as pq

        if not table.num_rows:
            return
        if self._writer is None:
            self._schema = table.schema
            self._writer = pq.ParquetWriter(str(self.staging), self._schema)
        else:
            table = table.select(self._schema.names).cast(self._schema)
        self._writer.write_table(table, row_group_size=CHUNK_ROWS)
        self.staged += table.num_rows

    def finish(
        self,
        source: SourceFile,
        *,
        check: Callable | None = None,
    ) -> None:
        """Deduplicate, k-core, write items / interactions / users. `check(table, keep)` may reject staged
        rows after the fact (it gets user_id, item_id, timestamp, _line and the keep mask to update)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        ctx, report, opts = self.ctx, self.ctx.report, self.ctx.options
        if self._writer is not None:
            self._writer.close()
        ctx.problems.checkpoint()
        if not self.staged:
            self._empty(source, "interactions")
        staged = pq.read_table(self.staging, columns=["user_id", "item_id", "timestamp", "_line"])
        users, items = codes(staged["user_id"]), codes(staged["item_id"])
        keep = np.ones(staged.num_rows, dtype=bool)
        if check is not None:
            check(staged, users, keep)
            ctx.problems.checkpoint()
        if opts.dedup:
            idx = np.flatnonzero(keep)
            stamps = staged["timestamp"].to_numpy()
            dup = duplicate_mask(users[idx], items[idx], stamps[idx])
            keep[idx[dup]] = False
            report.drop(source.kind, "duplicate_interaction", int(dup.sum()))
        if opts.k_core > 1:
            idx = np.flatnonzero(keep)
            core = kcore_mask(users[idx], items[idx], opts.k_core)
            keep[idx[~core]] = False
            report.drop(source.kind, "k_core", int((~core).sum()))
        del staged
        if not keep.any():
            self._empty(source, "interactions")

        report.written = {"items": 0, "interactions": 0}
        # Interactions: the staging file copied through the keep mask, chunk by chunk.
        out_path = ctx.work / "interactions.parquet"
        pf = pq.ParquetFile(self.staging)
        start = 0
        with pq.ParquetWriter(str(out_path), _public(self._schema.empty_table()).schema) as writer:
            for rb in pf.iter_batches(batch_size=CHUNK_ROWS):
                mask = keep[start: start + rb.num_rows]
                start += rb.num_rows
                if mask.any():
                    writer.write_table(_public(pa.Table.from_batches([rb]).filter(pa.array(mask))))
        self.staging.unlink()
        report.written["interactions"] = int(keep.sum())
        kept_users = np.unique(users[keep])
        report.users = int(len(kept_users))

        # Items: after k-core, only items that kept an interaction.
        items_table = self.items
        if opts.k_core > 1:
            remaining = pq.read_table(out_path, columns=["item_id"])["item_id"]
            present = _isin(items_table["item_id"], remaining)
            report.drop("items", "k_core", int((~present).sum()))
            items_table = items_table.filter(pa.array(present))
        pq.write_table(_public(items_table), str(ctx.work / "items.parquet"))
        report.written["items"] = items_table.num_rows

        if self.users is not None:
            remaining = pq.read_table(out_path, columns=["user_id"])["user_id"]
            present = _isin(self.users["user_id"], remaining)
            report.drop("users", "no_interactions", int((~present).sum()))
            users_table = self.users.filter(pa.array(present))
            report.written["users"] = users_table.num_rows
            if users_table.num_rows:  # the users table is optional: none rather than one without rows
                pq.write_table(_public(users_table), str(ctx.work / "users.parquet"))

    # ---------------------------------------------------------------------------------------- helpers

    def _empty(self, source: SourceFile, what: str) -> None:
        report = self.ctx.report
        read = ", ".join(f"{n} from {f}" for f, n in report.read.items()) or "nothing"
        reasons = describe_counts(_counter(report.dropped.get(source.kind, {}))) or "none"
        raise DataError(
            f"{self.ctx.fmt}: nothing to import: no {what} left ({source.path}; rows read: {read}; "
            f"{source.kind} left out: {reasons})."
        )

    def close(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # already closed or failed half way: the temporary directory is removed
                pass


def latest_rows(ids: np.ndarray, key: np.ndarray, lines: np.ndarray) -> np.ndarray:
    """True for the one row per id with the greatest key (ties: the last line)."""
    n = len(ids)
    order = np.lexsort((lines, key, ids))
    last = np.ones(n, dtype=bool)
    last[:-1] = ids[order][1:] != ids[order][:-1]
    keep = np.zeros(n, dtype=bool)
    keep[order[last]] = True
    return keep


def _isin(values, value_set) -> np.ndarray:
    import pyarrow.compute as pc

    vs = value_set.combine_chunks() if hasattr(value_set, "combine_chunks") else value_set
    return pc.fill_null(pc.is_in(values, value_set=pc.unique(vs)), False).to_numpy(zero_copy_only=False)


def _counter(d: dict):
    from collections import Counter

    return Counter(d)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "...'"

