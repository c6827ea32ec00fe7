"""Reading one table of the standard layout (items, interactions, users) into Arrow, with errors that name
the file, the 1-based line (CSV, JSONL) or row (Parquet) and what is wrong.

- Ids (`item_id`, `user_id`) are text: a CSV's `007` stays `007` (CSV columns are read with declared string
  types, never inferred as numbers); a JSON number id becomes its text (`7` -> "7").
- `timestamp` keeps each value as written (numbers, ISO strings, or both mixed in one file); layout.py
  parses them value by value.
- JSONL is parsed line by line with `json.loads` before anything becomes Arrow, so a bad line (not UTF-8,
  truncated, not an object, garbage) is named by its own line; pyarrow's JSON reader never sees garbage (it
  can crash on some) and no library log line contradicts the message.
- CSV goes through pyarrow's reader; when it refuses a file, the file is scanned with Python's csv module
  to name the first bad line (not UTF-8, more or fewer fields than the header). A quote that is never
  closed is looked for first: pyarrow would read the rest of the file into that one value without a word.
- Parquet is read with `datasets` (memory-mapped: the format for large data).
- An empty file (0 bytes, or a header without rows) is named as such.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import functools
import io
import json
import logging
import mmap
import re
from pathlib import Path
from typing import Any

from ..errors import DataError

FORMATS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}
# Columns read as text whatever they look like: ids must keep leading zeros and never become floats.
ID_COLUMNS = ("item_id", "user_id")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Kept as written (numbers and/or text); parsed value by value by layout._timestamps.
TIME_COLUMNS = ("timestamp",)


def where(path: Path, row: int) -> str:
    """Human location of a 0-based data row: the 1-based line of a JSONL or CSV file (after the header), or
    the 1-based row of a Parquet file."""
    kind = FORMATS.get(path.suffix, "parquet")
    if kind == "json":
        return f"{path}, line {row + 1}"
    if kind == "csv":
        return f"{path}, line {row + 2}"
    return f"{path}, row {row + 1}"


def find_table(directory: Path, stem: str) -> Path:
    """The one `stem` table of a directory (items, interactions, users), in any supported format."""
    candidates = [directory / f"{stem}{ext}" for ext in FORMATS]
    folders = [p for p in candidates if p.is_dir()]
    if folders:
        raise DataError(f"{folders[0]}: is a directory; the {stem} table must be a file (see docs/data.md).")
    found = [p for p in candidates if p.is_file()]
    if not found:
        raise DataError(
            f"{directory}: no {stem} table. Expected one of {', '.join(stem + e for e in FORMATS)} "
            f"(see docs/data.md for the standard layout)."
        )
    if len(found) > 1:
        raise DataError(f"{directory}: several {stem} tables ({', '.join(p.name for p in found)}): keep exactly one.")
    return found[0]


def read_table(path: Path):
    """The table at `path` as a `datasets.Dataset`; DataError naming file, line and problem otherwise."""
    path = Path(path)
    kind = FORMATS.get(path.suffix)
    if kind is None:
        raise DataError(f"{path}: unknown table format '{path.suffix}'; use {', '.join(FORMATS)}.")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a table file.")
    if not path.is_file():
        raise DataError(f"{path}: does not exist.")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty (0 bytes). A table needs {_needs(kind)}.")
    import datasets

    if kind == "parquet":
        _parquet_rows(path)
        with _quiet_datasets():
            try:
                return datasets.Dataset.from_parquet(str(path))
            except Exception as exc:  # truncated or corrupt file
                raise DataError(f"{path}: cannot be read as Parquet: {_first_line(exc)}") from None
    table = _read_jsonl(path) if kind == "json" else _read_csv(path)
    for number, name in enumerate(table.column_names, 1):
        if _CONTROL.search(name) or not name.strip():
            where_ = "line 1 (the header)" if kind == "csv" else "a key of its objects"
            raise DataError(f"{path}, {where_}: column {number} has the name {name!r}, which holds no text or a control character.")
    try:
        return datasets.Dataset(table)
    except Exception as exc:  # column names or types datasets cannot represent
        raise DataError(f"{path}: cannot be used as a table: {_first_line(exc)}") from None


def _parquet_rows(path: Path) -> None:
    """DataError when the Parquet file at `path` holds no rows (datasets cannot read one: "BatchSize must be
    greater than 0") or its footer cannot be read."""
    import pyarrow.parquet as pq

    try:
        rows = pq.read_metadata(str(path)).num_rows
    except Exception as exc:  # truncated or corrupt file
        raise DataError(f"{path}: cannot be read as Parquet: {_first_line(exc)}") from None
    if rows == 0:
        raise DataError(f"{path}: has no rows. A table needs {_needs('parquet')}.")


def _needs(kind: str) -> str:
    return {
        "csv": "a header line and one line per row",
        "json": "one JSON object per line",
        "parquet": "a Parquet file with at least one row",
    }[kind]


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


@contextlib.contextmanager
def _quiet_datasets():
    """datasets logs its own (0-based, or less precise) version of a read error before raising it; the
    DataError raised here is the one message the user sees."""
    logger = logging.getLogger("datasets")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


# -- JSONL -------------------------------------------------------------------------------------------------------


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def _as_text(value: Any) -> Any:
    """A number written as text the way JSON wrote it (7 -> "7", 1.5 -> "1.5"); text and null unchanged."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


def _read_jsonl(path: Path):
    import pyarrow as pa

    columns: dict[str, list] = {}
    first_kind: dict[str, tuple[str, int]] = {}  # column -> (kind of its first non-null value, line)
    kinds: dict[str, set[str]] = {}
    rows = 0
    blank_at = None
    with open(path, "rb") as fh:
        for no, raw in enumerate(fh, 1):
            if no == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{path}, line {no}: not UTF-8 (byte 0x{raw[exc.start]:02x} at character {exc.start + 1}); "
                    "save the file as UTF-8."
                ) from None
            if not text.strip():
                blank_at = blank_at or no
                continue
            if blank_at is not None:
                raise DataError(f"{path}, line {blank_at}: empty line; JSON Lines holds one object per line, without blank lines.")
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                truncated = "; the last line has no line end: is the file cut short?" if not raw.endswith(b"\n") else ""
                raise DataError(f"{path}, line {no}: cannot be read as JSON: {exc.msg} (character {exc.colno}){truncated}.") from None
            except RecursionError:
                # json's C parser gives up on arrays or objects nested about a thousand levels deep.
                raise DataError(
                    f"{path}, line {no}: cannot be read as JSON: nested too deeply (arrays or objects inside each other "
                    "hundreds of levels down)."
                ) from None
            if not isinstance(record, dict):
                raise DataError(
                    f"{path}, line {no}: holds a JSON {_kind(record)}, not an object; JSON Lines holds one object "
                    "({\"column\": value, ...}) per line."
                )
            for key, value in record.items():
                column = columns.get(key)
                if column is None:
                    column = columns[key] = [None] * rows
                column.append(value)
                kind = _kind(value)
                if kind != "null":
                    first_kind.setdefault(key, (kind, no))
                    kinds.setdefault(key, set()).add(kind)
            rows += 1
            for key, column in columns.items():
                if len(column) < rows:
                    column.append(None)
    if rows == 0:
        raise DataError(f"{path}: holds no rows (only blank lines). A table needs {_needs('json')}.")
    arrays = {}
    for key, values in columns.items():
        found = kinds.get(key, set())
        if key in ID_COLUMNS or (key in TIME_COLUMNS and found == {"number", "text"}) or found == {"number", "text"}:
            # Ids are text; a column mixing numbers and text (timestamps as in docs/data.md, "4" and 5) becomes text.
            bad = found - {"number", "text"}
            if bad:
                _raise_kind(path, key, values, next(iter(bad)), "text or numbers")
            arrays[key] = pa.array([_as_text(v) for v in values], pa.string())
            continue
        try:
            arrays[key] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
            kind, line = first_kind[key]
            other = next(k for k in sorted(found) if k != kind) if len(found) > 1 else None
            if other is None:  # arrays or objects whose members differ in type
                raise DataError(f"{path}, field '{key}': the values (first at line {line}) differ in structure; pyarrow cannot make one column of them.") from None
            _raise_kind(path, key, values, other, f"a {kind} as at line {line}")
    return pa.table(arrays)


def _raise_kind(path: Path, key: str, values: list, kind: str, wanted: str) -> None:
    row = next(i for i, v in enumerate(values) if _kind(v) == kind)
    raise DataError(f"{path}, line {row + 1}, field '{key}': a JSON {kind} ({json.dumps(values[row])[:60]}); expected {wanted}.")


# -- CSV ---------------------------------------------------------------------------------------------------------


def _read_csv(path: Path):
    import pyarrow as pa
    import pyarrow.csv as pacsv

    header = _csv_header(path)
    _check_quotes(path)
    text_columns = {c: pa.string() for c in header if c in ID_COLUMNS or c in TIME_COLUMNS}
    try:
        table = pacsv.read_csv(
            str(path),
            convert_options=pacsv.ConvertOptions(column_types=text_columns, strings_can_be_null=False),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, UnicodeDecodeError) as exc:
        _locate_csv_problem(path, header)
        raise DataError(f"{path}: cannot be read as CSV: {_first_line(exc)}") from None
    try:
        table.column_names
    except UnicodeDecodeError:
        # A quote left open in the header runs its last name on into the lines below (pyarrow reads quoted
        # fields across lines), and there into bytes that are not UTF-8: only the names' decoding notices.
        raise DataError(f"{path}, line 1 (the header): a quote opened there is not closed on that line, so a column name "
                        "runs on into the lines below (and into bytes that are not UTF-8); close the quote.") from None
    if any(pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type) for f in table.schema):
        _locate_csv_problem(path, header)  # pyarrow reads text that is not UTF-8 as bytes: name the line
    if table.num_rows == 0:
        raise DataError(f"{path}: has a header ({', '.join(header)}) but no rows.")
    # Text columns keep empty cells as "" (strings_can_be_null=False); an empty id is then reported as empty.
    return table


@functools.lru_cache(maxsize=None)
def _quoted_field(delimiter: str, binary: bool) -> re.Pattern:
    # A quote opens a value only at the start of a field (after the delimiter or a line break, or at the start
    # of the text), as for pyarrow and the csv module; elsewhere it is a plain character. The pattern starts
    # with the quote itself so that the regex engine skips to the next quote quickly. Inside, "" is a quote
    # character; group 1 is the closing quote, None when the text ends first.
    d = re.escape(delimiter)
    pattern = rf'"(?<![^{d}\r\n]")[^"]*(?:""[^"]*)*(")?'
    return re.compile(pattern.encode() if binary else pattern)


def unclosed_quote(text, delimiter: str = ",") -> int | None:
    """The offset in `text` (CSV: a str, or bytes / a memory map) of a quote that opens a value and is never
    closed, or None."""
    for match in _quoted_field(delimiter, not isinstance(text, str)).finditer(text):
        if match.group(1) is None:
            return match.start()
    return None


def _check_quotes(path: Path) -> None:
    """DataError at the line where a quote opens that the file never closes: pyarrow (like csv) reads
    everything after it, line breaks included, as that one value, so the rows below would silently vanish
    into a title (or fail later as an unknown item)."""
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if data.find(b'"') < 0:
            return
        at = unclosed_quote(data)
        if at is None:
            return
        line = data[:at].count(b"\n") + 1
    where = "line 1 (the header)" if line == 1 else f"line {line}"
    raise DataError(
        f"{path}, {where}: a quote opened on this line is never closed, so the rest of the file would be read as one "
        'value (not valid CSV: unexpected end of data). Close the quote; a quote inside a quoted value is written twice ("").'
    )


def _utf8(data: bytes, path: Path) -> str:
    """The text of `data` (the start of the file at `path`), a UTF-8 byte-order mark dropped; DataError naming
    the line of the first byte that is not UTF-8."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        where = "line 1 (the header)" if line == 1 else f"line {line}"
        raise DataError(f"{path}, {where}: not UTF-8 (byte 0x{data[exc.start]:02x}); save the file as UTF-8.") from None


def _csv_header(path: Path) -> list[str]:
    with open(path, "rb") as fh:
        text = _utf8(fh.readline(), path)
    # newline="": a lone "\r" ends the header as it does for pyarrow, rather than failing inside csv.
    try:
        names = next(csv.reader(io.StringIO(text, newline="")), [])
    except csv.Error as exc:
        raise DataError(f"{path}, line 1: the header is not valid CSV ({exc}).") from None
    if not any(n.strip() for n in names):
        raise DataError(f"{path}, line 1: the header line is empty; a CSV table starts with its column names.")
    empty = [i + 1 for i, n in enumerate(names) if not n.strip()]
    if empty:
        raise DataError(f"{path}, line 1: column {empty[0]} of the header has no name.")
    dup = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if dup is not None:
        raise DataError(f"{path}, line 1: column '{dup}' appears twice in the header.")
    return names


def _locate_csv_problem(path: Path, header: list[str]) -> None:
    """Scan the file with Python's csv module and raise DataError at its first bad line (encoding, number of
    fields); return when nothing is found (the caller then reports pyarrow's message)."""
    with open(path, "rb") as fh:
        text = _utf8(fh.read(), path)
    reader = csv.reader(io.StringIO(text, newline=""))
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # e.g. a field over csv's size limit
            raise DataError(f"{path}, line {reader.line_num}: not valid CSV ({exc}).") from None
        line = reader.line_num
        if line == 1 or not fields:
            continue
        if len(fields) != len(header):
            more = "more" if len(fields) > len(header) else "fewer"
            raise DataError(
                f"{path}, line {line}: {len(fields)} fields, {more} than the header's {len(header)} "
                f"({', '.join(header)}). Quote values that contain commas."
            )
