"""Memory and latency of frozen backbones at none / int8 / nf4, side by side in one run.

Each configuration runs in its own process (peak RSS is per process): model weights' memory footprint,
peak resident memory after loading and one forward, and the median forward latency of a batch.
Prints a table and writes benchmarks/results/quantization.json.

    python benchmarks/quantization.py [--batch 64] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from _results import write_results

CONFIGS = [(b, q) for b in ("minilm", "tiny-clip-image") for q in ("none", "int8", "nf4")]


def weights_bytes(module) -> int:
    total = 0
    for t in list(module.parameters()) + list(module.buffers()):
        total += t.numel() * t.element_size()
    return total


def measure(backbone_name: str, mode: str, batch: int, repeats: int) -> dict:
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    import crossrec_peft  # noqa: F401
    from crossrec_peft.backbones.base import FeatureContext
    from crossrec_peft.pipeline import quiet_libraries

    quiet_libraries()
    started = time.perf_counter()
    if backbone_name == "minilm":
        from crossrec_peft.backbones.text import TextBackboneOptions, minilm

        backbone = minilm(TextBackboneOptions(quantize=mode))
        texts = [f"Kavari Eco-Friendly Camping Tent - forest green, ripstop nylon {i}. outdoor" for i in range(batch)]
        inputs = backbone.collate(backbone.featurize([texts], FeatureContext(item_ids=[str(i) for i in range(batch)])), torch.arange(batch))
    else:
        from crossrec_peft.backbones.clip import ClipBackbone, ClipOptions

        backbone = ClipBackbone("crossrec-tiny-vit", ClipOptions(tower="image", quantize=mode))
        inputs = {"pixel_values": torch.randn(batch, 3, 32, 32)}
    load_s = time.perf_counter() - started
    times = []
    with torch.no_grad():
        backbone(**inputs)  # warm-up
        for _ in range(repeats):
            t = time.perf_counter()
            backbone(**inputs)
            times.append(time.perf_counter() - t)
    return {
        "backbone": backbone_name,
        "quantize": mode,
        "weights_mb": weights_bytes(backbone) / 2**20,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "load_s": load_s,
        "forward_ms_median": 1000 * statistics.median(times),
        "batch": batch,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--one", nargs=2, metavar=("BACKBONE", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(*args.one, args.batch, args.repeats)))
        return
    rows = []
    for backbone, mode in CONFIGS:
        out = subprocess.run(
            [sys.executable, __file__, "--one", backbone, mode, "--batch", str(args.batch), "--repeats", str(args.repeats)],
            capture_output=True, text=True, check=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = {r["backbone"]: r for r in rows if r["quantize"] == "none"}
    for r in rows:
        b = base[r["backbone"]]
        r["weights_ratio"] = r["weights_mb"] / b["weights_mb"]
        r["rss_ratio"] = r["peak_rss_mb"] / b["peak_rss_mb"]
        r["latency_ratio"] = r["forward_ms_median"] / b["forward_ms_median"]
    header = f"{'backbone':<16} {'quantize':<8} {'weights MB':>10} {'x':>5} {'peak RSS MB':>11} {'x':>5} {'fwd ms':>8} {'x':>5}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['backbone']:<16} {r['quantize']:<8} {r['weights_mb']:>10.1f} {r['weights_ratio']:>5.2f} "
              f"{r['peak_rss_mb']:>11.0f} {r['rss_ratio']:>5.2f} {r['forward_ms_median']:>8.1f} {r['latency_ratio']:>5.2f}")
    write_results("quantization", {"batch": args.batch, "rows": rows})


if __name__ == "__main__":
    main()
