"""generic: any items table + interactions table (CSV/TSV with a header, JSON Lines or Parquet) with a
column mapping from standard names to the file's column names.

    options = {
        "items": "catalog.csv",                 # relative to the source directory, or absolute
        "interactions": "orders.parquet",
        "columns": {"item_id": "sku", "user_id": "customer", "timestamp": "ordered_at", "title": "name"},
        "text_fields": ["title", "description"],  # default: ["title"] when there is one
    }

`columns` applies to both files; `items_columns` / `interactions_columns` override it per file. Items keep
every column of the items file (renamed by the mapping); the text fields are normalised and must not be
empty; `image` paths that are relative are made absolute against the items file's folder. Interactions
get user_id, item_id, timestamp (numbers or ISO 8601 dates, as float seconds; the row number when the
file has no timestamp column), and rating (float) / label (integer) when mapped or present.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ...errors import DataError
from .core import (
    Batch,
    CommonOptions,
    Importer,
    ImportContext,
    SourceFile,
    batch_table,
    parse_floats,
    parse_ids,
    parse_integers,
    parse_texts,
    parse_timestamps,
)
from .readers import read_table_file

INTERACTION_FIELDS = ("user_id", "item_id", "timestamp", "rating", "label")


@dataclass
class GenericOptions(CommonOptions):
    items: str = ""  # the items file (required)
    interactions: str = ""  # the interactions file (required)
    columns: dict = field(default_factory=dict)  # standard name -> column name in the files
    items_columns: dict | None = None  # overrides for the items file
    interactions_columns: dict | None = None  # overrides for the interactions file
    text_fields: list | None = None  # item text fields (standard names); default ["title"] when present
    delimiter: str | None = None  # CSV delimiter; default "," (TAB for .tsv)
    encoding: str = "utf-8"
    unescape_html: bool = True

    def check(self, fmt: str) -> None:
        # The csv module takes one character, and a quote or a line break would be read as CSV's own (the file
        # then fails on its header with a message about columns, not about this option).
        d = self.delimiter
        if d is not None and (len(d) != 1 or d in '"\r\n'):
            raise DataError(
                f"Importer '{fmt}': option 'delimiter' must be one character other than a quote or a line break, "
                f"not {d!r}. For TAB write -o 'delimiter=\"\\t\"' (YAML double quotes), or name the file .tsv."
            )


def check_mapping(fmt: str, name: str, mapping) -> dict[str, str]:
    if not isinstance(mapping, dict) or not all(isinstance(k, str) and isinstance(v, str) and v for k, v in mapping.items()):
        raise DataError(
            f"{fmt}: option '{name}' must map standard names to column names (strings), e.g. {{'item_id': 'sku'}}; "
            f"got {mapping!r}."
        )
    sources = list(mapping.values())
    dupes = sorted({s for s in sources if sources.count(s) > 1})
    if dupes:
        raise DataError(f"{fmt}: option '{name}' maps several names to the column(s) {', '.join(map(repr, dupes))}.")
    return dict(mapping)


def _renames(source: SourceFile, columns: list[str], mapping: dict[str, str]) -> dict[str, str]:
    """Output name -> input column, for every column of the file."""
    inverse = {v: k for k, v in mapping.items()}
    out: dict[str, str] = {}
    for col in columns:
        name = inverse.get(col, col)
        if not name.strip() or _CONTROL.search(name):
            raise DataError(
                f"{source.path}: column name {col!r} is empty or holds control characters; "
                f"rename it, or map it to a name with options={{'columns': {{'<name>': {col!r}}}}}."
            )
        if name in out:
            raise DataError(
                f"{source.path}: columns '{out[name]}' and '{col}' would both become '{name}' "
                f"(the mapping names '{mapping.get(name)}' for '{name}'): rename or map one of them."
            )
        out[name] = col
    return out


def _wanted(name: str, mapping: dict[str, str]) -> str:
    return f"'{name}' (mapped to '{mapping[name]}')" if name in mapping else f"'{name}'"


def _as_strings(values: list) -> list[str | None]:
    return [v if (v is None or isinstance(v, str)) else json.dumps(v, ensure_ascii=False, default=str) for v in values]


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _image_paths(batch: Batch, column: str, base: Path | None) -> list[str | None]:
    """Image paths (relative ones made absolute against `base`) or URLs; empty values become null."""
    out: list[str | None] = []
    for i, v in enumerate(batch.column(column)):
        if not batch.keep[i] or v is None or (isinstance(v, str) and not v.strip()):
            out.append(None)
            continue
        if not isinstance(v, str) or _CONTROL.search(v):
            batch.reject(i, column, "bad_value", f"{v!r} is not an image path or URL.")
            out.append(None)
            continue
        v = v.strip()
        if base is not None and "://" not in v and not Path(v).is_absolute():
            v = str((base / v).resolve())
        out.append(v)
    return out


def import_items(
    ctx: ImportContext,
    source: SourceFile,
    batches: Iterator[Batch],
    mapping: dict[str, str],
    text_fields: list[str] | None,
    *,
    image_base: Path | None,
    only: list[str] | None = None,
    count_identical: bool = True,
) -> None:
    """Items from batches: item_id, the text fields, image, and the other columns (or `only` those)."""
    b = ctx.builder
    unescape = getattr(ctx.options, "unescape_html", True)
    renames = None
    for batch in batches:
        if renames is None:
            renames = _renames(source, list(batch.columns), mapping)
            fields = text_fields if text_fields is not None else (["title"] if ("title" in renames or "title" in mapping) else [])
            # Every mapped item field must be there (interaction fields belong to the other file).
            mapped = [k for k in mapping if k not in INTERACTION_FIELDS and (only is None or k in (*fields, *only))]
            missing = [f for f in dict.fromkeys(["item_id", *fields, *mapped]) if f not in renames]
            if missing:
                raise DataError(
                    f"{source.path}: no column for {', '.join(_wanted(m, mapping) for m in missing)} "
                    f"(columns: {', '.join(batch.columns)}). Map it with options={{'columns': {{'{missing[0]}': '<column>'}}}}"
                    + (" or set text_fields." if missing[0] in fields else ".")
                )
            others = [n for n in renames if n not in ("item_id", *fields)]
            if only is not None:
                others = [n for n in others if n in only]
                absent = [n for n in only if n not in renames]
                if absent:
                    raise DataError(
                        f"{source.path}: item field(s) {', '.join(map(repr, absent))} not found "
                        f"(columns: {', '.join(batch.columns)})."
                    )
        cols: dict = {"item_id": parse_ids(batch, renames["item_id"], label=renames["item_id"])}
        for f in fields:
            cols[f] = parse_texts(batch, renames[f], label=renames[f], unescape_html=unescape)
        types: dict = {}
        for name in others:
            col = renames[name]
            if name == "image":
                cols[name] = _image_paths(batch, col, image_base)
            elif batch.arrow is not None:
                cols[name] = batch.arrow.column(col)
            else:
                cols[name] = _as_strings(batch.column(col))
        raw = batch.arrow is None
        b.add_items(batch_table(batch, cols, types=types, raw=raw))
    b.finish_items(source, count_identical=count_identical, labels=renames)  # raises when nothing was read


def import_interactions(
    ctx: ImportContext, source: SourceFile, batches: Iterator[Batch], mapping: dict[str, str], items_name: str
) -> None:
    import pyarrow as pa

    b = ctx.builder
    renames = None
    for batch in batches:
        if renames is None:
            renames = _renames(source, list(batch.columns), mapping)
            mapped = [k for k in mapping if k in INTERACTION_FIELDS]
            missing = [f for f in dict.fromkeys(["user_id", "item_id", *mapped]) if f not in renames]
            if missing:
                raise DataError(
                    f"{source.path}: no column for {', '.join(_wanted(m, mapping) for m in missing)} "
                    f"(columns: {', '.join(batch.columns)}). "
                    f"Map it with options={{'columns': {{'{missing[0]}': '<column>'}}}}."
                )
            present = [f for f in INTERACTION_FIELDS if f in renames]
        users = parse_ids(batch, renames["user_id"], label=renames["user_id"])
        items = parse_ids(batch, renames["item_id"], label=renames["item_id"])
        cols: dict = {"user_id": users, "item_id": items}
        types: dict = {"timestamp": pa.float64(), "rating": pa.float64(), "label": pa.int64()}
        if "timestamp" in present:
            cols["timestamp"] = parse_timestamps(batch, renames["timestamp"], label=renames["timestamp"])
        else:
            cols["timestamp"] = np.asarray(batch.where, dtype=np.float64)
        if "rating" in present:
            cols["rating"] = parse_floats(batch, renames["rating"], required=False, label=renames["rating"])
        if "label" in present:
            cols["label"] = parse_integers(batch, renames["label"], label=renames["label"])
        kept = batch.kept()
        known = b.known_items([items[i] for i in kept])
        for j in np.flatnonzero(~known):
            i = int(kept[j])
            batch.reject(i, renames["item_id"], "unknown_item", f"item '{items[i]}' is not in {items_name}.")
        b.add_interactions(batch_table(batch, cols, types=types))
    b.finish(source)


def run(ctx: ImportContext) -> None:
    opts: GenericOptions = ctx.options
    for key in ("items", "interactions"):
        if not getattr(opts, key):
            raise DataError(f"generic: option '{key}' is required (the {key} file, relative to {ctx.src} or absolute).")
    base = check_mapping(ctx.fmt, "columns", opts.columns)
    item_map = {**base, **check_mapping(ctx.fmt, "items_columns", opts.items_columns or {})}
    inter_map = {**base, **check_mapping(ctx.fmt, "interactions_columns", opts.interactions_columns or {})}
    if opts.text_fields is not None and not all(isinstance(f, str) for f in opts.text_fields):
        raise DataError(f"generic: option 'text_fields' must be a list of field names, got {opts.text_fields!r}.")
    items_path = ctx.path(opts.items, role="items")
    inter_path = ctx.path(opts.interactions, role="interactions")
    items_src, inter_src = SourceFile(items_path, "items"), SourceFile(inter_path, "interactions")
    if items_src.path.suffix.lower() == ".parquet":
        items_src.unit = "row"
    if inter_src.path.suffix.lower() == ".parquet":
        inter_src.unit = "row"

    required_items = [item_map.get("item_id", "item_id")]
    hint = " Map standard names to the file's columns with options={'columns': {'item_id': '<column>', ...}}."
    read = {"delimiter": opts.delimiter, "encoding": opts.encoding, "fmt_hint": hint}
    batches = read_table_file(ctx, items_src, items_path, required=required_items, **read)
    import_items(ctx, items_src, batches, item_map, opts.text_fields, image_base=items_path.parent)
    required_inter = [inter_map.get("user_id", "user_id"), inter_map.get("item_id", "item_id")]
    batches = read_table_file(ctx, inter_src, inter_path, required=required_inter, **read)
    import_interactions(ctx, inter_src, batches, inter_map, items_path.name)


IMPORTER = Importer(
    name="generic",
    run=run,
    options=GenericOptions,
    description="any items + interactions tables (CSV/TSV, JSONL, Parquet) with a column mapping",
)
