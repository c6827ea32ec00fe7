"""amazon-seq: sequential-recommendation exports of Amazon reviews (the IISAN / MoRec preprocessing).

    items.tsv   item_id<TAB>title                      no header, UTF-8
    users.tsv   user_id<TAB>item_id item_id ...        no header, one user per line, items oldest first

Titles get HTML entities unescaped and whitespace normalised. The timestamp of an interaction is its
position in the user's line (0, 1, ...). A user on a second line is a bad row (duplicate_user).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .core import CommonOptions, Importer, ImportContext, SourceFile, batch_table, parse_ids, parse_texts
from .readers import read_delimited


@dataclass
class AmazonOptions(CommonOptions):
    items_file: str = "items.tsv"
    users_file: str = "users.tsv"
    encoding: str = "utf-8"


def run(ctx: ImportContext) -> None:
    import pyarrow as pa

    opts: AmazonOptions = ctx.options
    b = ctx.builder
    items_path = ctx.path(opts.items_file, role="items", hint=" amazon-seq expects items.tsv (item_id<TAB>title) and users.tsv.")
    users_path = ctx.path(
        opts.users_file, role="interactions", hint=" amazon-seq expects items.tsv and users.tsv (user_id<TAB>item item ...)."
    )
    items_src = SourceFile(items_path, "items")
    users_src = SourceFile(users_path, "interactions")

    tsv = {"delimiter": "\t", "header": False, "encoding": opts.encoding}
    for batch in read_delimited(ctx, items_src, items_path, names=["item_id", "title"], **tsv):
        ids = parse_ids(batch, "item_id")
        titles = parse_texts(batch, "title")
        b.add_items(batch_table(batch, {"item_id": ids, "title": titles}, raw=True))
    b.finish_items(items_src)

    for batch in read_delimited(ctx, users_src, users_path, names=["user_id", "items"], **tsv):
        users = parse_ids(batch, "user_id")
        seqs = batch.column("items")
        u, it, pos, line, row = [], [], [], [], []
        for i in batch.kept():
            tokens = seqs[i].split()
            if not tokens:
                batch.reject(int(i), "items", "empty_sequence", "no items after the user id.")
                continue
            u.extend([users[i]] * len(tokens))
            it.extend(tokens)
            pos.extend(range(len(tokens)))
            line.extend([batch.where[i]] * len(tokens))
            row.extend([int(i)] * len(tokens))
        if not u:
            continue
        known = b.known_items(it)
        for j in np.flatnonzero(~known):
            ctx.problems.add(
                users_src, line[j], "items", "unknown_item",
                f"item '{it[j]}' (position {pos[j] + 1}) is not in {items_path.name}.", batch.raw(row[j]),
            )
        keep = pa.array(known)
        b.add_interactions(
            pa.table(
                {
                    "user_id": pa.array(u, type=pa.string()),
                    "item_id": pa.array(it, type=pa.string()),
                    "timestamp": pa.array(pos, type=pa.int64()),
                    "_line": pa.array(line, type=pa.int64()),
                }
            ).filter(keep)
        )
    b.finish(users_src, check=_one_line_per_user(ctx, users_src))


def _one_line_per_user(ctx: ImportContext, source: SourceFile):
    """A user's whole history is one line: later lines for the same user are rejected."""

    def check(staged, users: np.ndarray, keep: np.ndarray) -> None:
        lines = staged["_line"].to_numpy()
        if not len(lines):
            return
        first = np.full(int(users.max()) + 1, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(first, users, lines)
        later = lines != first[users]
        if not later.any():
            return
        bad_lines, counts = np.unique(lines[later], return_counts=True)
        user_of = {int(lines[r]): r for r in np.flatnonzero(later)}
        for ln, n in zip(bad_lines, counts):
            r = user_of[int(ln)]
            user = staged["user_id"][int(r)].as_py()
            ctx.problems.add(
                source, int(ln), "user_id", "duplicate_user",
                f"user '{user}' already has a line ({source.unit} {int(first[users[r]])}); a user's history must be one line.",
                f"{user}\t<{int(n)} items>", records=int(n),
            )
        keep &= ~later

    return check


IMPORTER = Importer(
    name="amazon-seq",
    run=run,
    options=AmazonOptions,
    description="Amazon review sequences: items.tsv (item_id, title) + users.tsv (user_id, items in time order)",
)
