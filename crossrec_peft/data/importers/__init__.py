"""Importers: public datasets and arbitrary tables into the standard layout (see docs/data.md).

    from crossrec_peft.data.importers import import_dataset
    report = import_dataset("movielens", "ml-latest-small/", "data/ml", options={"min_rating": 4.0})

writes `out/items.parquet`, `out/interactions.parquet` (and `out/users.parquet` where the format has
users), `out/import_report.json` and, with on_error="skip", `out/rejected.jsonl`. Everything is written in
a temporary directory beside `out` and renamed at the end (`fsutil.atomic_directory`), so a failed import
leaves nothing behind; the inputs are only ever read, and an input inside `out`, which the import replaces,
is refused.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import DataError, did_you_mean
from ...fsutil import atomic_directory, unwritable
from . import amazon, fartrans, generic, hf, movielens
from .build import Builder
from .core import ON_ERROR, CommonOptions, ImportContext, Importer, ImportReport, Problems, options_dict, parse_options
from .prepare import codes, deduplicate, duplicate_mask, k_core, kcore_mask, kcore_sequences, normalize_text

# name -> importer: the formats `import_dataset` knows.
IMPORTERS: dict[str, Importer] = {
    imp.name: imp for imp in (amazon.IMPORTER, movielens.IMPORTER, fartrans.IMPORTER, generic.IMPORTER, hf.IMPORTER)
}

REPORT_FILE = "import_report.json"
REJECTED_FILE = "rejected.jsonl"


def register_importer(importer: Importer) -> Importer:
    """Add a format (e.g. from a plugin); names are unique."""
    if importer.name in IMPORTERS and IMPORTERS[importer.name] is not importer:
        raise ValueError(f"importer '{importer.name}' is registered twice")
    IMPORTERS[importer.name] = importer
    return importer


def get_importer(fmt: str) -> Importer:
    if fmt not in IMPORTERS:
        known = sorted(IMPORTERS)
        raise DataError(f"Unknown import format '{fmt}'.{did_you_mean(str(fmt), known)} Known formats: {', '.join(known)}.")
    return IMPORTERS[fmt]


def _check_output(src: Path, out: Path) -> None:
    # hf's source may be a dataset name rather than a path; a local one is checked like any other.
    if src.exists():
        s, o = src.resolve(), out.resolve()
        if s == o or o in s.parents:
            raise DataError(f"Output '{out}' would replace the source directory '{src}': write the import elsewhere.")
    try:  # a name the file system refuses (too long) fails its first stat
        is_dir = out.is_dir()
        if out.exists() and not is_dir:
            raise DataError(f"Output '{out}' exists and is not a directory.")
    except OSError as exc:
        raise unwritable(out, exc, "the directory") from None
    if is_dir and any(out.iterdir()) and not (out / REPORT_FILE).is_file():
        raise DataError(
            f"Output directory '{out}' is not empty and holds no {REPORT_FILE} (not an earlier import): "
            f"choose another directory or empty it."
        )


def import_dataset(
    fmt: str,
    src: str | Path,
    out: str | Path,
    *,
    on_error: str = "strict",
    options: dict | None = None,
) -> ImportReport:
    """Import `src` (a directory in format `fmt`; for hf a dataset name or path) into the standard layout
    at `out`.

    on_error="strict" (default): the first bad row raises DataError naming file, line and field, with a
    count of the other problems in that file. on_error="skip": bad rows are left out, counted by reason
    in the report and written to out/rejected.jsonl. An import with nothing left raises DataError in both
    modes. `options` are the format's (see `IMPORTERS[fmt].options` and docs/data.md)."""
    importer = get_importer(fmt)
    if on_error not in ON_ERROR:
        raise DataError(f"on_error must be one of {', '.join(ON_ERROR)}, not '{on_error}'.{did_you_mean(str(on_error), ON_ERROR)}")
    opts = parse_options(importer.options, options, fmt)
    src, out = Path(src).expanduser(), Path(out).expanduser()
    if importer.needs_source_dir and not src.is_dir():
        what = "is a file, not a directory" if src.exists() else "does not exist"
        raise DataError(f"{fmt}: source directory '{src}' {what}.")
    _check_output(src, out)
    report = ImportReport(format=fmt, source=str(src), output=str(out), on_error=on_error, options=options_dict(opts))
    with atomic_directory(out) as work:
        problems = Problems(on_error, report, work / REJECTED_FILE)
        ctx = ImportContext(fmt=fmt, src=src, work=work, options=opts, report=report, problems=problems, out=out)
        ctx.builder = Builder(ctx)
        try:
            importer.run(ctx)
            problems.close()
            report.save(work / REPORT_FILE)
        finally:
            problems.close()
            ctx.builder.close()
    return report


__all__ = [
    "IMPORTERS",
    "CommonOptions",
    "ImportReport",
    "Importer",
    "codes",
    "deduplicate",
    "duplicate_mask",
    "get_importer",
    "import_dataset",
    "k_core",
    "kcore_mask",
    "kcore_sequences",
    "normalize_text",
    "register_importer",
]
