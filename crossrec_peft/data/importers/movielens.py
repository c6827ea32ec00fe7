"""movielens: the GroupLens MovieLens releases, in their three file layouts.

    csv   (ml-latest, ml-latest-small, ml-20m, ml-25m)  movies.csv  movieId,title,genres   (quoted CSV, UTF-8)
                                                        ratings.csv userId,movieId,rating,timestamp
                                                        tags.csv    userId,movieId,tag,timestamp (optional)
    100k  (ml-100k)  u.item  id|title|release date|video date|IMDb URL|19 genre flags   (latin-1)
                     u.data  user<TAB>item<TAB>rating<TAB>timestamp;  u.genre (optional genre names)
    1m    (ml-1m, ml-10m)  movies.dat  id::title::genres;  ratings.dat user::movie::rating::timestamp (latin-1)
                           tags.dat user::movie::tag::timestamp (optional, ml-10m)

Items: item_id, title, genres (space-joined), year (from the title, for ml-100k also the release date;
null when absent) and, with a tags file, tags (the movie's distinct tags, comma-joined, "" for none).
Ratings below options.min_rating are left out (below_min_rating); the rating column is kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ...errors import DataError, did_you_mean
from .core import (
    CommonOptions,
    Importer,
    ImportContext,
    SourceFile,
    batch_table,
    parse_floats,
    parse_ids,
    parse_texts,
    parse_timestamps,
)
from .prepare import normalize_text
from .readers import read_delimited

VARIANTS = {
    "csv": ("movies.csv", "ratings.csv", "tags.csv"),
    "100k": ("u.item", "u.data", None),
    "1m": ("movies.dat", "ratings.dat", "tags.dat"),
}
ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]
NO_GENRES = {"(no genres listed)", "unknown", ""}
_YEAR = re.compile(r"\((\d{4})(?:\s*[-\u2013]\s*(?:\d{4})?)?\)\s*$")
_DATE_YEAR = re.compile(r"(\d{4})\s*$")


@dataclass
class MovieLensOptions(CommonOptions):
    variant: str | None = None  # csv | 100k | 1m; found from the files when None
    min_rating: float = 0.0  # ratings below this are left out (0 keeps all)
    tags: bool = True  # read tags.csv / tags.dat when present
    encoding: str | None = None  # default: utf-8 for csv, latin-1 for 100k and 1m


def detect_variant(ctx: ImportContext) -> str:
    opts: MovieLensOptions = ctx.options
    if opts.variant is not None:
        if opts.variant not in VARIANTS:
            raise DataError(
                f"movielens: unknown variant '{opts.variant}'.{did_you_mean(opts.variant, VARIANTS)} Known: {', '.join(VARIANTS)}."
            )
        return opts.variant
    for name, (items, ratings, _) in VARIANTS.items():
        if (ctx.src / items).is_file() or (ctx.src / ratings).is_file():
            return name
    expected = "; ".join(f"{v}: {i} + {r}" for v, (i, r, _) in VARIANTS.items())
    raise DataError(f"movielens: {ctx.src} holds none of the MovieLens files ({expected}).")


def _year(title: str | None, date: str | None = None) -> int | None:
    m = _YEAR.search(title or "")
    if m:
        return int(m.group(1))
    m = _DATE_YEAR.search(date or "")
    return int(m.group(1)) if m else None


def run(ctx: ImportContext) -> None:
    import pyarrow as pa

    opts: MovieLensOptions = ctx.options
    b = ctx.builder
    variant = detect_variant(ctx)
    items_name, ratings_name, tags_name = VARIANTS[variant]
    encoding = opts.encoding or ("utf-8" if variant == "csv" else "latin-1")
    hint = f" (MovieLens {variant} layout)"
    needs = f" The MovieLens {variant} layout needs {items_name} and {ratings_name}."
    items_path = ctx.path(items_name, role="items", hint=needs)
    ratings_path = ctx.path(ratings_name, role="interactions", hint=needs)
    tags_path = ctx.path(tags_name, role="tags", required=False) if (tags_name and opts.tags) else None
    items_src, ratings_src = SourceFile(items_path, "items"), SourceFile(ratings_path, "interactions")

    csv = {"delimiter": ",", "header": True, "quoting": True, "encoding": encoding, "fmt_hint": hint}
    plain = {"header": False, "encoding": encoding, "fmt_hint": hint}

    # ---- movies
    if variant == "100k":
        genre_names = _ml100k_genres(ctx)
        names = ["movie_id", "title", "release_date", "video_release_date", "imdb_url", *genre_names]
        reader = read_delimited(ctx, items_src, items_path, delimiter="|", names=names, **plain)
    elif variant == "1m":
        reader = read_delimited(ctx, items_src, items_path, delimiter="::", names=["movie_id", "title", "genres"], **plain)
    else:
        reader = read_delimited(ctx, items_src, items_path, names=["movieId", "title", "genres"], **csv)
    id_col = "movieId" if variant == "csv" else "movie_id"
    for batch in reader:
        ids = parse_ids(batch, id_col, integer=True)
        titles = parse_texts(batch, "title")
        if variant == "100k":
            genres = _flag_genres(batch, genre_names)
            dates = batch.column("release_date")
            years = [_year(titles[i], dates[i]) if batch.keep[i] else None for i in range(len(batch))]
        else:
            genres = [" ".join(g for g in (x.strip() for x in v.split("|")) if g not in NO_GENRES) for v in batch.column("genres")]
            years = [_year(t) for t in titles]
        b.add_items(batch_table(
            batch, {"item_id": ids, "title": titles, "genres": genres, "year": years}, types={"year": pa.int64()}, raw=True,
        ))
    b.finish_items(items_src)

    # ---- tags
    if tags_path is not None:
        _read_tags(ctx, tags_path, variant, csv, plain, items_path.name)

    # ---- ratings
    if variant == "csv":
        reader = read_delimited(ctx, ratings_src, ratings_path, names=["userId", "movieId", "rating", "timestamp"], **csv)
        user_col, movie_col = "userId", "movieId"
    else:
        delim = "\t" if variant == "100k" else "::"
        names = ["user_id", "item_id", "rating", "timestamp"]
        reader = read_delimited(ctx, ratings_src, ratings_path, delimiter=delim, names=names, **plain)
        user_col, movie_col = "user_id", "item_id"
    for batch in reader:
        users = parse_ids(batch, user_col, integer=True)
        movies = parse_ids(batch, movie_col, integer=True)
        ratings = parse_floats(batch, "rating")
        stamps = parse_timestamps(batch, "timestamp", integer=True, dates=False)
        kept = batch.kept()
        known = b.known_items([movies[i] for i in kept])
        for j in np.flatnonzero(~known):
            i = int(kept[j])
            batch.reject(i, movie_col, "unknown_item", f"movie {movies[i]} is not in {items_path.name}.")
        if opts.min_rating > 0:
            for i in np.flatnonzero(batch.keep & (ratings < opts.min_rating)):
                batch.drop(int(i), "below_min_rating")
        b.add_interactions(batch_table(
            batch, {"user_id": users, "item_id": movies, "timestamp": stamps, "rating": ratings},
            types={"timestamp": pa.int64(), "rating": pa.float64()},
        ))
    b.finish(ratings_src)


def _ml100k_genres(ctx: ImportContext) -> list[str]:
    """Genre names from u.genre (name|index) when present, else the standard 19."""
    path = ctx.src / "u.genre"
    if not path.is_file():
        return list(ML100K_GENRES)
    names: dict[int, str] = {}
    for no, line in enumerate(path.read_bytes().decode("latin-1").splitlines(), 1):
        if not line.strip():
            continue
        name, sep, index = line.rpartition("|")
        if not sep or not index.strip().isdigit() or not name.strip():
            raise DataError(f"{path}, line {no}, field 'index': expected 'name|index', got {line!r}.")
        names[int(index)] = name.strip()
    if sorted(names) != list(range(len(names))) or not names:
        raise DataError(f"{path}: genre indices must run 0..n-1 (found {sorted(names)}).")
    return [names[i] for i in range(len(names))]


def _flag_genres(batch, genre_names: list[str]) -> list[str | None]:
    out: list[str | None] = []
    flags = [batch.column(g) for g in genre_names]
    for i in range(len(batch)):
        if not batch.keep[i]:
            out.append(None)
            continue
        names = []
        for g, col in zip(genre_names, flags):
            v = col[i].strip()
            if v not in ("0", "1"):
                batch.reject(i, g, "bad_value", f"genre flag {col[i]!r} is not 0 or 1.")
                break
            if v == "1" and g not in NO_GENRES:
                names.append(g)
        out.append(" ".join(names))
    return out


def _read_tags(ctx: ImportContext, path, variant: str, csv: dict, plain: dict, items_name: str) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc

    b = ctx.builder
    src = SourceFile(path, "tags")
    if variant == "csv":
        reader = read_delimited(ctx, src, path, names=["userId", "movieId", "tag", "timestamp"], **csv)
        movie_col = "movieId"
    else:
        reader = read_delimited(ctx, src, path, delimiter="::", names=["user_id", "movie_id", "tag", "timestamp"], **plain)
        movie_col = "movie_id"
    parts = []
    for batch in reader:
        movies = parse_ids(batch, movie_col, integer=True)
        tags = parse_texts(batch, "tag")
        kept = batch.kept()
        known = b.known_items([movies[i] for i in kept])
        for j in np.flatnonzero(~known):
            i = int(kept[j])
            batch.reject(i, movie_col, "unknown_item", f"movie {movies[i]} is not in {items_name}.")
        t = batch_table(batch, {"item_id": movies, "tag": tags})
        if t.num_rows:
            parts.append(t)
    ctx.problems.checkpoint()
    items = b.items
    if parts:
        tags = pa.concat_tables(parts)
        tags = tags.append_column("_key", pc.utf8_lower(tags["tag"]))
        first = tags.group_by(["item_id", "_key"], use_threads=False).aggregate([("tag", "first"), ("_line", "min")])
        ctx.report.drop("tags", "duplicate_tag", tags.num_rows - first.num_rows)
        first = first.sort_by("_line_min")
        per_item = first.group_by("item_id", use_threads=False).aggregate([("tag_first", "list")])
        joined = pc.binary_join(per_item["tag_first_list"], ", ")
        limit = ctx.options.max_text_length
        if limit is not None:
            values = joined.to_pylist()
            cut = [normalize_text(v, max_length=limit, unescape_html=False) for v in values]
            ctx.report.truncated_texts += sum(1 for a, c in zip(values, cut) if a != c)
            joined = pa.array(cut, type=pa.string())
        table = pa.table({"item_id": per_item["item_id"], "tags": joined})
        items = items.join(table, "item_id", join_type="left outer")
        items = items.set_column(items.column_names.index("tags"), "tags", pc.fill_null(items["tags"], ""))
        items = items.sort_by("_line")
    else:
        items = items.append_column("tags", pa.array([""] * items.num_rows, type=pa.string()))
    b.set_items(items)


IMPORTER = Importer(
    name="movielens",
    run=run,
    options=MovieLensOptions,
    description="MovieLens (csv: ml-latest/-small/20m/25m; 100k; 1m): movies with genres, year, tags; ratings",
)
