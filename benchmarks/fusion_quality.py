"""Quality on the e-commerce demo: text-only vs image-only vs text+image with each fusion head, side by side.

Every system is trained by the same recipe (recipes/ecommerce.yaml) on the same demo catalog and evaluated by
full ranking on the same test split; only the modalities and the fusion change. Prints a table and writes
benchmarks/results/fusion_quality.json.

    python benchmarks/fusion_quality.py [--items 1000] [--users 1500] [--epochs 2] [key=value ...]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _results import write_results

FUSIONS = ["concat", "sum", "gated", "attention"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--users", type=int, default=1500)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    from omegaconf import OmegaConf

    import crossrec_peft  # noqa: F401
    from crossrec_peft import recipes
    from crossrec_peft.config import load_config
    from crossrec_peft.pipeline import run

    base = [f"data.num_items={args.items}", f"data.num_users={args.users}", f"train.epochs={args.epochs}", "export.enabled=false", *args.overrides]
    recipe = load_config(recipes.path("ecommerce"), base)
    text = OmegaConf.to_container(recipe.model.modalities["text"])
    image = OmegaConf.to_container(recipe.model.modalities["image"])
    systems = {"text only": ({"text": text}, "mean"), "image only": ({"image": image}, "mean")}
    systems.update({f"text+image {f}": ({"text": text, "image": image}, f) for f in FUSIONS})
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, (modalities, fusion) in systems.items():
            raw = OmegaConf.to_container(recipe)
            raw["model"]["modalities"] = modalities
            raw["model"]["fusion"] = {"name": fusion}
            cfg = load_config(raw)
            print(f"== {label}", flush=True)
            report = run(cfg, Path(tmp) / label.replace(" ", "_"), progress=False, summary=False)
            m = report["metrics"]["model"]
            rows.append({"system": label, "fusion": fusion, "ndcg@10": m["ndcg@10"], "recall@10": m["recall@10"],
                         "untuned_ndcg@10": report["metrics"]["untuned"]["ndcg@10"],
                         "popularity_ndcg@10": report["metrics"]["popularity"]["ndcg@10"],
                         "train_seconds": report["train_seconds"], "best_epoch": report["best_epoch"]})
    text_ndcg = rows[0]["ndcg@10"]
    print(f"\n{'system':<24} {'NDCG@10':>8} {'Recall@10':>9} {'vs text':>8} {'train s':>8}")
    for r in rows:
        r["ndcg_vs_text"] = r["ndcg@10"] / text_ndcg if text_ndcg else float("nan")
        print(f"{r['system']:<24} {r['ndcg@10']:>8.4f} {r['recall@10']:>9.4f} {r['ndcg_vs_text']:>8.2f} {r['train_seconds']:>8.0f}")
    print(f"popularity NDCG@10: {rows[0]['popularity_ndcg@10']:.4f}")
    write_results("fusion_quality", {"rows": rows})


if __name__ == "__main__":
    main()
