"""Trainable share and adapter bytes per method x backbone, side by side in one run.

For each (backbone, method) a one-modality two-tower model is built, its trainable parameters counted, and
its adapter package exported to a temporary directory to measure the weight files on disk.
Prints a table and writes benchmarks/results/parameters.json.

    python benchmarks/parameters.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from _results import write_results

BACKBONES = {
    "minilm": {"name": "minilm"},
    "tiny-clip-image": {"name": "openclip:crossrec-tiny-vit", "tower": "image"},
}
METHODS = {
    "frozen": {"name": "frozen"},
    "lora r=8": {"name": "lora", "r": 8},
    "ia3": {"name": "ia3"},
    "bottleneck houlsby": {"name": "bottleneck", "kind": "houlsby"},
    "bottleneck pfeiffer": {"name": "bottleneck", "kind": "pfeiffer"},
    "full": {"name": "full"},
}


def main() -> None:
    from omegaconf import OmegaConf

    import crossrec_peft  # noqa: F401
    from crossrec_peft import recipes, registry
    from crossrec_peft.config import load_config
    from crossrec_peft.methods.base import count_parameters
    from crossrec_peft.model import build_model
    from crossrec_peft.package import export_package
    from crossrec_peft.pipeline import quiet_libraries

    quiet_libraries()
    rows = []
    for b_label, backbone in BACKBONES.items():
        for m_label, method in METHODS.items():
            if method["name"] not in registry.methods.names():
                continue
            fields = ["image"] if backbone["name"].startswith("openclip") else ["title"]
            raw = OmegaConf.to_container(load_config(recipes.path("ecommerce")))
            raw["model"]["modalities"] = {"only": {"fields": fields, "backbone": backbone, "method": method}}
            raw["model"]["fusion"] = {"name": "mean"}
            cfg = load_config(raw)
            model = build_model(cfg.model)
            trainable, total = count_parameters(model)
            backbone_trainable, backbone_total = count_parameters(model.modalities["only"].backbone)
            with tempfile.TemporaryDirectory() as tmp:
                package = export_package(model, cfg, Path(tmp) / "pkg")
                files = {p.name: p.stat().st_size for p in package.rglob("*.safetensors")}
            rows.append({
                "backbone": b_label, "method": m_label, "trainable": trainable, "total": total,
                "share": trainable / total, "backbone_trainable": backbone_trainable, "backbone_total": backbone_total,
                "adapter_bytes": sum(files.values()), "files": files,
            })
    header = f"{'backbone':<16} {'method':<20} {'trainable':>10} {'share %':>8} {'in backbone':>11} {'adapter KB':>10}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['backbone']:<16} {r['method']:<20} {r['trainable']:>10,} {100 * r['share']:>8.3f} {r['backbone_trainable']:>11,} {r['adapter_bytes'] / 1024:>10.1f}")
    write_results("parameters", {"rows": rows})


if __name__ == "__main__":
    main()
