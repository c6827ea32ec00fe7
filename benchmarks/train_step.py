"""Where a training step's time goes: one recipe's steps, timed and profiled (issue 14).

Builds the run as `crossrec-peft recipe NAME key=value ...` would (`Recipe.setup`: data, model, layer cache,
loader, optimizer), in a temporary directory and without baselines, hybrid or export, then:

- runs `--warmup` steps as the training loop does (load a batch in this process, forward, loss, backward,
  optimizer step), then times `--steps` more, loading (drawing the sampled negatives, reading the batch's
  cached rows) and stepping apart;
- profiles `--profile` more steps with torch.profiler and ranks the operators by their own CPU time (the
  loading is one record, `enumerate(DataLoader)...`, its numpy work included);
- with `--sasrec-ab ROUNDS`, alternates rounds of 20 steps with the SASRec user tower encoding windows in
  groups of similar width (what it does) and over the whole padded batch (what it did before), loading
  included, and reports the ratio.

Prints both and writes benchmarks/results/train_step_<tag>.json.

    crossrec-peft data import amazon-seq ../shared/data/amazon-scientific --out sci
    python benchmarks/train_step.py amazon data.path=sci data.cache_dir=cache --tag sci
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _results import write_results  # noqa: E402

# Only the training step is measured: nothing else of a run is built.
QUIET = ["eval.baselines=[]", "hybrid.enabled=false", "export.enabled=false"]
AB_STEPS = 20  # steps per round of --sasrec-ab


def endless(loader) -> Iterator[dict]:
    """The loader's batches, epoch after epoch."""
    while True:
        yield from loader


def distinct_items(batch: dict) -> int:
    """How many items a batch encodes (its windows' items and the sampled negatives, each once)."""
    inputs = next(iter(batch["items"].values()))  # the first modality's collated inputs
    return len(next(iter(inputs.values())))


def measure(recipe: str, overrides: list[str], *, timed: int, warmup: int, profiled: int, top: int, sasrec_rounds: int = 0) -> dict:
    from torch.profiler import ProfilerActivity, profile

    from crossrec_peft import recipes
    from crossrec_peft.config import load_config
    from crossrec_peft.recipe_class import Recipe

    source = str(recipes.path(recipe)) if recipe in recipes.names() else recipe
    cfg = load_config(source, [*overrides, *QUIET], name=None)
    with tempfile.TemporaryDirectory() as tmp:
        run = Recipe(cfg, Path(tmp) / "run", progress=False)
        run.setup()
        run.prepared.train()
        batches = endless(run.loader)
        steps = itertools.count(1)

        def loop(n: int) -> tuple[float, float, list[int], float]:
            """n steps as the training loop runs them: each batch loaded in this process, trained on, then
            dropped (holding batches to time the steps apart would slow the loading: each is fresh memory).
            Returns the seconds spent loading, the seconds spent in steps, each batch's distinct items, and
            the share of the batches' window positions that are padding."""
            load = step = 0.0
            sizes, padded, positions = [], 0, 0
            for _ in range(n):
                started = time.perf_counter()
                batch = next(batches)
                loaded = time.perf_counter()
                run.train_step(batch, next(steps))
                load += loaded - started
                step += time.perf_counter() - loaded
                sizes.append(distinct_items(batch))
                padded += int((~batch["sequence_mask"]).sum())
                positions += batch["sequence_mask"].numel()
            return load, step, sizes, padded / max(positions, 1)

        loop(warmup)
        load_s, step_s, items, padded_share = loop(timed)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            loop(profiled)
        width_groups = None
        encoder = run.model.user_encoder
        if sasrec_rounds and hasattr(encoder, "_prefixes"):
            # SASRec encodes a batch's windows in groups cut after their last item (`prefixes`); the whole
            # padded batch at once (`_prefixes`) is what it did before. Alternating rounds of the two share
            # the machine's noise.
            width_groups = {"grouped": [], "whole batch": []}
            for _ in range(sasrec_rounds):
                for name, seconds in width_groups.items():
                    if name == "whole batch":
                        encoder.prefixes = encoder._prefixes
                    load, step, _, _ = loop(AB_STEPS)
                    if name == "whole batch":
                        del encoder.prefixes
                    seconds.append((load + step) / AB_STEPS)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    ops = [
        {"op": e.key, "self_ms_per_step": e.self_cpu_time_total / 1000 / profiled, "share": e.self_cpu_time_total / total, "calls_per_step": e.count / profiled}
        for e in events[:top]
    ]
    return {
        "recipe": recipe, "overrides": overrides, "threads": torch.get_num_threads(),
        "timed_steps": timed, "warmup": warmup, "profiled_steps": profiled,
        "load_s_per_batch": load_s / timed, "step_s": step_s / timed,
        "items_per_batch": {"min": min(items), "max": max(items)},
        "padded_window_positions": padded_share,
        "ops": ops,
        "sasrec_width_groups": None if width_groups is None else {
            "steps_per_round": AB_STEPS, "loop_s_per_step": width_groups,
            "ratio": sum(width_groups["whole batch"]) / sum(width_groups["grouped"]),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", help="a built-in recipe name or a YAML file")
    parser.add_argument("overrides", nargs="*", help="key=value, as for crossrec-peft recipe")
    parser.add_argument("--steps", type=int, default=30, help="steps timed")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--profile", type=int, default=15, dest="profiled")
    parser.add_argument("--top", type=int, default=15, help="operators listed")
    parser.add_argument("--sasrec-ab", type=int, default=0, metavar="ROUNDS",
                        help="then alternate ROUNDS rounds of SASRec in width groups and over the whole padded batch")
    parser.add_argument("--tag", default=None, help="results file suffix (default: the recipe name)")
    args = parser.parse_args()
    if min(args.steps, args.profiled) < 1 or args.warmup < 0:
        parser.error("--steps and --profile must be at least 1, --warmup at least 0")
    result = measure(args.recipe, args.overrides, timed=args.steps, warmup=args.warmup, profiled=args.profiled, top=args.top,
                     sasrec_rounds=args.sasrec_ab)

    from rich.console import Console
    from rich.table import Table

    console = Console()
    items = result["items_per_batch"]
    console.print(
        f"{result['recipe']}: a training step {result['step_s'] * 1000:.0f} ms (mean of {args.steps}), loading a batch "
        f"{result['load_s_per_batch'] * 1000:.0f} ms, {items['min']:,}-{items['max']:,} distinct items per batch; "
        f"{result['padded_window_positions']:.0%} of the windows' positions are padding; {result['threads']} threads"
    )
    table = Table(title=f"operators by own CPU time ({args.profiled} profiled steps)")
    for column in ("operator", "ms per step", "share", "calls per step"):
        table.add_column(column, justify="left" if column == "operator" else "right")
    for op in result["ops"]:
        table.add_row(op["op"], f"{op['self_ms_per_step']:.1f}", f"{op['share']:.1%}", f"{op['calls_per_step']:.0f}")
    console.print(table)
    ab = result["sasrec_width_groups"]
    if ab is not None:
        times = ab["loop_s_per_step"]
        console.print(
            f"SASRec over width groups: {sum(times['grouped']) / len(times['grouped']) * 1000:.0f} ms per step (loading "
            f"included), over the whole padded batch {sum(times['whole batch']) / len(times['whole batch']) * 1000:.0f} ms: "
            f"{ab['ratio']:.2f}x ({len(times['grouped'])} alternating rounds of {ab['steps_per_round']} steps)"
        )
    write_results(f"train_step_{args.tag or Path(args.recipe).stem}", result)


if __name__ == "__main__":
    main()
