"""Data at scale: peak memory and rows per second of importing and loading a large generated catalog.

Generates (once per size, deterministic) a catalog of 1M items with titles and categories and 10M
interactions of 500k users, written twice:
  - as a source for the `generic` importer: items.jsonl + interactions.csv (a column mapping renames them);
  - in the standard layout: items.parquet + interactions.parquet.
Then measures, each step in its own process (peak RSS is per process; the baseline is the process after its
imports, before the step):
  - import (generic, CSV/JSONL -> standard layout), through `crossrec-peft data import`'s function;
  - load_layout, cold (a fresh `datasets` cache: Parquet converted to memory-mapped Arrow) and warm (the
    cache reused, as on a second run);
  - the same ids handled the way the loader did before issue 4 (one Python string per interaction,
    pandas index lookups), on the same table, as the reference for the Arrow code path;
  - data stats (load + every statistic).
Prints a table and writes benchmarks/results/loader.json.

    python benchmarks/loader.py            # 1M items, 10M interactions (several minutes, ~2 GB of files)
    python benchmarks/loader.py --small    # 100k items, 1M interactions (a quick run)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _results import RESULTS, write_results

SIZES = {"full": (1_000_000, 10_000_000, 500_000), "small": (100_000, 1_000_000, 50_000)}
CHUNK = 1_000_000
WORDS = (
    "oak walnut linen cotton steel brass ceramic glass wool leather bamboo marble copper velvet maple pine "
    "lamp table chair desk shelf rug cushion vase mirror clock bowl mug kettle blanket basket stool bench "
    "red blue green amber ivory charcoal sage rust navy cream small large round square tall low classic modern"
).split()


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# ------------------------------------------------------------------------------------------- generation


def generate(root: Path, num_items: int, num_interactions: int, num_users: int) -> dict:
    """Write the source and the standard layout under root (skipped when already there)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    source, layout = root / "source", root / "layout"
    done = root / "done.json"
    if done.is_file():
        return json.loads(done.read_text())
    source.mkdir(parents=True, exist_ok=True)
    layout.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    words = pa.array(WORDS)

    def ids(prefix: str, numbers) -> pa.Array:
        return pc.binary_join_element_wise(prefix, pc.utf8_lpad(pc.cast(pa.array(numbers), pa.string()), 7, "0"), "")

    started = time.perf_counter()
    item_writer = pq.ParquetWriter(str(layout / "items.parquet"), pa.schema([("item_id", pa.string()), ("title", pa.string()), ("category", pa.string())]))
    with open(source / "items.jsonl", "w", encoding="utf-8") as fh:
        for start in range(0, num_items, CHUNK):
            n = min(CHUNK, num_items - start)
            picks = [words.take(pa.array(rng.integers(0, len(WORDS), n))) for _ in range(5)]
            title = pc.binary_join_element_wise(*picks, " ")
            category = words.take(pa.array(rng.integers(0, 16, n)))
            item_id = ids("i", np.arange(start, start + n))
            item_writer.write_table(pa.table({"item_id": item_id, "title": title, "category": category}))
            for sku, name, cat in zip(item_id.to_pylist(), title.to_pylist(), category.to_pylist()):
                fh.write(json.dumps({"sku": sku, "name": name, "category": cat}) + "\n")
    item_writer.close()

    # Zipf-like item popularity, uniform users, timestamps over a year.
    weights = 1.0 / np.arange(1, num_items + 1) ** 0.8
    cdf = np.cumsum(weights / weights.sum())
    inter_schema = pa.schema([("user_id", pa.string()), ("item_id", pa.string()), ("timestamp", pa.int64())])
    writer = pq.ParquetWriter(str(layout / "interactions.parquet"), inter_schema)
    csv_writer = None
    for start in range(0, num_interactions, CHUNK):
        n = min(CHUNK, num_interactions - start)
        # Every user gets at least 3 interactions: the first 3 * num_users rows cycle through the users.
        users = np.arange(start, start + n) % num_users if start + n <= 3 * num_users else rng.integers(0, num_users, n)
        items = np.minimum(np.searchsorted(cdf, rng.random(n)), num_items - 1)
        stamps = 1_700_000_000 + rng.integers(0, 365 * 86_400, n)
        table = pa.table({"user_id": ids("u", users), "item_id": ids("i", items), "timestamp": pa.array(stamps)})
        writer.write_table(table)
        renamed = table.rename_columns(["customer", "sku", "ordered_at"])
        if csv_writer is None:
            csv_writer = pacsv.CSVWriter(str(source / "interactions.csv"), renamed.schema,
                                         write_options=pacsv.WriteOptions(quoting_style="none"))
        csv_writer.write_table(renamed)
    writer.close()
    csv_writer.close()
    info = {
        "items": num_items, "interactions": num_interactions, "users": num_users,
        "generate_seconds": time.perf_counter() - started,
        "bytes": {p.name: p.stat().st_size for d in (source, layout) for p in d.iterdir()},
    }
    done.write_text(json.dumps(info))
    return info


# ------------------------------------------------------------------------------------------------ steps


def step_import(root: Path, work: Path) -> dict:
    from crossrec_peft.data.importers import import_dataset

    base = rss_mb()
    t = time.perf_counter()
    report = import_dataset("generic", root / "source", work / "imported", options={
        "items": "items.jsonl", "interactions": "interactions.csv",
        "columns": {"item_id": "sku", "title": "name", "user_id": "customer", "timestamp": "ordered_at"},
    })
    seconds = time.perf_counter() - t
    rows = sum(report.read.values())
    return {"seconds": seconds, "rows": rows, "baseline_mb": base, "written": report.written}


def step_load(root: Path, work: Path) -> dict:
    from crossrec_peft.data import load_layout

    base = rss_mb()
    t = time.perf_counter()
    data = load_layout(root / "layout", ["title"])
    seconds = time.perf_counter() - t
    return {"seconds": seconds, "rows": len(data.item_ids) + data.num_interactions, "baseline_mb": base,
            "users": len(data.user_ids)}


def step_per_row_ids(root: Path, work: Path) -> dict:
    """The id handling of load_layout before issue 4: `.to_pylist()` of every id, then pandas lookups."""
    import numpy as np
    import pandas as pd

    from crossrec_peft.data.layout import read_table

    items = read_table(root / "layout" / "items.parquet")
    inter = read_table(root / "layout" / "interactions.parquet")
    base = rss_mb()
    t = time.perf_counter()
    item_ids = [str(v) for v in items.data.column("item_id").to_pylist()]
    users = [str(v) for v in inter.data.column("user_id").to_pylist()]
    inter_items = [str(v) for v in inter.data.column("item_id").to_pylist()]
    codes = pd.Index(item_ids).get_indexer(inter_items)
    user_codes, _ = pd.factorize(pd.Series(users), sort=False)
    order = np.lexsort((np.arange(len(users)), inter.data.column("timestamp").to_numpy(), user_codes))
    bounds = np.flatnonzero(np.diff(user_codes[order])) + 1
    sequences = np.split(codes[order], bounds)
    seconds = time.perf_counter() - t
    return {"seconds": seconds, "rows": len(item_ids) + len(users), "baseline_mb": base, "users": len(sequences)}


def step_stats(root: Path, work: Path) -> dict:
    from crossrec_peft.data.stats import layout_stats

    base = rss_mb()
    t = time.perf_counter()
    stats = layout_stats(root / "layout")
    seconds = time.perf_counter() - t
    return {"seconds": seconds, "rows": stats["items"] + stats["interactions"], "baseline_mb": base,
            "sparsity": stats["sparsity"]}


STEPS = {
    "load_cold": ("load_layout, cold datasets cache", step_load),
    "load_warm": ("load_layout, warm datasets cache", step_load),
    "per_row_ids": ("ids as Python objects per row (before)", step_per_row_ids),
    "stats": ("data stats (load + statistics)", step_stats),
    "import": ("data import generic (JSONL items + CSV interactions)", step_import),
}


def run_step(name: str, root: Path, cache: Path, work: Path) -> dict:
    """One step in a fresh process, with its own `datasets` cache directory."""
    env = {**os.environ, "HF_DATASETS_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, __file__, "--step", name, "--root", str(root), "--work", str(work)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"step {name} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="100k items, 1M interactions")
    parser.add_argument("--root", help="where the generated data goes (default: a folder under the temp dir, reused)")
    parser.add_argument("--step", choices=list(STEPS), help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--skip", nargs="*", default=[], choices=list(STEPS),
                        help="steps to leave out (their rows from an earlier run of the same size are kept, marked)")
    args = parser.parse_args()

    if args.step:  # inside the child process
        import crossrec_peft  # noqa: F401  (imports counted in the baseline, not the step)
        import datasets

        datasets.disable_progress_bars()
        result = STEPS[args.step][1](Path(args.root), Path(args.work))
        result["peak_mb"] = peak_mb()
        print(json.dumps(result))
        return

    size = "small" if args.small else "full"
    num_items, num_inter, num_users = SIZES[size]
    root = Path(args.root) if args.root else Path(tempfile.gettempdir()) / f"crossrec-loader-bench-{size}"
    print(f"generating {num_items:,} items, {num_inter:,} interactions, {num_users:,} users under {root} ...", flush=True)
    info = generate(root, num_items, num_inter, num_users)
    print("  files: " + ", ".join(f"{k} {v / 2**20:,.0f} MB" for k, v in info["bytes"].items()), flush=True)

    rows = []
    earlier_file = RESULTS / f"{name_of(size)}.json"
    earlier = json.loads(earlier_file.read_text())["steps"] if earlier_file.is_file() else []
    with tempfile.TemporaryDirectory(prefix="loader-bench-", dir=root) as tmp:
        tmp = Path(tmp)
        for name, (label, _) in STEPS.items():
            if name in args.skip:
                kept = next((r for r in earlier if r["step"] == name), None)
                if kept:
                    rows.append({**kept, "earlier_run": True})
                continue
            # The import has a cache of its own; the loading steps after load_cold reuse its cache (warm).
            cache = tmp / ("hf-cache-import" if name == "import" else "hf-cache-load")
            print(f"{label} ...", flush=True)
            result = run_step(name, root, cache, tmp)
            result.update(step=name, label=label, rows_per_second=result["rows"] / result["seconds"],
                          step_peak_mb=result["peak_mb"] - result["baseline_mb"])
            rows.append(result)
            print(f"  {result['seconds']:.1f} s, {result['rows_per_second']:,.0f} rows/s, peak RSS {result['peak_mb']:,.0f} MB", flush=True)
            # Written after every step, so that an interrupted run keeps what it measured.
            write_results(name_of(size), {"size": size, "data": info, "steps": rows, "complete": False})

    reference = next((r for r in rows if r["step"] == "per_row_ids"), None)
    print()
    print("| step | rows | seconds | rows/s | peak RSS MB | above baseline MB |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        label = r["label"] + (" (earlier run)" if r.get("earlier_run") else "")
        print(f"| {label} | {r['rows']:,} | {r['seconds']:.1f} | {r['rows_per_second']:,.0f} | {r['peak_mb']:,.0f} | {r['step_peak_mb']:,.0f} |")
    warm = next((r for r in rows if r["step"] == "load_warm"), None)
    if reference and warm:
        print(f"\nload_layout (warm) vs per-row Python ids: {warm['seconds'] / reference['seconds']:.2f}x the time, "
              f"{warm['step_peak_mb'] / reference['step_peak_mb']:.2f}x the memory above baseline")
    write_results(name_of(size), {"size": size, "data": info, "steps": rows, "complete": len(rows) == len(STEPS)})


def name_of(size: str) -> str:
    return "loader" if size == "full" else "loader-small"


if __name__ == "__main__":
    main()
