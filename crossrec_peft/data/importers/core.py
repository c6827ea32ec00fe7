"""What every importer shares: options, the report, bad-row bookkeeping (strict or skip) and row batches.

A file is read in chunks of `CHUNK_ROWS` rows. Each chunk is a `Batch`: the rows' locations (line numbers,
or row numbers for Parquet and Hugging Face tables), their raw content and one list per column. The parsers
below turn a column into typed values and reject the rows they cannot parse; every rejection goes through
`Problems`, which either remembers the first one and counts the rest (strict) or writes it to
`rejected.jsonl` (skip). Nothing is dropped without a reason in the report.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ...errors import DataError, did_you_mean
from .prepare import normalize_text

CHUNK_ROWS = 50_000
ON_ERROR = ("strict", "skip")

# Why a row was not written. Reasons of bad rows (written to rejected.jsonl in skip mode) ...
BAD_ROW_REASONS = {
    "bad_encoding": "bytes that are not valid in the file's encoding",
    "malformed_row": "a CSV row the csv module cannot parse (unbalanced quote, NUL byte)",
    "bad_json": "a JSONL line that is not a JSON object",
    "too_few_fields": "fewer fields than the format has",
    "too_many_fields": "more fields than the format has",
    "unexpected_header": "a header line in a file that has none",
    "empty_id": "an empty user or item id",
    "bad_id": "an id that is not of the format's kind (MovieLens ids are integers)",
    "empty_text": "an empty text field",
    "empty_sequence": "an amazon-seq user line without items",
    "bad_number": "a rating, value or count that is not a finite number",
    "bad_value": "a value outside the format's set (a transaction type, a genre flag)",
    "bad_timestamp": "a missing or unparsable timestamp",
    "duplicate_item": "an item id defined again with different content (the first definition is kept)",
    "duplicate_user": "an amazon-seq user on a second line (the first line is kept)",
    "unknown_item": "an interaction or tag naming an item that is not in the items file",
}
# ... and rows left out on purpose (counted in the report only).
FILTER_REASONS = {
    "duplicate_item_identical": "an item row repeating an earlier one exactly",
    "superseded": "an older row of a FAR-Trans asset or customer (the latest one is kept)",
    "below_min_rating": "a rating below options.min_rating",
    "sell": "a FAR-Trans Sell transaction (Buys are the interactions)",
    "duplicate_interaction": "a repeated (user, item, timestamp) row (options.dedup)",
    "duplicate_tag": "a MovieLens tag repeating one of the same movie (compared without case)",
    "k_core": "removed by k-core filtering (options.k_core)",
    "no_interactions": "a FAR-Trans customer without a written interaction",
}


# ---------------------------------------------------------------------------------------------- options


@dataclass
class CommonOptions:
    """Options every importer takes."""

    k_core: int = 0  # keep only users and items with at least k interactions (iterated); 0 = off
    dedup: bool = True  # drop repeated (user, item, timestamp) rows
    max_text_length: int | None = None  # cut text fields to this many characters (None = keep all)

    def check(self, fmt: str) -> None:
        """DataError for a value of the right type that the format cannot use (a format's options add theirs);
        called by parse_options, before any file is opened."""


def _accepts(value: Any, hint: Any) -> bool:
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is not None:
        hint = origin
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, (str, Path))
    if hint in (list, Sequence):
        return isinstance(value, (list, tuple))
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(h) for h in typing.get_args(hint))
    if hint is type(None):
        return "None"
    origin = typing.get_origin(hint) or hint
    return getattr(origin, "__name__", str(origin))


def _check_encoding(fmt: str, value: str) -> None:
    """DataError unless `value` names a codec that turns bytes into text (not 'rot13' or 'hex', which
    Python knows but only as transforms): found here, not as a LookupError once the first file is open."""
    import codecs

    try:
        codecs.lookup(value)
    except LookupError:
        raise DataError(
            f"Importer '{fmt}': option 'encoding' is {value!r}, which is not an encoding Python knows. "
            "Use a text encoding such as utf-8, latin-1 or cp1252."
        ) from None
    try:
        "a".encode(value).decode(value)
    except (LookupError, UnicodeError):
        raise DataError(
            f"Importer '{fmt}': option 'encoding' is {value!r}, which is not a text encoding (it does not turn a "
            "file's bytes into text). Use a text encoding such as utf-8, latin-1 or cp1252."
        ) from None


def parse_options(cls: type, options: dict | None, fmt: str):
    """An instance of the options dataclass `cls` from the user's dict; unknown keys, wrong types and values
    no format can use (NaN, an unknown encoding, what the class's `check` refuses) raise DataError naming the
    key, the closest known key and the expected type."""
    options = dict(options or {})
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    for key, value in options.items():
        if key not in hints:
            raise DataError(
                f"Importer '{fmt}': unknown option '{key}'.{did_you_mean(str(key), known)} "
                f"Known options: {', '.join(known)}."
            )
        if not _accepts(value, hints[key]):
            raise DataError(
                f"Importer '{fmt}': option '{key}' must be {_type_name(hints[key])}, not {type(value).__name__} ({value!r})."
            )
        # YAML reads .nan and .inf as numbers; no option means anything by them (min_rating=.nan kept every rating).
        if isinstance(value, float) and not np.isfinite(value):
            raise DataError(f"Importer '{fmt}': option '{key}' must be a finite number, not {value!r}.")
    parsed = cls(**options)
    if parsed.k_core < 0:
        raise DataError(f"Importer '{fmt}': option 'k_core' must be 0 (off) or a positive count, not {parsed.k_core}.")
    if parsed.max_text_length is not None and parsed.max_text_length < 1:
        raise DataError(f"Importer '{fmt}': option 'max_text_length' must be a positive number of characters.")
    encoding = getattr(parsed, "encoding", None)
    if encoding is not None:
        _check_encoding(fmt, str(encoding))
    parsed.check(fmt)
    return parsed


def options_dict(options) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(options).items()}


# ---------------------------------------------------------------------------------------------- report


@dataclass
class ImportReport:
    """What an import read, wrote and left out; saved as `import_report.json` beside the tables."""

    format: str
    source: str
    output: str
    on_error: str
    options: dict
    files: dict[str, str] = field(default_factory=dict)  # role (items, interactions, ...) -> input file
    read: dict[str, int] = field(default_factory=dict)  # input file -> data rows (lines) read
    written: dict[str, int] = field(default_factory=dict)  # output table -> rows
    dropped: dict[str, dict[str, int]] = field(default_factory=dict)  # kind -> reason -> records left out
    rejected: int = 0  # bad rows: entries in rejected.jsonl (skip) or problems found (strict)
    truncated_texts: int = 0  # text values cut to options.max_text_length
    users: int = 0  # distinct users in the written interactions
    notes: list[str] = field(default_factory=list)

    def drop(self, kind: str, reason: str, count: int = 1) -> None:
        if count:
            bucket = self.dropped.setdefault(kind, {})
            bucket[reason] = bucket.get(reason, 0) + int(count)

    def dropped_total(self, kind: str | None = None) -> int:
        kinds = [kind] if kind else list(self.dropped)
        return sum(sum(self.dropped.get(k, {}).values()) for k in kinds)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------- problems


@dataclass
class SourceFile:
    """One input: its path (or a name for a Hugging Face dataset), what its records are, how rows are counted."""

    path: Path | str
    kind: str  # items | interactions | users | tags: the report's bucket for dropped records
    unit: str = "line"  # "line" for text files, "row" for Parquet / Hugging Face tables

    @cached_property
    def name(self) -> str:
        return Path(self.path).name if isinstance(self.path, Path) else str(self.path)

    def at(self, where: int | None) -> str:
        return f"{self.path}, {self.unit} {where}" if where is not None else str(self.path)


def describe_counts(counter: Counter) -> str:
    return ", ".join(f"{reason}: {n}" for reason, n in counter.most_common())


_LINE_BREAKS = {"\u0085": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _jsonl(obj: dict) -> str:
    """One JSON Lines line: readable UTF-8, but the characters that some readers take for line breaks
    (NEL, LINE / PARAGRAPH SEPARATOR) escaped, so every reader sees one object per line."""
    text = json.dumps(obj, ensure_ascii=False, default=str)
    for char, escaped in _LINE_BREAKS.items():
        if char in text:
            text = text.replace(char, escaped)
    return text + "\n"


class Problems:
    """Bad rows. Strict: remember the first, count the rest, raise at the next checkpoint (the end of a
    file). Skip: write each to rejected.jsonl and count it by reason."""

    def __init__(self, on_error: str, report: ImportReport, rejected_path: Path | None):
        self.strict = on_error == "strict"
        self.report = report
        self.first: str | None = None
        self.first_where: int = 0
        self.first_reason = ""
        self.rest: Counter = Counter()
        self.rejected_path = rejected_path
        self._fh = None if self.strict else open(rejected_path, "w", encoding="utf-8")  # noqa: SIM115

    def add(
        self, source: SourceFile, where: int | None, field: str, reason: str, message: str, raw: Any = None, *, records: int = 1
    ) -> None:
        """One bad row (or `records` records of one bad row, e.g. an amazon-seq user line)."""
        full = f"{source.at(where)}, field '{field}': {message}"
        self.report.rejected += 1
        self.report.drop(source.kind, reason, records)
        if self.strict:
            # The earliest problem of the file is the one reported (some are found after the file was read).
            at = where or 0
            if self.first is None or at < self.first_where:
                if self.first is not None:
                    self.rest[self.first_reason] += 1
                self.first, self.first_where, self.first_reason = full, at, reason
            else:
                self.rest[reason] += 1
            return
        entry = {"file": str(source.path), "line": where, "field": field, "reason": reason, "message": full, "raw": raw}
        self._fh.write(_jsonl(entry))

    def checkpoint(self) -> None:
        if self.strict and self.first is not None:
            more = sum(self.rest.values())
            tail = f" ({more} more problem{'s' if more != 1 else ''}: {describe_counts(self.rest)})" if more else ""
            hint = " Fix the input, or import with on_error='skip' to drop bad rows (listed in rejected.jsonl)."
            raise DataError(self.first + tail + hint)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


# ---------------------------------------------------------------------------------------------- batches


def _raw_json(row: dict) -> str:
    return json.dumps(row, ensure_ascii=False, default=str)


class Batch:
    """A chunk of rows from one source: locations, raw content, and one list per column."""

    def __init__(
        self,
        ctx: "ImportContext",
        source: SourceFile,
        where: list[int],
        columns: dict[str, list],
        raws: list[str] | Callable[[int], Any] | None = None,
        arrow: Any = None,
    ):
        self.ctx = ctx
        self.source = source
        self.where = where
        self.columns = columns
        self._raws = raws
        self.arrow = arrow  # the pyarrow table of the chunk, for Parquet / Hugging Face sources
        self.keep = np.ones(len(where), dtype=bool)

    def __len__(self) -> int:
        return len(self.where)

    def raw(self, i: int) -> Any:
        if callable(self._raws):
            return self._raws(i)
        if self._raws is not None:
            return self._raws[i]
        return _raw_json({k: v[i] for k, v in self.columns.items()})

    def reject(self, i: int, field: str, reason: str, message: str, *, records: int = 1) -> None:
        if self.keep[i]:
            self.keep[i] = False
            self.ctx.problems.add(self.source, self.where[i], field, reason, message, self.raw(i), records=records)

    def drop(self, i: int, reason: str) -> None:
        """Leave a good row out on purpose (a filter), counted in the report."""
        if self.keep[i]:
            self.keep[i] = False
            self.ctx.report.drop(self.source.kind, reason)

    def kept(self) -> np.ndarray:
        return np.flatnonzero(self.keep)

    def column(self, name: str) -> list:
        return self.columns[name]


_INT_RE = re.compile(r"[+-]?\d+")


def _as_id(value: Any, integer: bool) -> tuple[str | None, str | None]:
    """(canonical id, None) or (None, reason)."""
    if type(value) is str:  # the common case first
        text = value.strip()
        if not text:
            return None, "empty_id"
        if not integer:
            return text, None
        if text.isascii() and text.isdigit():
            return (text if text[0] != "0" or len(text) == 1 else str(int(text))), None
        if not _INT_RE.fullmatch(text):
            return None, "bad_id"
        return str(int(text)), None
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None, "empty_id"
    if isinstance(value, bool) or isinstance(value, (list, dict, tuple, bytes)):
        return None, "bad_id"
    if isinstance(value, (int, np.integer)):
        return str(int(value)), None
    if isinstance(value, (float, np.floating)):
        if not np.isfinite(value):
            return None, "bad_id"
        return (str(int(value)), None) if float(value).is_integer() else ((None, "bad_id") if integer else (repr(float(value)), None))
    text = str(value).strip()
    if not text:
        return None, "empty_id"
    if integer:
        if not _INT_RE.fullmatch(text):
            return None, "bad_id"
        return str(int(text)), None
    return text, None


def parse_ids(batch: Batch, name: str, *, integer: bool = False, label: str | None = None) -> list[str | None]:
    """Ids as canonical strings (stripped; integers without leading zeros when `integer`)."""
    out: list[str | None] = []
    for i, value in enumerate(batch.columns[name]):
        if not batch.keep[i]:
            out.append(None)
            continue
        ident, reason = _as_id(value, integer)
        if reason:
            what = "empty id" if reason == "empty_id" else f"{value!r} is not {'an integer id' if integer else 'an id'}"
            batch.reject(i, label or name, reason, what + ".")
        out.append(ident)
    return out


def parse_texts(
    batch: Batch, name: str, *, required: bool = True, label: str | None = None, unescape_html: bool = True
) -> list[str | None]:
    """Normalised text (HTML entities, whitespace, control characters, options.max_text_length); an empty
    required value rejects the row, an empty optional one becomes ""."""
    limit = batch.ctx.options.max_text_length
    out: list[str | None] = []
    for i, value in enumerate(batch.columns[name]):
        if not batch.keep[i]:
            out.append(None)
            continue
        if value is None or (isinstance(value, float) and np.isnan(value)):
            value = ""
        elif not isinstance(value, str):
            value = json.dumps(value, ensure_ascii=False, default=str) if isinstance(value, (list, dict)) else str(value)
        text = normalize_text(value, unescape_html=unescape_html)
        if limit is not None and len(text) > limit:
            text = normalize_text(text, max_length=limit, unescape_html=False)
            batch.ctx.report.truncated_texts += 1
        if required and not text:
            batch.reject(i, label or name, "empty_text", "empty text" + (f" (raw value {value!r})." if value.strip() else "."))
        out.append(text)
    return out


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (str, int, float, np.integer, np.floating)):
        return np.nan
    if isinstance(value, str) and (not value.isascii() or "_" in value):  # as pandas: no "1_000", no non-ASCII digits
        return np.nan
    try:
        return float(value)
    except (ValueError, OverflowError):
        return np.nan


def _numbers(values: list) -> np.ndarray:
    """float64 per value (NaN where it is not a number), vectorised through pandas when possible."""
    import pandas as pd

    if all(type(v) is str for v in values):
        try:
            # A writable copy (pandas may hand out read-only views).
            numbers = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce")
            return np.array(numbers.to_numpy(dtype="float64", na_value=np.nan), dtype=np.float64)
        except (OverflowError, ValueError, TypeError):
            pass
    return np.array([_number(v) for v in values], dtype=np.float64)


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or (isinstance(value, float) and np.isnan(value))


def parse_floats(batch: Batch, name: str, *, required: bool = True, label: str | None = None) -> np.ndarray:
    """Finite float64 numbers; an empty optional value is NaN (written as null)."""
    values = batch.columns[name]
    numbers = _numbers(values)
    for i in np.flatnonzero(~np.isfinite(numbers) & batch.keep):
        if not required and _is_empty(values[i]):
            continue
        batch.reject(int(i), label or name, "bad_number", f"{values[i]!r} is not a finite number.")
    return numbers


def parse_integers(batch: Batch, name: str, *, label: str | None = None, reason: str = "bad_value") -> list[int | None]:
    """Integers (|n| < 2**53); an empty value is None (written as null)."""
    values = batch.columns[name]
    numbers = _numbers(values)
    ok = np.isfinite(numbers) & (np.abs(numbers) < 2**53)
    ok[ok] = numbers[ok] == np.round(numbers[ok])
    out: list[int | None] = [int(x) if good else None for x, good in zip(numbers, ok)]
    for i in np.flatnonzero(~ok & batch.keep):
        if not _is_empty(values[i]):
            batch.reject(int(i), label or name, reason, f"{values[i]!r} is not an integer.")
    return out


def _epoch_seconds(parsed) -> np.ndarray:
    """Float seconds since 1970 for a UTC datetime Series (NaT -> NaN), in the Series' own resolution: no
    nanosecond conversion, so dates outside 1677-2262 do not overflow."""
    naive = np.asarray(parsed.dt.tz_localize(None).to_numpy())
    unit, _ = np.datetime_data(naive.dtype)
    per_second = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[unit]
    out = naive.astype(np.int64).astype(np.float64) / per_second
    out[np.isnat(naive)] = np.nan
    return out


def parse_timestamps(batch: Batch, name: str, *, integer: bool = False, dates: bool = True, label: str | None = None) -> np.ndarray:
    """Seconds since the epoch: numbers as they are, ISO 8601 dates (when `dates`) converted. `integer`:
    int64, and a fractional number is rejected."""
    import pandas as pd

    values = batch.columns[name]
    seconds = _numbers(values)
    textual = np.flatnonzero(np.isnan(seconds) & batch.keep)
    if dates and len(textual):
        strings = pd.Series([values[i] if isinstance(values[i], str) else None for i in textual], dtype=object)
        parsed = pd.to_datetime(strings, errors="coerce", utc=True, format="ISO8601")
        seconds[textual] = _epoch_seconds(parsed)
    ok = np.isfinite(seconds) & (np.abs(seconds) < 2**53)
    if integer:
        ok[ok] = seconds[ok] == np.round(seconds[ok])
    for i in np.flatnonzero(~ok & batch.keep):
        kind = "an integer timestamp" if integer and not dates else "a timestamp (seconds or ISO 8601 date)"
        batch.reject(int(i), label or name, "bad_timestamp", f"{values[i]!r} is not {kind}.")
    seconds = np.where(ok, seconds, 0.0)
    return seconds.astype(np.int64) if integer else seconds


def batch_table(batch: Batch, columns: dict[str, Any], *, types: dict[str, Any] | None = None, line: bool = True, raw: bool = False):
    """A pyarrow table of the batch's kept rows: `columns` maps output names to lists / numpy arrays of
    len(batch) (or pyarrow arrays); `_line` holds each row's location."""
    import pyarrow as pa

    keep = batch.kept()
    types = types or {}
    arrays, names = [], []
    for name, values in columns.items():
        if isinstance(values, (pa.Array, pa.ChunkedArray)):
            arr = values.take(pa.array(keep, type=pa.int64()))
            if name in types:
                arr = arr.cast(types[name])
        elif isinstance(values, np.ndarray):
            arr = pa.array(values[keep], type=types.get(name), from_pandas=True)  # NaN -> null
        else:
            arr = pa.array([values[i] for i in keep], type=types.get(name, pa.string()))
        arrays.append(arr)
        names.append(name)
    if line:
        arrays.append(pa.array(np.asarray(batch.where, dtype=np.int64)[keep], type=pa.int64()))
        names.append("_line")
    if raw:
        arrays.append(pa.array([None if batch.raw(i) is None else str(batch.raw(i)) for i in keep], type=pa.string()))
        names.append("_raw")
    return pa.table(arrays, names=names)


# ---------------------------------------------------------------------------------------------- context


@dataclass
class ImportContext:
    """What an importer works with: the source, its options, the report, problems and the table builder."""

    fmt: str
    src: Path
    work: Path  # the temporary output directory
    options: Any
    report: ImportReport
    problems: Problems
    builder: Any = None
    out: Path | None = None  # the output directory the import replaces when it ends

    def path(self, name: str | Path, *, role: str, required: bool = True, hint: str = "") -> Path | None:
        """An input file of the source (relative names resolve against the source directory)."""
        path = Path(name).expanduser()
        if not path.is_absolute():
            path = self.src / path
        if not path.is_file():
            if not required:
                return None
            what = "is a directory, not a file" if path.is_dir() else "does not exist"
            raise DataError(f"{self.fmt}: the {role} file {path} {what}.{hint}")
        self.check_input(path, role)
        self.report.files[role] = str(path)
        return path

    def check_input(self, path: Path, role: str) -> None:
        """DataError for an input inside the output directory: the finished import replaces that directory,
        so the input would be deleted (inputs are only ever read)."""
        if self.out is None:
            return
        out, resolved = self.out.resolve(), Path(path).expanduser().resolve()
        if resolved == out or out in resolved.parents:
            raise DataError(
                f"{self.fmt}: the {role} file {path} is inside the output directory '{self.out}', which the import "
                f"replaces when it ends (the file would be deleted): write the import elsewhere."
            )

    def count_read(self, source: SourceFile, n: int = 1) -> None:
        self.report.read[source.name] = self.report.read.get(source.name, 0) + n


@dataclass(frozen=True)
class Importer:
    """One input format: `run(ctx)` reads the source and fills `ctx.builder`."""

    name: str
    run: Callable[[ImportContext], None]
    options: type = CommonOptions
    description: str = ""
    needs_source_dir: bool = True  # False for hf, whose source may be a dataset name
