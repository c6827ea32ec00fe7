"""Image towers side by side: the tiny CLIP trained from scratch vs the bundled ImageNet EfficientNet-Lite0
(frozen, LoRA, bottleneck, full, side), in one run on the same machine.

1. Cost (always): per tower, in a fresh subprocess each (so peak RSS is that tower's own): encoding
   throughput (forward, no gradient), training-step throughput (forward + backward + AdamW step on a batch of
   demo images), peak RSS, trainable parameters and adapter bytes (the trainable tensors in float32: what a
   package stores for that tower). `side` trains beside the tower on its cached stage states: its encoding
   is the pass that fills the cache (every stage's pooled state), its step the side network's alone.
2. Features (always): leave-one-out 1-NN accuracy of frozen pooled features on 100 demo renderings for
   colour, pattern and shape, converted Lite0 weights vs the same architecture with random weights (the
   functional check of the weight conversion, tests/backbones/test_timm.py, measured).
3. Quality (--quality): image-only and text+image NDCG@10 on the e-commerce demo, every system trained by the
   recipe on the same catalog and split, only the image tower changing.

The machine is shared and noisy (2 cores, several sessions): compare the ratios within one run, not absolute
numbers across runs. Prints tables and writes benchmarks/results/image_towers.json (or `--results NAME`).

    python benchmarks/image_towers.py [--image-size 64] [--batch 32] [--quality] [--items 800 --users 1200 --epochs 2]
        [--quality-towers TOWER ...] [--results NAME]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _results import write_results

TOWERS = {
    "clip-scratch (full)": ({"name": "openclip:crossrec-tiny-vit", "tower": "image"}, {"name": "full"}),
    "lite0 frozen": ({"name": "effnet-lite0"}, {"name": "frozen"}),
    "lite0 lora r8 (stages 5-6)": ({"name": "effnet-lite0"}, {"name": "lora", "r": 8, "layers": [5, 6]}),
    "lite0 lora r8 (all)": ({"name": "effnet-lite0"}, {"name": "lora", "r": 8}),
    "lite0 bottleneck (stages 5-6)": ({"name": "effnet-lite0"}, {"name": "bottleneck", "size": 32, "points": ["stage5", "stage6"]}),
    "lite0 full": ({"name": "effnet-lite0"}, {"name": "full"}),
    "lite0 side": ({"name": "effnet-lite0"}, {"name": "side"}),
}


def demo_images(directory: Path, count: int) -> tuple[list[str], list[tuple[str, str, str]]]:
    from crossrec_peft.data.demo.images import PATTERNS, RGB, SHAPES, render

    combos = list(itertools.product(list(RGB), PATTERNS, SHAPES))
    random.Random(0).shuffle(combos)
    combos = (combos * (count // len(combos) + 1))[:count]
    names = []
    for i, (color, pattern, shape) in enumerate(combos):
        render(directory / f"{i}.png", color=color, pattern=pattern, shape=shape)
        names.append(f"{i}.png")
    return names, combos


def backbone_for(spec: dict, image_size: int):
    from crossrec_peft import registry
    from crossrec_peft.config import component

    spec = dict(spec)
    if spec["name"] == "effnet-lite0" or spec["name"].startswith("timm:"):
        spec["image_size"] = image_size
    entry, argument, options = component(registry.backbones, spec, "backbone")
    return entry.factory(options, argument)


def measure_one(label: str, image_size: int, batch: int, repeats: int) -> dict:
    """Runs in its own process: one tower's cost."""
    import torch

    from crossrec_peft import registry
    from crossrec_peft.backbones.base import FeatureContext
    from crossrec_peft.config import component
    from crossrec_peft.methods.base import count_parameters

    torch.manual_seed(0)
    backbone_spec, method_spec = TOWERS[label]
    backbone = backbone_for(backbone_spec, image_size)
    entry, _, options = component(registry.methods, method_spec, "method")
    method = entry.factory(options)
    method.attach(backbone)
    # A method with a network beside the tower (`side`) trains that network on the cached stage states.
    beside = method.module(backbone) if callable(getattr(method, "module", None)) else None
    trainable, total = count_parameters(beside if beside is not None else backbone)
    total += 0 if beside is None else count_parameters(backbone)[1]
    with tempfile.TemporaryDirectory() as tmp:
        names, _ = demo_images(Path(tmp), batch)
        features = backbone.featurize([names], FeatureContext(item_ids=names, root=Path(tmp)))
        pixels = backbone.collate(features, torch.arange(batch))["pixel_values"]
    encode_once = (lambda: backbone.layer_states(pixel_values=pixels)) if beside is not None else (lambda: backbone(pixel_values=pixels))
    backbone.eval()
    with torch.no_grad():
        encode_once()
        started = time.perf_counter()
        for _ in range(repeats):
            encoded = encode_once()
        encode = batch * repeats / (time.perf_counter() - started)
    out = encoded[0] if beside is not None else encoded
    step = None
    if beside is not None:
        states = torch.cat(encoded[1], dim=-1)
        forward = lambda: beside(out, states)  # noqa: E731  (the cached rows: the tower does not run)
        module = beside
    else:
        forward = lambda: backbone(pixel_values=pixels)  # noqa: E731
        module = backbone
    params = [p for p in module.parameters() if p.requires_grad]
    if params:
        module.train()
        optimizer = torch.optim.AdamW(params, lr=1e-4)
        target = torch.randn(batch, out.shape[-1])

        def train_step():
            optimizer.zero_grad()
            loss = ((forward() - target) ** 2).mean()
            loss.backward()
            optimizer.step()

        train_step()
        started = time.perf_counter()
        for _ in range(repeats):
            train_step()
        step = batch * repeats / (time.perf_counter() - started)
    return {
        "tower": label, "image_size": image_size if "lite0" in label else 32, "encode_images_per_s": encode,
        "train_images_per_s": step, "trainable_parameters": trainable, "total_parameters": total,
        "adapter_bytes": 4 * trainable, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "output_dim": int(out.shape[-1]),
    }


def knn_accuracy(features, labels: list[str]) -> float:
    import torch

    x = torch.nn.functional.normalize(features - features.mean(0), dim=1)
    nearest = (x @ x.T).fill_diagonal_(-2.0).argmax(1).tolist()
    return sum(labels[i] == labels[j] for i, j in enumerate(nearest)) / len(labels)


def feature_check(image_size: int) -> list[dict]:
    import torch

    from crossrec_peft.backbones.base import FeatureContext
    from crossrec_peft.backbones.timm_towers import TimmBackbone, TimmOptions

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        names, combos = demo_images(Path(tmp), 100)
        encoded = {}
        for label, backbone in (("converted Lite0", backbone_for({"name": "effnet-lite0"}, image_size)),
                                ("random Lite0", TimmBackbone("tf_efficientnet_lite0", TimmOptions(image_size=image_size)))):
            batch = backbone.collate(backbone.featurize([names], FeatureContext(item_ids=names, root=Path(tmp))), torch.arange(len(names)))
            with torch.no_grad():
                encoded[label] = backbone(batch["pixel_values"])
    for attribute, column in (("colour", 0), ("pattern", 1), ("shape", 2)):
        labels = [c[column] for c in combos]
        rows.append({"attribute": attribute, **{k: knn_accuracy(v, labels) for k, v in encoded.items()}})
    return rows


def quality(args) -> list[dict]:
    from omegaconf import OmegaConf

    from crossrec_peft import recipes
    from crossrec_peft.config import load_config
    from crossrec_peft.pipeline import run

    base = [f"data.num_items={args.items}", f"data.num_users={args.users}", f"train.epochs={args.epochs}", "export.enabled=false"]
    recipe = load_config(recipes.path("ecommerce"), base)
    text = OmegaConf.to_container(recipe.model.modalities["text"])
    towers = [t for t in TOWERS if t in args.quality_towers] if args.quality_towers else list(TOWERS)
    systems = [("text only", None)]
    systems += [(f"image only: {t}", t) for t in towers]
    systems += [(f"text+image: {t}", t) for t in towers]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, tower in systems:
            modalities = {} if label.startswith("image only") else {"text": text}
            if tower is not None:
                backbone, method = TOWERS[tower]
                backbone = dict(backbone, **({"image_size": args.image_size} if "lite0" in tower else {}))
                modalities["image"] = {"fields": ["image"], "backbone": backbone, "method": method}
            raw = OmegaConf.to_container(recipe)
            raw["model"]["modalities"] = modalities
            if len(modalities) == 1:
                raw["model"]["fusion"] = {"name": "mean"}
            print(f"== {label}", flush=True)
            report = run(load_config(raw), Path(tmp) / str(len(rows)), progress=False, summary=False)
            m = report["metrics"]["model"]
            rows.append({"system": label, "ndcg@10": m["ndcg@10"], "recall@10": m["recall@10"],
                         "popularity_ndcg@10": report["metrics"]["popularity"]["ndcg@10"],
                         "train_seconds": report["train_seconds"], "best_epoch": report["best_epoch"]})
            print(f"   NDCG@10 {m['ndcg@10']:.4f}  ({report['train_seconds']:.0f} s)", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--image-size", type=int, default=64, help="Lite0 input size (the tiny CLIP is 32 px)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quality", action="store_true", help="also train on the demo (minutes per system)")
    parser.add_argument("--quality-towers", nargs="*", help="towers for the quality runs (default: all)")
    parser.add_argument("--items", type=int, default=800)
    parser.add_argument("--users", type=int, default=1200)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--results", default="image_towers", help="benchmarks/results/<NAME>.json")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one tower in this process
    args = parser.parse_args()

    from crossrec_peft.pipeline import quiet_libraries

    quiet_libraries()
    if args.one:
        print(json.dumps(measure_one(args.one, args.image_size, args.batch, args.repeats)))
        return
    import torch

    results: dict = {"threads": torch.get_num_threads(), "cpus": os.cpu_count(), "load_average_start": os.getloadavg()[0],
                     "image_size": args.image_size, "batch": args.batch}
    cost = []
    for label in TOWERS:
        out = subprocess.run([sys.executable, __file__, "--one", label, "--image-size", str(args.image_size),
                              "--batch", str(args.batch), "--repeats", str(args.repeats)],
                             capture_output=True, text=True, check=True)
        cost.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"measured {label}", flush=True)
    results["cost"] = cost
    print(f"\n{'tower':<32} {'px':>4} {'encode img/s':>12} {'train img/s':>11} {'peak RSS MiB':>12} {'trainable':>10} {'adapter KiB':>11}")
    for r in cost:
        step = f"{r['train_images_per_s']:.0f}" if r["train_images_per_s"] else "-"
        print(f"{r['tower']:<32} {r['image_size']:>4} {r['encode_images_per_s']:>12.0f} {step:>11} {r['peak_rss_mib']:>12.0f} "
              f"{r['trainable_parameters']:>10,} {r['adapter_bytes'] / 1024:>11.0f}")

    results["features"] = feature_check(args.image_size)
    print(f"\n1-NN accuracy on 100 demo renderings at {args.image_size} px (frozen pooled features)")
    print(f"{'attribute':<10} {'converted Lite0':>16} {'random Lite0':>13}")
    for r in results["features"]:
        print(f"{r['attribute']:<10} {r['converted Lite0']:>16.2f} {r['random Lite0']:>13.2f}")

    if args.quality:
        results["quality"] = quality(args)
        results["quality_setup"] = {"items": args.items, "users": args.users, "epochs": args.epochs}
        print(f"\n{'system':<48} {'NDCG@10':>8} {'Recall@10':>9} {'train s':>8}")
        for r in results["quality"]:
            print(f"{r['system']:<48} {r['ndcg@10']:>8.4f} {r['recall@10']:>9.4f} {r['train_seconds']:>8.0f}")
        print(f"popularity NDCG@10: {results['quality'][0]['popularity_ndcg@10']:.4f}")
    results["load_average_end"] = os.getloadavg()[0]
    print(f"\nmachine: {results['cpus']} CPUs, {results['threads']} torch threads, load average "
          f"{results['load_average_start']:.1f} at start, {results['load_average_end']:.1f} at end (shared: compare ratios)")
    write_results(args.results, results)


if __name__ == "__main__":
    main()
