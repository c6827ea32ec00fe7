"""Content models against the baselines on the real catalogs in ../shared/data (issue 14's benchmark).

Datasets, imported with the project's own importers into --work (kept and reused by later runs):

- `sci`: Amazon Industrial & Scientific (`data import amazon-seq`), item titles;
- `movielens`: MovieLens small (`data import movielens`), titles and genres.

Protocol: leave-one-out (last item = test, second-to-last = validation), full ranking over all items, every
history item masked and a repeated target counted as a miss (`eval.repeats=miss`); the model is the best
epoch on validation; the test split is reported. Systems are the `amazon` recipe (settings chosen on
Scientific's validation split, docs/real-data.md: `side`, titles at 64 tokens, 6 epochs) with one thing
changed: the method on MiniLM and the user encoder, each named in full. They are not each re-tuned by a
sweep.

Results: benchmarks/results/real_data_<dataset>[_<tag>].json, written after every system.

Each system runs in its own process (its peak RSS is its own) with a fresh layer cache, so its cache build is
measured cold and counted in its time to best (benchmarks/_timing.py). The baselines run beside two systems:
popularity, item-kNN, untuned MiniLM and the ID model with the `mean` user encoder (MF over the history)
beside `frozen, mean`; the ID model with the `sasrec` user encoder (SASRec with IDs) beside `frozen, sasrec`.
Backbone-bound systems (`lora`, `bottleneck`, `full`: MiniLM runs forward and backward on every item of every
step; `top`: its tuned top layer does) get --budget seconds of training per epoch, stated in the table; their
quality is then that of a model trained on part of each epoch. With the recipe's shared negatives a step
holds thousands of items (about 6,600 of MovieLens's 9,742), and a backbone-bound system holds the
activations of all of them: `lora` on MovieLens needs more than 24 GB.

    python benchmarks/real_data.py                                  # both datasets, the cached systems
    python benchmarks/real_data.py --datasets movielens --systems "frozen, mean" "frozen, sasrec"
    python benchmarks/real_data.py --systems "lora, sasrec" --budget 120 --epochs 2 --tag bound
    python benchmarks/real_data.py --table benchmarks/results/real_data_*.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"

# name: (importer, source directory, text fields, overrides of the amazon recipe for this dataset)
DATASETS = {
    "sci": ("amazon-seq", SHARED / "amazon-scientific", ["title"], []),
    # 610 users with long histories (median 70 ratings): one window per user and epoch would train on 610
    # windows; 8 windows per user and epoch see most of each history.
    "movielens": ("movielens", SHARED / "movielens-small", ["title", "genres"], ["train.samples_per_user=8"]),
}

ALL_BASELINES = ["untuned", "popularity", "itemknn", "ids"]
# name: (overrides, backbone-bound, baselines run beside it)
SYSTEMS = {
    "frozen, mean": (["model.modalities.text.method={name: frozen}", "model.user_encoder={name: mean}"], False, ALL_BASELINES),
    "frozen, sasrec": (["model.modalities.text.method={name: frozen}"], False, ["ids"]),
    "side, sasrec": (["model.modalities.text.method={name: side}"], False, []),
    # `top` reads the cache below its tuned layer, but runs that layer forward and backward on every item of
    # every step (thousands of titles with the shared negatives), so it gets the budget too.
    "top k=1 lora, sasrec": (["model.modalities.text.method={name: top, k: 1, tune: lora}"], True, []),
    "lora, sasrec": (["model.modalities.text.method={name: lora}"], True, []),
    "bottleneck, sasrec": (["model.modalities.text.method={name: bottleneck}"], True, []),
    "full, sasrec": (["model.modalities.text.method={name: full}"], True, []),
}
DEFAULT_SYSTEMS = ["frozen, mean", "frozen, sasrec", "side, sasrec"]
# Which ID model a host's `ids` baseline is: it trains with the host's user encoder.
ID_MODEL = {"frozen, mean": "ID model (MF)", "frozen, sasrec": "ID model (SASRec)"}
BASELINE_NAMES = {"untuned": "untuned MiniLM", "popularity": "popularity", "itemknn": "item-kNN"}


def import_dataset(name: str, work: Path) -> Path:
    importer, source, _, _ = DATASETS[name]
    out = work / name
    if (out / "import_report.json").exists():
        return out
    if not source.exists():
        raise SystemExit(f"{name}: {source} is not there (../shared/data beside the checkout); leave it out with --datasets")
    print(f"importing {name} from {source}", flush=True)
    subprocess.run([sys.executable, "-m", "crossrec_peft", "data", "import", importer, str(source), "--out", str(out)], check=True)
    return out


def config_for(dataset: str, path: Path, system: str, epochs: int | None, extra: list[str]) -> dict:
    from omegaconf import OmegaConf

    from crossrec_peft import recipes
    from crossrec_peft.config import load_config

    _, _, fields, dataset_overrides = DATASETS[dataset]
    overrides, _, baselines = SYSTEMS[system]
    overrides = [
        f"data.path={path}", f"model.modalities.text.fields=[{','.join(fields)}]", f"eval.baselines=[{','.join(baselines)}]",
        *dataset_overrides, *overrides, *([f"train.epochs={epochs}"] if epochs else []), *extra,
    ]
    return OmegaConf.to_container(load_config(recipes.path("amazon"), overrides, name="amazon"))


# -- one system, in its own process -----------------------------------------------------------------------
def child(spec: dict) -> dict:
    from _timing import timed_run

    from crossrec_peft.config import load_config

    raw = spec["config"]
    raw["data"]["cache_dir"] = spec["cache_dir"]
    report, timing = timed_run(load_config(raw), Path(spec["run_dir"]), budget=spec["budget"])
    cold = report["cold_start"]["metrics"]
    rows = {}
    for system, metrics in report["metrics"].items():
        rows[system] = {
            "ndcg@10": metrics["ndcg@10"], "recall@10": metrics["recall@10"], "mrr@10": metrics["mrr@10"],
            "cold_ndcg@10": cold[system]["ndcg@10"] if system in cold else None,
            "val_ndcg@10": report["validation"].get(system, {}).get("ndcg@10"),
        }
    hybrid = rows.pop("hybrid", None)  # the recipe's hybrid (hybrid.enabled): this system plus item co-occurrence
    if hybrid is not None:
        hybrid["weight"] = report["hybrid"]["weight"]
        hybrid["borrow_weight"] = report["hybrid"].get("borrow_weight", 0.0)
        hybrid["decay"] = report["hybrid"].get("decay", 1.0)
    return {
        "model": {**rows.pop("model"), **timing, "trainable": report["params"]["trainable"], "adapter_bytes": report["adapter_bytes"],
                  "run_s": report["total_seconds"], "train_s": report["train_seconds"], "hybrid": hybrid},
        "baselines": rows,
        "cold_cases": report["cold_start"]["cases"],
        "test_cases": report["data"].get("users"),
    }


# -- the table ----------------------------------------------------------------------------------------------
def baseline_rows(result: dict) -> dict[str, dict]:
    """The baselines of every host system, named for the table (the two ID models apart)."""
    out = {}
    for system, r in result["systems"].items():
        for name, metrics in r["baselines"].items():
            label = ID_MODEL.get(system, "ID model") if name == "ids" else BASELINE_NAMES.get(name, name)
            out[label] = metrics
    return out


def targets(dataset: str, result: dict) -> list[dict]:
    out = []

    def add(name, value, goal, met):
        out.append({"target": name, "measured": value, "goal": goal, "met": bool(met)})

    models = result["systems"]
    base = baseline_rows(result)
    if not models:
        return out
    best_name = max(models, key=lambda s: models[s]["model"]["val_ndcg@10"])  # chosen on validation
    best = models[best_name]["model"]
    if dataset == "sci":
        add(f"best on validation ({best_name}): test NDCG@10", f"{best['ndcg@10']:.4f}", ">= 0.060", best["ndcg@10"] >= 0.060)
        for label, factor, goal in (("untuned MiniLM", 1.5, ">= 1.5x"), ("item-kNN", 1.15, ">= 1.15x")):
            if label in base:
                r = best["ndcg@10"] / base[label]["ndcg@10"]
                add(f"{best_name} vs {label}", f"{r:.2f}x", goal, r >= factor)
        if "untuned MiniLM" in base:
            u = base["untuned MiniLM"]["cold_ndcg@10"]
            add(f"{best_name}: cold-start NDCG@10 vs untuned", f"{best['cold_ndcg@10']:.4f} vs {u:.4f}", "higher", best["cold_ndcg@10"] > u)
        hybrid = best.get("hybrid")
        if hybrid:  # not a content model alone: reported beside the targets, not in their place
            add(f"{best_name} + item co-occurrence (hybrid): test NDCG@10", f"{hybrid['ndcg@10']:.4f}", ">= 0.060", hybrid["ndcg@10"] >= 0.060)
            if "untuned MiniLM" in base:
                add(f"{best_name} + item co-occurrence (hybrid): cold-start NDCG@10 vs untuned",
                    f"{hybrid['cold_ndcg@10']:.4f} vs {u:.4f}", "higher", hybrid["cold_ndcg@10"] > u)
    if dataset == "movielens" and base:
        top_base = max(base, key=lambda b: base[b]["ndcg@10"])
        add(f"{best_name} vs the best baseline ({top_base})", f"{best['ndcg@10']:.4f} vs {base[top_base]['ndcg@10']:.4f}", "higher",
            best["ndcg@10"] > base[top_base]["ndcg@10"])
    for id_model in [b for b in base if b.startswith("ID model")]:
        worst = min(models, key=lambda s: models[s]["model"]["cold_ndcg@10"])
        w, i = models[worst]["model"]["cold_ndcg@10"], base[id_model]["cold_ndcg@10"]
        add(f"every content system vs {id_model} on cold-start (lowest: {worst})", f"{w:.4f} vs {i:.4f}", "higher", w > i)
    return out


def _borrowing(hybrid: dict) -> str:
    """The label's borrowing and recency part: what items never bought in training borrow, and the decay of the
    history items' weights (each absent in results from before it)."""
    weight, decay = hybrid.get("borrow_weight") or 0, hybrid.get("decay", 1.0)
    return (f", never-bought items borrowing x{weight:g}" if weight else "") + (f", recency decay {decay:g}" if decay < 1 else "")


def markdown(dataset: str, result: dict, budget: float) -> str:
    lines = [
        f"{dataset}: {result.get('test_cases') or '?'} test cases, {result.get('cold_cases') or '?'} cold-start "
        "(target with at most 5 training interactions)",
        "",
        "| system | NDCG@10 | Recall@10 | MRR@10 | cold-start NDCG@10 | val NDCG@10 | trainable | adapter KB | cache s | s/epoch | to best s | run s | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def num(v, f=".4f"):
        return "" if v is None else format(v, f)

    for name, r in result["systems"].items():
        m = r["model"]
        star = "*" if m["extrapolated"] else ""
        lines.append(
            f"| {name} | {num(m['ndcg@10'])} | {num(m['recall@10'])} | {num(m['mrr@10'])} | {num(m['cold_ndcg@10'])} | {num(m['val_ndcg@10'])} | "
            f"{m['trainable']:,} | {m['adapter_bytes'] / 1024:,.0f} | {m['cache_s']:.0f} | {m['epoch_s']:.1f}{star} | {m['to_best_s']:.0f} | "
            f"{m['run_s']:.0f} | {m['peak_rss_mb']:.0f} |"
        )
        h = m.get("hybrid")
        if h:
            lines.append(
                f"| {name} + item co-occurrence (hybrid, weight {h['weight']:g}{_borrowing(h)} chosen on validation) | {num(h['ndcg@10'])} | "
                f"{num(h['recall@10'])} | {num(h['mrr@10'])} | {num(h['cold_ndcg@10'])} | {num(h['val_ndcg@10'])} | | | | | | | |"
            )
    for name, b in baseline_rows(result).items():
        lines.append(
            f"| {name} | {num(b['ndcg@10'])} | {num(b['recall@10'])} | {num(b['mrr@10'])} | {num(b['cold_ndcg@10'])} | {num(b['val_ndcg@10'])} "
            "| | | | | | | |"
        )
    if any(r["model"]["extrapolated"] for r in result["systems"].values()):
        lines.append(f"\n\\* stopped by the {budget:g} s per-epoch training budget; s/epoch extrapolated from the batches done.")
    checks = targets(dataset, result)
    if checks:
        lines += ["", "| target | measured | goal | met? |", "|---|---|---|---|"]
        lines += [f"| {c['target']} | {c['measured']} | {c['goal']} | {'met' if c['met'] else 'missed'} |" for c in checks]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--systems", nargs="+", default=DEFAULT_SYSTEMS, metavar="SYSTEM", help="any of: " + "; ".join(SYSTEMS))
    parser.add_argument("--epochs", type=int, help="training epochs (default: the amazon recipe's)")
    parser.add_argument("--budget", type=float, default=120, help="seconds of training per epoch for backbone-bound systems")
    parser.add_argument("--tag", default="", help="appended to the results files' names (runs of other systems kept apart)")
    parser.add_argument("--work", help="where the imported datasets are kept between runs (default: a temporary directory)")
    parser.add_argument("--table", nargs="+", metavar="JSON", help="print the tables of earlier runs' results JSON files and exit")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="key=value overrides for every system")
    args = parser.parse_args()
    if args.child:
        from _timing import run_child

        run_child(args.child, child)
        return
    if args.table:
        for table in args.table:
            saved = json.loads(Path(table).read_text())
            for dataset, result in saved["datasets"].items():
                print(markdown(dataset, result, saved["budget_s"]) + "\n")
        return
    unknown = [s for s in args.systems if s not in SYSTEMS]
    if unknown:
        sys.exit(f"unknown systems: {unknown}; known: {list(SYSTEMS)}")

    from _results import write_results

    results: dict[str, dict] = {d: {"systems": {}, "failed": {}} for d in args.datasets}

    def save(dataset: str, done: bool) -> None:  # after every system: a crash or a kill keeps what was measured
        write_results(f"real_data_{dataset}" + (f"_{args.tag}" if args.tag else ""), {
            "budget_s": args.budget, "epochs": args.epochs, "overrides": args.overrides, "protocol": "leave-one-out, full ranking, repeats as misses",
            "complete": done and not results[dataset]["failed"], "datasets": {dataset: results[dataset]},
            "note": "one process per system, one after another, on a 2-core machine",
        })

    with tempfile.TemporaryDirectory() as tmp:
        tmp, work = Path(tmp), Path(args.work) if args.work else Path(tmp) / "data"
        for dataset in args.datasets:
            path = import_dataset(dataset, work)
            for system in args.systems:
                slug = f"{dataset}-" + "".join(c if c.isalnum() else "_" for c in system)
                bound = SYSTEMS[system][1]
                spec = {
                    "config": config_for(dataset, path, system, args.epochs, args.overrides), "budget": args.budget if bound else 0,
                    "cache_dir": str(tmp / f"cache-{slug}"), "run_dir": str(tmp / f"run-{slug}"), "out": str(tmp / f"{slug}.json"),
                }
                (tmp / f"{slug}.spec.json").write_text(json.dumps(spec))
                print(f"== {dataset}: {system}", flush=True)
                started = time.perf_counter()
                run = subprocess.run([sys.executable, __file__, "--child", str(tmp / f"{slug}.spec.json")])
                if run.returncode != 0:
                    results[dataset]["failed"][system] = f"exit status {run.returncode}"
                    print(f"   failed: exit status {run.returncode} (the others still run)", flush=True)
                    continue
                out = json.loads(Path(spec["out"]).read_text())
                out["model"]["process_s"] = time.perf_counter() - started
                results[dataset]["systems"][system] = out
                results[dataset].update(test_cases=out["test_cases"], cold_cases=out["cold_cases"])
                m = out["model"]
                print(f"   {m['process_s']:.0f} s: test NDCG@10 {m['ndcg@10']:.4f} (validation {m['val_ndcg@10']:.4f}, "
                      f"best epoch {m['best_epoch']}), cold-start {m['cold_ndcg@10']:.4f}", flush=True)
                save(dataset, done=False)
            print("\n" + markdown(dataset, results[dataset], args.budget) + "\n", flush=True)
            save(dataset, done=True)
    if any(r["failed"] for r in results.values()):
        sys.exit("failed systems: " + json.dumps({d: r["failed"] for d, r in results.items() if r["failed"]}))


if __name__ == "__main__":
    main()
