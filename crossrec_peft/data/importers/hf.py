"""hf: a dataset loaded with `datasets.load_dataset` (a Hub name, a local directory, or a builder such as
"json" / "csv" / "parquet" with `data_files`), mapped like `generic`.

    options = {"name": "json", "data_files": "reviews.jsonl", "split": "train",
               "columns": {"user_id": "reviewer", "item_id": "asin", "title": "product_title"},
               "item_fields": ["category"]}

The split is the interactions. Items come from a second dataset (`items`: {"name", "split", "config",
"data_files"}), or, without one, from the interaction rows themselves: item_id, the text fields and
`item_fields`, one item per id (rows that disagree about an item's text are duplicate_item problems).
Relative data_files resolve against the source directory. Locations in messages are 1-based row numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ...errors import DataError
from .core import CHUNK_ROWS, CommonOptions, Importer, ImportContext, SourceFile
from .generic import check_mapping, import_interactions, import_items
from .readers import arrow_batches


@dataclass
class HFOptions(CommonOptions):
    name: str | None = None  # dataset name, local path or builder ("json", "csv", "parquet"); default: src
    split: str = "train"
    config: str | None = None
    data_files: str | list | dict | None = None
    columns: dict = field(default_factory=dict)  # standard name -> column name
    items: dict | None = None  # a separate items dataset: {"name", "split", "config", "data_files", "columns"}
    item_fields: list | None = None  # without `items`: interaction columns (standard names) that describe items
    text_fields: list | None = None  # default ["title"] when there is one
    cache_dir: str | None = None  # passed to load_dataset
    unescape_html: bool = True


def _resolve_files(ctx: ImportContext, data_files):
    if data_files is None:
        return None

    def one(p):
        if not isinstance(p, (str, Path)):
            raise DataError(f"hf: data_files entries must be paths, got {p!r}.")
        path = Path(p).expanduser()
        if not path.is_absolute() and ctx.src.is_dir():  # as documented: against SRC, so messages show that path
            path = ctx.src / path
        ctx.check_input(path, "data_files")
        return str(path)

    if isinstance(data_files, dict):
        return {k: ([one(x) for x in v] if isinstance(v, (list, tuple)) else one(v)) for k, v in data_files.items()}
    if isinstance(data_files, (list, tuple)):
        return [one(x) for x in data_files]
    return one(data_files)


JSON_SUFFIXES = (".json", ".jsonl", ".ndjson")


def _local_json_files(name: str, files) -> list[Path]:
    """Local files that datasets will read with pyarrow's JSON reader."""
    if isinstance(files, dict):
        listed = [x for v in files.values() for x in (v if isinstance(v, list) else [v])]
    elif isinstance(files, list):
        listed = list(files)
    else:
        listed = [files] if files else []
    paths = [Path(p) for p in listed]
    if not paths and Path(name).expanduser().is_dir():
        paths = [p for p in Path(name).expanduser().rglob("*") if p.suffix.lower() in JSON_SUFFIXES]
    as_json = name.lower() == "json"
    return [p for p in paths if p.is_file() and (as_json or p.suffix.lower() in JSON_SUFFIXES)]


def check_json_lines(path: Path) -> None:
    """pyarrow's JSON reader (used by datasets' json builder) crashes the process, not just raises, when a
    block starts with `null` (pyarrow 26); such a line is no JSON Lines row anyway, so it stops the import
    here, before load_dataset."""
    with open(path, "rb") as fh:
        for no, line in enumerate(fh, 1):
            if no == 1 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]
            for part in line.split(b"\r"):
                if part.lstrip(b" \t\n").startswith(b"null"):
                    raise DataError(
                        f"{path}, line {no}: a line starting with 'null' is not a JSON Lines row (each row is an "
                        f"object), and pyarrow's JSON reader, which datasets uses, cannot read a file with one. Remove it."
                    )


def load(ctx: ImportContext, name: str, split: str, config: str | None, data_files):
    """The split as a `datasets.Dataset`; any failure becomes DataError."""
    import datasets

    datasets.disable_progress_bars()
    files = _resolve_files(ctx, data_files)
    for path in _local_json_files(name, files):
        check_json_lines(path)
    kwargs = {"split": split}
    if files is not None:
        kwargs["data_files"] = files
    if ctx.options.cache_dir:
        kwargs["cache_dir"] = str(Path(ctx.options.cache_dir).expanduser())
    # datasets logs a reader's failure before raising it; the DataError below says it once, as one paragraph.
    verbosity = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity_error()
    try:
        ds = datasets.load_dataset(name, config, **kwargs)
    except Exception as exc:  # FileNotFoundError, DatasetNotFoundError, DatasetGenerationError, ValueError (split), ...
        detail = next((line for line in str(exc).strip().splitlines() if line.strip()), type(exc).__name__)
        cause = exc.__cause__ or exc.__context__
        extra = ""
        if cause is not None and str(cause).strip():
            extra = f" ({str(cause).strip().splitlines()[0]})"
        what = f"split '{split}'" + (f", data_files {files}" if files else "")
        raise DataError(f"hf: cannot load dataset '{name}' ({what}): {detail}{extra}") from None
    finally:
        datasets.logging.set_verbosity(verbosity)
    if not isinstance(ds, datasets.Dataset):
        raise DataError(f"hf: '{name}' did not give one split; set options.split (got {type(ds).__name__}).")
    return ds


def _batches(ctx: ImportContext, source: SourceFile, ds, *, count: bool = True):
    """Batches of a Dataset's Arrow table (memory-mapped); `count`: add its rows to report.read (not when the
    interaction rows are read a first time for the items)."""
    return arrow_batches(ctx, source, ds.with_format("arrow").iter(batch_size=CHUNK_ROWS), count=count)


def run(ctx: ImportContext) -> None:
    opts: HFOptions = ctx.options
    name = opts.name or str(ctx.src)
    if not name:
        raise DataError("hf: give the dataset as src or options['name'].")
    mapping = check_mapping(ctx.fmt, "columns", opts.columns)
    for key in ("item_fields", "text_fields"):
        value = getattr(opts, key)
        if value is not None and not all(isinstance(f, str) for f in value):
            raise DataError(f"hf: option '{key}' must be a list of field names, got {value!r}.")
    inter = load(ctx, name, opts.split, opts.config, opts.data_files)
    inter_src = SourceFile(f"{name}[{opts.split}]", "interactions", unit="row")
    ctx.report.files["interactions"] = inter_src.name

    if opts.items is not None:
        spec = dict(opts.items)
        unknown = set(spec) - {"name", "split", "config", "data_files", "columns"}
        if unknown:
            raise DataError(
                f"hf: option 'items' has unknown key(s) {', '.join(sorted(unknown))} "
                f"(known: name, split, config, data_files, columns)."
            )
        item_map = {**mapping, **check_mapping(ctx.fmt, "items.columns", spec.get("columns", {}))}
        item_name = spec.get("name") or name
        item_split = spec.get("split", "train")
        items = load(ctx, item_name, item_split, spec.get("config"), spec.get("data_files"))
        items_src = SourceFile(f"{item_name}[{item_split}]", "items", unit="row")
        ctx.report.files["items"] = items_src.name
        import_items(ctx, items_src, _batches(ctx, items_src, items), item_map, opts.text_fields, image_base=None)
    else:
        items_src = SourceFile(f"{name}[{opts.split}]", "items", unit="row")
        ctx.report.files["items"] = f"{items_src.name} (items from the interaction rows)"
        only = list(opts.item_fields or [])
        import_items(
            ctx, items_src, _batches(ctx, items_src, inter, count=False), mapping, opts.text_fields,
            image_base=None, only=only, count_identical=False,
        )
    import_interactions(ctx, inter_src, _batches(ctx, inter_src, inter), mapping, items_src.name)


IMPORTER = Importer(
    name="hf",
    run=run,
    options=HFOptions,
    description="a datasets.load_dataset split (Hub name, local path, or json/csv/parquet with data_files)",
    needs_source_dir=False,
)
