"""Chunked readers: delimited text (with or without a header, quoted CSV or plain splitting), JSONL and
Parquet. Each yields `Batch`es of at most CHUNK_ROWS rows; rows that cannot even be split into the right
fields are rejected here, with their line number, the field where they go wrong and their raw text.

Problems with a whole file (missing, empty, no header where one is needed, the wrong delimiter in the
header) raise DataError at once, whatever on_error says: there are no rows to skip to.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from pathlib import Path
from typing import Iterator, Sequence

from ...errors import DataError
from ..tables import unclosed_quote
from .core import CHUNK_ROWS, Batch, ImportContext, SourceFile

DELIMITER_NAMES = {"\t": "TAB", ",": "comma", ";": "semicolon", "|": "pipe", "::": "'::'"}
CANDIDATES = ("\t", ",", ";", "|", "::")
# Words that make a first line look like a header (compared without case, spaces or punctuation).
HEADER_WORDS = {
    "itemid", "item", "items", "title", "titles", "userid", "user", "users", "movieid", "movie", "rating",
    "ratings", "timestamp", "time", "date", "genres", "genre", "sequence", "history", "name", "asin", "productid",
    "customerid", "isin", "tag", "text", "description", "label", "id",
}


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _canon(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def looks_like_header(fields: Sequence[str], expected: Sequence[str] = ()) -> bool:
    """True when the first field and at least half of all fields read like column names."""
    words = HEADER_WORDS | {_canon(e) for e in expected}
    hits = sum(1 for f in fields if _canon(f) in words)
    return bool(fields) and _canon(fields[0]) in words and hits * 2 >= len(fields)


def delimiter_hint(text: str, delimiter: str) -> str:
    """' (... wrong delimiter?)' when a line holds none of `delimiter` but another common one."""
    if delimiter in text:
        return ""
    for cand in CANDIDATES:
        if cand != delimiter and cand in text:
            return (
                f" The line holds no {DELIMITER_NAMES.get(delimiter, repr(delimiter))} but does hold "
                f"{DELIMITER_NAMES[cand]}s: wrong delimiter?"
            )
    return ""


def _field_at(raw: bytes, offset: int, delimiter: str, names: Sequence[str]) -> str:
    index = raw[:offset].count(delimiter.encode())
    return names[index] if index < len(names) else names[-1] if names else "?"


def iter_lines(
    ctx: ImportContext, source: SourceFile, path: Path, encoding: str, *, delimiter: str, names: list[str], fatal_line: int = 0
) -> Iterator[tuple[int, str]]:
    """(line number, text without its line ending) for each line of a file read as bytes; a line that does
    not decode is reported (bad_encoding) and left out; line `fatal_line` (a header) raises instead."""
    utf8 = codecs.lookup(encoding).name == "utf-8"
    with open(path, "rb") as fh:
        for no, raw in enumerate(fh, 1):
            if raw.endswith(b"\n"):
                raw = raw[:-1]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            if no == 1 and utf8 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            try:
                text = raw.decode(encoding)
            except UnicodeDecodeError as exc:
                bad = raw[exc.start: exc.end]
                message = (
                    f"byte{'s' if len(bad) > 1 else ''} {bad!r} at column {exc.start + 1} {'are' if len(bad) > 1 else 'is'} "
                    f"not valid {encoding}. Save the file as {encoding}, or pass options={{'encoding': ...}} "
                    f"if it uses another encoding."
                )
                if no == fatal_line:
                    raise DataError(f"{source.at(no)} (the header): {message}") from None
                ctx.count_read(source)
                ctx.problems.add(
                    source, no, _field_at(raw, exc.start, delimiter, names), "bad_encoding", message,
                    raw.decode(encoding, errors="backslashreplace"),
                )
                continue
            yield no, text


class _Feed:
    """Lines for csv.reader that remembers where each row started and its raw text."""

    def __init__(self, lines: Iterator[tuple[int, str]]):
        self.lines = lines
        self.first: int | None = None
        self.buf: list[str] = []
        self.numbers: list[int] = []  # the line number of each line in buf (undecodable lines are left out)

    def __iter__(self):
        return self

    def __next__(self) -> str:
        no, text = next(self.lines)
        if self.first is None:
            self.first = no
        self.buf.append(text)
        self.numbers.append(no)
        return text + "\n"

    def take(self) -> tuple[int, str]:
        first, raw = self.first, "\n".join(self.buf)
        self.first, self.buf, self.numbers = None, [], []
        return first or 0, raw


def _rows(lines: Iterator[tuple[int, str]], delimiter: str, quoting: bool, on_malformed) -> Iterator[tuple[int, str, list[str]]]:
    """(first line, raw text, fields) per row."""
    if not quoting:
        for no, text in lines:
            yield no, text, text.split(delimiter)
        return
    feed = _Feed(lines)
    reader = csv.reader(feed, delimiter=delimiter, strict=True)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            numbers = feed.numbers
            no, raw = feed.take()
            on_malformed(no, raw, str(exc), numbers)
            continue
        no, raw = feed.take()
        yield no, raw, row


def _open_quote(raw: str, why: str, delimiter: str) -> int | None:
    """Where in a row's text a quoted value opens that the reader never saw closed, when csv stopped inside
    it: at the end of the file, or at its field size limit (a big file). From there on the lines cannot be
    told apart from the value's text, so every later row is in doubt. None for other errors."""
    if why != "unexpected end of data" and not why.startswith("field larger than field limit"):
        return None
    return unclosed_quote(raw, delimiter)


def _blank(fields: list[str]) -> bool:
    return not fields or (len(fields) == 1 and not fields[0].strip())


def read_delimited(
    ctx: ImportContext,
    source: SourceFile,
    path: Path,
    *,
    delimiter: str,
    names: Sequence[str],
    header: bool,
    quoting: bool = False,
    encoding: str = "utf-8",
    fmt_hint: str = "",
    chunk_rows: int = CHUNK_ROWS,
) -> Iterator[Batch]:
    """Batches of a delimited text file.

    header=True: the first line names the columns and must hold every name in `names` (other columns
    are kept); header=False: the columns are `names`, in order, and a first line that reads like a header
    is rejected (unexpected_header). Every row must have exactly as many fields as there are columns."""
    delim_name = DELIMITER_NAMES.get(delimiter, repr(delimiter))
    columns: list[str] = [] if header else list(names)
    fatal = 1 if header else 0
    lines = iter_lines(ctx, source, path, encoding, delimiter=delimiter, names=columns, fatal_line=fatal)

    def malformed(no: int, raw: str, why: str, numbers: list[int]) -> None:
        at = _open_quote(raw, why, delimiter)
        if at is not None:
            # The whole rest of the file hangs on this quote, so it stops the import in skip mode too: skipping
            # it as one bad row would silently drop every row after it.
            line = numbers[raw.count("\n", 0, at)] if numbers else no
            try:  # the fields before the quote: the text up to it is valid CSV (no quote is open there)
                before = list(csv.reader(io.StringIO(raw[:at], newline=""), delimiter=delimiter))
            except csv.Error:  # an earlier value past the field size limit
                before = []
            index = len(before[-1]) - 1 if before else 0
            # The row is named by its first field, as for any malformed row; the text names the quoted one.
            where = f"{source.at(line)} (the header)" if header and not columns else f"{source.at(line)}, field '{columns[0]}'"
            opens = f", at the start of '{columns[min(index, len(columns) - 1)]}'," if columns else ""
            runs_on = (
                "is never closed, so the rest of the file would be read as one value"
                if why == "unexpected end of data"
                else "is not closed within the csv module's field size limit, so the lines after it cannot be told from its text"
            )
            raise DataError(
                f"{where}: not valid CSV ({why}): a quote opened on this line{opens} {runs_on}, and no row after it can "
                'be trusted. Close the quote; a quote inside a quoted value is written twice ("").'
            )
        ctx.count_read(source)
        if header and not columns:
            raise DataError(f"{source.at(no)} (the header): not valid CSV ({why}).")
        ctx.problems.add(source, no, columns[0] if columns else "?", "malformed_row", f"not valid CSV ({why}).", raw)

    rows = _rows(lines, delimiter, quoting, malformed)
    if header:
        for no, raw, fields in rows:
            if _blank(fields):
                continue
            fields = [f.strip() for f in fields]
            wanted = ", ".join(names)
            if len(fields) == 1 and len(names) > 1:
                hint = delimiter_hint(raw, delimiter)
                raise DataError(
                    f"{source.at(no)} (the header): one column {raw!r} where {delim_name}-separated columns "
                    f"{wanted} are expected.{hint or ' Wrong delimiter, or the header is missing?'}{fmt_hint}"
                )
            missing = [n for n in names if n not in fields]
            if missing:
                seems_data = not looks_like_header(fields, names) and any(_is_number(f) for f in fields)
                raise DataError(
                    f"{source.at(no)} (the header): missing column{'s' if len(missing) > 1 else ''} "
                    f"{', '.join(repr(m) for m in missing)}; the line reads {raw!r}. "
                    + ("It looks like data: the file needs a header line naming its columns "
                       f"({wanted})." if seems_data else f"Expected columns: {wanted}.")
                    + fmt_hint
                )
            dupes = sorted({f for f in fields if fields.count(f) > 1})
            if dupes:
                raise DataError(
                    f"{source.at(no)} (the header): column{'s' if len(dupes) > 1 else ''} {', '.join(map(repr, dupes))} "
                    f"appear{'' if len(dupes) > 1 else 's'} twice."
                )
            columns.extend(fields)
            break
        else:
            raise DataError(f"{path}: empty file; expected a header line ({', '.join(names)}) and rows.{fmt_hint}")

    width = len(columns)
    first_row = True
    where: list[int] = []
    raws: list[str] = []
    data: list[list[str]] = []

    def flush() -> Batch:
        cols = {c: [r[j] for r in data] for j, c in enumerate(columns)}
        return Batch(ctx, source, list(where), cols, raws=list(raws))

    read = 0
    for no, raw, fields in rows:
        if _blank(fields):
            continue
        read += 1
        is_first, first_row = first_row, False
        if len(fields) != width:
            few = len(fields) < width
            field = columns[len(fields)] if few else columns[-1]
            ctx.problems.add(
                source, no, field, "too_few_fields" if few else "too_many_fields",
                f"{len(fields)} field{'s' if len(fields) != 1 else ''} where {width} are expected "
                f"({', '.join(columns)}, {delim_name}-separated)."
                + (delimiter_hint(raw, delimiter) if few else (" An unquoted delimiter inside a value?" if quoting else "")),
                raw,
            )
            continue
        if is_first and not header and looks_like_header(fields, names):
            ctx.problems.add(
                source, no, columns[0], "unexpected_header",
                f"looks like a header line ({raw!r}), but {path.name} has none: remove it.{fmt_hint}", raw,
            )
            continue
        where.append(no)
        raws.append(raw)
        data.append(fields)
        if len(data) >= chunk_rows:
            ctx.count_read(source, read)
            read = 0
            yield flush()
            where, raws, data = [], [], []
    ctx.count_read(source, read)
    if data:
        yield flush()


def read_jsonl(
    ctx: ImportContext, source: SourceFile, path: Path, *, encoding: str = "utf-8", chunk_rows: int = CHUNK_ROWS
) -> Iterator[Batch]:
    """Batches of a JSON Lines file; the columns are the keys of the first object (a key that first turns
    up later is noted in the report and not imported)."""
    columns: list[str] = []
    extra: set[str] = set()
    where: list[int] = []
    raws: list[str] = []
    data: list[dict] = []

    def flush() -> Batch:
        cols = {c: [r.get(c) for r in data] for c in columns}
        return Batch(ctx, source, list(where), cols, raws=list(raws))

    for no, text in iter_lines(ctx, source, path, encoding, delimiter=",", names=["?"]):
        if not text.strip():
            continue
        ctx.count_read(source)
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError) as exc:
            # RecursionError: json's C parser gives up on arrays or objects nested about a thousand levels deep;
            # the line is a bad row like any other that is not JSON.
            why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            ctx.problems.add(
                source, no, columns[0] if columns else "?", "bad_json",
                f"not valid JSON ({why}); JSON Lines files hold one object per line.", text,
            )
            continue
        if not isinstance(obj, dict):
            ctx.problems.add(
                source, no, columns[0] if columns else "?", "bad_json", f"a JSON {type(obj).__name__}, not an object.", text
            )
            continue
        if not columns:
            columns = [str(k) for k in obj]
        new = [k for k in obj if k not in columns and k not in extra]
        for key in new:
            extra.add(key)
            ctx.report.notes.append(f"{source.at(no)}: key '{key}' is not in the first object's keys and was not imported.")
        where.append(no)
        raws.append(text)
        data.append(obj)
        if len(data) >= chunk_rows:
            yield flush()
            where, raws, data = [], [], []
    if data:
        yield flush()


def _pydict(table) -> tuple[dict[str, list], list[tuple[int, str]]]:
    """Columns as Python lists; values that are not valid UTF-8 (Arrow readers do not always check)
    become None and are listed as (row, column)."""
    cols: dict[str, list] = {}
    bad: list[tuple[int, str]] = []
    for name in table.column_names:
        col = table.column(name)
        try:
            cols[name] = col.to_pylist()
        except UnicodeDecodeError:
            values = []
            for i in range(len(col)):
                try:
                    values.append(col[i].as_py())
                except UnicodeDecodeError:
                    values.append(None)
                    bad.append((i, name))
            cols[name] = values
    return cols, sorted(bad)


def _decode_json_columns(table):
    """`table` with its columns of Arrow's JSON extension type read back as text.

    datasets' json builder gives a column whose rows disagree in type (one list among strings, one date among
    numbers) that type, each value the JSON text of the row's value: a title "Heat" reads '"Heat"', and every
    row of the column was imported with quotes. Decoded, a string is itself and any other value its JSON text,
    as a CSV cell would read, so each row is checked as itself (a date among numbers parses; a list where text
    belongs is text, as from a JSON Lines file)."""
    import pyarrow as pa

    for index, name in enumerate(table.column_names):
        column = table.column(name)
        if getattr(column.type, "extension_name", None) != "arrow.json":
            continue
        values = (None if v is None else json.loads(v) for c in column.chunks for v in c.storage.to_pylist())
        text = [v if v is None or isinstance(v, str) else json.dumps(v, ensure_ascii=False) for v in values]
        table = table.set_column(index, name, pa.array(text, pa.string()))
    return table


def arrow_batches(ctx: ImportContext, source: SourceFile, tables: Iterator, *, count: bool = True) -> Iterator[Batch]:
    """Batches of pyarrow tables / record batches; locations are 1-based row numbers."""
    import pyarrow as pa

    row = 1
    for tb in tables:
        table = _decode_json_columns(tb if isinstance(tb, pa.Table) else pa.Table.from_batches([tb]))
        n = table.num_rows
        if not n:
            continue
        if count:
            ctx.count_read(source, n)
        cols, undecodable = _pydict(table)

        def raw(i: int, cols=cols) -> str:
            return json.dumps({k: v[i] for k, v in cols.items()}, ensure_ascii=False, default=str)

        batch = Batch(ctx, source, list(range(row, row + n)), cols, raws=raw, arrow=table)
        for i, name in undecodable:
            batch.reject(i, name, "bad_encoding", "the value is not valid UTF-8.")
        yield batch
        row += n


def read_parquet(ctx: ImportContext, source: SourceFile, path: Path, *, chunk_rows: int = CHUNK_ROWS) -> Iterator[Batch]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        yield from arrow_batches(ctx, source, pf.iter_batches(batch_size=chunk_rows))
    except DataError:
        raise
    except Exception as exc:  # a truncated or corrupt file
        detail = str(exc).strip().splitlines()
        raise DataError(f"{path}: cannot be read as Parquet: {detail[0] if detail else type(exc).__name__}") from None


TABLE_SUFFIXES = {
    ".csv": "csv", ".tsv": "csv", ".txt": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet",
}


def read_table_file(
    ctx: ImportContext,
    source: SourceFile,
    path: Path,
    *,
    required: Sequence[str],
    delimiter: str | None = None,
    encoding: str = "utf-8",
    chunk_rows: int = CHUNK_ROWS,
    fmt_hint: str = "",
) -> Iterator[Batch]:
    """Batches of a CSV / TSV (with a header), JSONL or Parquet file, chosen by suffix; `required`
    columns must exist (checked on the header, or on the first row / the schema)."""
    kind = TABLE_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(
            f"{path}: unknown table format '{path.suffix}'. Use {', '.join(sorted(TABLE_SUFFIXES))} "
            f"(CSV/TSV with a header line, JSON Lines, Parquet)."
        )
    if kind == "csv":
        delim = delimiter or ("\t" if path.suffix.lower() == ".tsv" else ",")
        yield from read_delimited(
            ctx, source, path, delimiter=delim, names=list(required), header=True, quoting=True, encoding=encoding,
            chunk_rows=chunk_rows, fmt_hint=fmt_hint,
        )
        return
    if kind == "jsonl":
        batches = read_jsonl(ctx, source, path, encoding=encoding, chunk_rows=chunk_rows)
    else:
        batches = read_parquet(ctx, source, path, chunk_rows=chunk_rows)
    checked = False
    for batch in batches:
        if not checked:
            missing = [c for c in required if c not in batch.columns]
            if missing:
                first = "the first object" if kind == "jsonl" else "the schema"
                raise DataError(
                    f"{source.at(batch.where[0]) if kind == 'jsonl' else path}: missing column{'s' if len(missing) > 1 else ''} "
                    f"{', '.join(repr(m) for m in missing)} ({first} has {', '.join(batch.columns) or 'none'}).{fmt_hint}"
                )
            checked = True
        yield batch
