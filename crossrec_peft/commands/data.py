"""`crossrec-peft data import | validate | stats`: bring a dataset into the standard layout, check it, describe it.

    crossrec-peft data import FORMAT SRC --out DIR [--on-error strict|skip] [-o key=value ...] [--options FILE]
    crossrec-peft data validate DIR [--fields title,description] [--min-interactions 3] [--no-images]
    crossrec-peft data stats DIR [--plot FILE.png] [--json]

Format options (`-o`) take YAML values (`-o k_core=5 -o dedup=false -o text_fields=[title,description]`);
dotted keys fill mappings (`-o columns.item_id=sku`). See docs/data.md for every format and option.
"""

from __future__ import annotations

import json

from .argtypes import check_plot_path, positive_int

NAME = "data"
# The registered importers (crossrec_peft.data.importers.IMPORTERS; a test keeps the two equal), listed here
# so that `--help` does not import the importers.
IMPORT_FORMATS = ("amazon-seq", "far-trans", "generic", "hf", "movielens")
HELP = "import a dataset into the standard layout, validate it, or describe it"


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="{import,validate,stats}")

    imp = sub.add_parser("import", help="import FORMAT data from SRC into the standard layout at --out")
    imp.add_argument("format", help=f"one of: {', '.join(IMPORT_FORMATS)} (docs/data.md)")
    imp.add_argument("src", help="the source directory (hf: a dataset name or path)")
    imp.add_argument("--out", required=True, help="the output directory (replaced only if it holds an earlier import)")
    imp.add_argument("--on-error", default="strict", choices=["strict", "skip"],
                     help="strict: stop at the first bad row; skip: drop bad rows into rejected.jsonl")
    imp.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                     help="a format option (YAML value; dotted keys for mappings); repeatable")
    imp.add_argument("--options", metavar="FILE", help="a YAML or JSON file with the format options")

    val = sub.add_parser("validate", help="check a standard-layout directory; exit 2 naming file, row and field")
    val.add_argument("dir")
    val.add_argument("--fields", help="comma-separated text fields that must be present and non-empty (default: title)")
    val.add_argument("--min-interactions", type=positive_int, default=3, help="fewest interactions per user (runs need 3)")
    val.add_argument("--no-images", action="store_true", help="do not check the images (given, readable, within the size limit)")
    val.add_argument("--allow-outside-images", action="store_true",
                     help="accept image paths outside the data directory (as data.allow_outside_images=true does for runs)")

    st = sub.add_parser("stats", help="counts, sparsity, history and text lengths, image coverage")
    st.add_argument("dir")
    st.add_argument("--plot", metavar="FILE.png", help="also write histograms of history and text lengths")
    st.add_argument("--json", action="store_true", help="print the statistics as JSON")


def run(args) -> None:
    {"import": _import, "validate": _validate, "stats": _stats}[args.action](args)


# ------------------------------------------------------------------------------------------------ import


def parse_option_args(pairs: list[str], hints: dict | None = None) -> dict:
    """`key=value` strings into an options dict: values are YAML (numbers, booleans, lists, mappings),
    except where the option is text and YAML would read something else (`2024-01-01`, `007`); `a.b=v` sets
    key b of mapping a."""
    import yaml

    from ..errors import DataError

    options: dict = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise DataError(f"Format options are KEY=VALUE, got '{pair}'.")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        top, _, sub = key.partition(".")
        if sub:
            # Mapping entries name columns or files: text, unless written as a list or mapping.
            node = options.setdefault(top, {})
            if not isinstance(node, dict):
                raise DataError(f"Format option '{top}' is set both as a value and as a mapping ('{pair}').")
            node[sub] = value if isinstance(value, (list, dict)) else raw
            continue
        if hints is not None and top in hints and _wants_text(hints[top]) and not isinstance(value, str):
            value = raw
        options[top] = value
    return options


def _wants_text(hint) -> bool:
    import typing

    args = typing.get_args(hint) or (hint,)
    return str in args and not any(a in args for a in (int, float, bool, list, dict))


def _load_options_file(path: str) -> dict:
    from pathlib import Path

    import yaml

    from ..errors import DataError

    file = Path(path).expanduser()
    if file.is_dir():
        raise DataError(f"Options file '{file}' is a directory; give a YAML or JSON file.")
    if not file.is_file():
        raise DataError(f"Options file '{file}' does not exist.")
    try:
        text = file.read_text(encoding="utf-8")
        loaded = yaml.safe_load(text)
    except UnicodeDecodeError as exc:
        raise DataError(f"{file}: not a YAML or JSON file: {str(exc).splitlines()[0]}") from None
    except yaml.YAMLError as exc:
        raise DataError(f"{_yaml_where(file, text, exc)}: cannot be read as YAML or JSON: {_yaml_problem(exc)}.") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise DataError(f"{file}: must hold a mapping of option names to values, not {type(loaded).__name__}.")
    return loaded


def _yaml_where(file, text: str, exc) -> str:
    """'FILE, line L, column C' (1-based) where YAML found the problem, as the recipe loader names it (the
    first line of PyYAML's message, which was all this said, holds no position)."""
    mark = getattr(exc, "problem_mark", None)
    if mark is not None:
        return f"{file}, line {mark.line + 1}, column {mark.column + 1}"
    position = getattr(exc, "position", None)  # a character YAML refuses (ReaderError): an offset in the text
    if isinstance(position, int):
        line, start = text.count("\n", 0, position) + 1, text.rfind("\n", 0, position) + 1
        return f"{file}, line {line}, column {position - start + 1}"
    return str(file)


def _yaml_problem(exc) -> str:
    """What YAML found wrong, and what it was reading when it did ('while parsing a flow sequence ...')."""
    problem = getattr(exc, "problem", None)
    if problem is None:
        return str(getattr(exc, "reason", None) or exc).splitlines()[0].rstrip(".")
    context, mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and mark is not None:
        problem += f" ({context} that starts at line {mark.line + 1}, column {mark.column + 1})"
    return problem


def format_report(report) -> str:
    """An ImportReport as the lines `data import` prints."""
    lines = [f"imported {report.format} from {report.source} into {report.output}"]
    if report.read:
        lines.append("  read:    " + ", ".join(f"{name} {n:,} rows" for name, n in report.read.items()))
    written = ", ".join(f"{table} {n:,}" for table, n in report.written.items())
    lines.append(f"  written: {written} ({report.users:,} users with interactions)")
    for kind, reasons in report.dropped.items():
        detail = ", ".join(f"{reason} {n:,}" for reason, n in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))
        lines.append(f"  dropped {kind}: {detail}")
    if not report.dropped:
        lines.append("  dropped: nothing")
    if report.rejected:
        lines.append(f"  bad rows: {report.rejected:,}, listed in {report.output}/rejected.jsonl")
    if report.truncated_texts:
        lines.append(f"  texts cut to max_text_length: {report.truncated_texts:,}")
    lines.extend(f"  note: {note}" for note in report.notes)
    return "\n".join(lines)


def _import(args) -> None:
    import typing

    from ..data.importers import get_importer, import_dataset

    importer = get_importer(args.format)
    options = _load_options_file(args.options) if args.options else {}
    options.update(parse_option_args(args.option, typing.get_type_hints(importer.options)))
    report = import_dataset(args.format, args.src, args.out, on_error=args.on_error, options=options)
    print(format_report(report))


# ---------------------------------------------------------------------------------------------- validate


def _validate(args) -> None:
    from ..data.stats import validate_layout
    from ..errors import DataError

    if args.min_interactions < 1:
        raise DataError("--min-interactions must be at least 1.")
    fields = [f.strip() for f in args.fields.split(",") if f.strip()] if args.fields else None
    data = validate_layout(args.dir, fields=fields, min_interactions=args.min_interactions, images=not args.no_images,
                           allow_outside_images=args.allow_outside_images)
    checked = ", ".join(fields) if fields is not None else ("title" if "title" in data.items.column_names else "none")
    print(
        f"OK: {args.dir}: {len(data.item_ids):,} items, {len(data.user_ids):,} users, {data.num_interactions:,} interactions "
        f"(text fields checked: {checked}; every user has at least {args.min_interactions})"
    )


# ------------------------------------------------------------------------------------------------- stats


def _check_writable(option: str, path) -> None:
    """ConfigError unless the file `path` can be written: its folder (or, where that does not exist yet, the
    nearest one above it, under which the rest is created) takes a new file, and a file already there can be
    replaced. Tried for real, with a temporary file removed at once: permission bits do not tell (root
    ignores them; an immutable folder or a read-only mount does not show in them)."""
    import os
    import tempfile

    from ..errors import ConfigError

    folder = path.parent
    while not folder.is_dir():
        if folder.exists() or folder == folder.parent:
            raise ConfigError(
                f"{option} {path}: {folder} is not a folder, so the file cannot be written there; choose another path."
            )
        folder = folder.parent
    try:
        handle, probe = tempfile.mkstemp(prefix=".crossrec-write-check-", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(
            f"{option} {path}: cannot write a file in {folder} ({exc.strerror or exc}); choose a folder you can write to."
        ) from None
    if path.is_file():
        try:
            open(path, "ab").close()  # appends nothing: the earlier plot stays as it is until the new one is drawn
        except OSError as exc:
            raise ConfigError(
                f"{option} {path}: exists and cannot be replaced ({exc.strerror or exc}); choose another file."
            ) from None


def _stats(args) -> None:
    from ..data.stats import format_stats, layout_stats, plot_stats, public

    from pathlib import Path

    # Checked before the data is read: a plot path that cannot be written (or would overwrite a file of the
    # user's) fails at once, with nothing printed or written.
    plot = check_plot_path("--plot", args.plot, protect=Path(args.dir)) if args.plot else None
    if plot is not None:
        _check_writable("--plot", plot)
    stats = layout_stats(args.dir)
    if args.json:
        print(json.dumps(public(stats), indent=2))
    else:
        print(format_stats(stats))
    if plot is not None:
        path = plot_stats(stats, plot)
        if not args.json:
            print(f"  plot: {path}")
