"""A PEFT method the core does not know, end to end: LoHa through peft, shipped as a third-party plugin (a
real distribution declaring one module under the `crossrec_peft.plugins` entry point). The module is the
whole plugin: its options dataclass, a `PeftMethod` subclass and one registration line. It trains through
the ordinary run, exports, reloads with `load_package`, and serves in a `Recommender` beside a LoRA domain on
the same backbone, giving the same scores in a mixed batch as each package alone. docs/plugins.md walks
through this module."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
import torch
from omegaconf import OmegaConf

from crossrec_peft import Recommender, registry
from crossrec_peft.config import load_config
from crossrec_peft.index import load_catalog
from crossrec_peft.package import load_package
from crossrec_peft.pipeline import run
from tests._packages import make_package, text_config
from tests.conftest import small_layout

# The plugin module, exactly as docs/plugins.md shows it.
PLUGIN = '''
from dataclasses import dataclass
from typing import List, Optional

from crossrec_peft.methods.peft_methods import PeftMethod
from crossrec_peft.registry import methods


@dataclass
class LoHaOptions:
    r: int = 4
    alpha: int = 8
    target_modules: Optional[List[str]] = None  # null: the architecture's LoRA targets

    def check(self):
        return None if self.r > 0 else f"r must be positive, got {self.r}."


@methods.register("loha", options=LoHaOptions)
class LoHa(PeftMethod):
    """LoHa (Hyeon-Woo et al., 2022) through peft: a Hadamard product of two low-rank updates."""

    def peft_config(self, backbone):
        from peft import LoHaConfig

        o = self.options
        targets = self._targets(backbone, o.target_modules, "lora_targets")
        return LoHaConfig(r=o.r, alpha=o.alpha, target_modules=targets)
'''


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    (root / "crossrec_loha.py").write_text(textwrap.dedent(PLUGIN))
    dist = root / "crossrec_loha-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: crossrec-loha\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[crossrec_peft.plugins]\nloha = crossrec_loha\n")
    sys.path.insert(0, str(root))
    try:
        yield root
    finally:
        sys.path.remove(str(root))
        registry.methods._entries.pop("loha", None)
        registry._loaded_plugins.discard("loha=crossrec_loha")
        sys.modules.pop("crossrec_loha", None)


@pytest.fixture(scope="module")
def trained(plugin, tiny_bert, tmp_path_factory):
    """A LoHa domain trained by the ordinary run on a small layout, and a LoRA package on the same data."""
    root = tmp_path_factory.mktemp("loha")
    data = small_layout(root / "data", num_items=30, num_users=24, length=6)
    raw = OmegaConf.to_container(text_config(tiny_bert, "crafts", "lora", data=data))
    raw["model"]["modalities"]["text"]["method"] = {"name": "loha", "r": 4}  # unknown to the core: the plugin loads
    raw["domain"] = "ecommerce"
    raw["train"].update(epochs=2, batch_size=8, eval_batch_size=32, lr=0.02)  # a visible LoHa update in 2 epochs
    raw["eval"]["baselines"] = ["popularity"]
    cfg = load_config(raw)
    report = run(cfg, root / "run", progress=False, summary=False)
    lora = make_package(tiny_bert, root / "pk", "shop", "lora", seed=3, data=data)
    return root / "run" / "adapter", lora, data, report


def _alone(package, data, history, candidates) -> torch.Tensor:
    model, _ = load_package(package)
    catalog = load_catalog(data)
    ids = history + candidates
    with torch.no_grad():
        content = model.encode_content(model.collate_items(model.featurize(catalog.columns(["title", "category"], catalog.lookup(ids))), torch.arange(len(ids))))
        user = model.user_vectors(content[: len(history)].unsqueeze(0), torch.ones(1, len(history), dtype=torch.bool))[0]
        return model.item_vectors(content[len(history):]) @ user


def test_plugin_method_trains_and_exports_peft_files(trained):
    package, _, _, report = trained
    assert "loha" in registry.methods.names()
    config = json.loads((package / "adapter_config.json").read_text())
    assert config["peft_type"] == "LOHA" and sorted(config["target_modules"]) == ["query", "value"]
    manifest = json.loads((package / "crossrec.json").read_text())
    assert manifest["modalities"]["text"]["method"]["name"] == "loha" and manifest["modalities"]["text"]["storage"] == "peft"
    # 2 layers x (query, value) x LoHa's 4 factors (hada_w1_a/b, hada_w2_a/b) of rank 4 over width 32.
    from safetensors.torch import load_file

    weights = load_file(str(package / "adapter_model.safetensors"))
    assert len(weights) == 2 * 2 * 4 and all("hada_w" in k for k in weights)
    assert report["params"]["trainable"] > 0 and "model" in report["metrics"]


def test_plugin_method_reloads_and_changes_the_backbone(trained):
    package, _, data, _ = trained
    model, _ = load_package(package)
    assert type(model.modalities["text"].method).__name__ == "LoHa"
    history, candidates = ["i1", "i2", "i3"], ["i4", "i5", "i6", "i7", "i8"]
    loaded = _alone(package, data, history, candidates)
    # The trained LoHa update really changes the encoder: with it disabled the scores move.
    peft_model = model.modalities["text"].backbone.model
    with peft_model.disable_adapter():
        catalog = load_catalog(data)
        ids = history + candidates
        with torch.no_grad():
            content = model.encode_content(model.collate_items(model.featurize(catalog.columns(["title", "category"], catalog.lookup(ids))), torch.arange(len(ids))))
            user = model.user_vectors(content[:3].unsqueeze(0), torch.ones(1, 3, dtype=torch.bool))[0]
            bare = model.item_vectors(content[3:]) @ user
    assert (loaded - bare).abs().max() > 2e-4  # measured 7e-4 (seeded run)
    deltas = [m.get_delta_weight("default").norm() for n, m in peft_model.named_modules() if n.endswith(("query", "value")) and hasattr(m, "get_delta_weight")]
    assert len(deltas) == 4 and all(d > 0 for d in deltas)  # every adapted layer trained (LoHa starts at zero)


def test_plugin_method_serves_beside_lora_on_one_backbone(trained):
    package, lora, data, _ = trained
    rec = Recommender(device="cpu")
    rec.load_adapter(lora)
    rec.load_adapter(package, name="crafts")
    shared = rec._domains["crafts"].shared["text"]
    assert shared is rec._domains["shop"].shared["text"] and len(rec._backbones) == 1
    assert rec.own_backbones("crafts") == {} and shared.domains == ["shop", "crafts"]
    histories = [["i1", "i2"], ["i3", "i4", "i5"], ["i6"], ["i7", "i8"]]
    domains = ["crafts", "shop", "crafts", "shop"]
    candidates = ["i0", "i9", "i10", "i11", "i12"]
    mixed = rec.score(histories, candidates, domains=domains)
    for row, (history, domain) in enumerate(zip(histories, domains)):
        expected = _alone(package if domain == "crafts" else lora, data, history, candidates)
        assert torch.allclose(mixed[row], expected, atol=1e-5), (domain, mixed[row], expected)
    # Each row really went through its own domain's adapter.
    swapped = rec.score(histories, candidates, domains=["shop", "crafts", "shop", "crafts"])
    assert (swapped - mixed).abs().max() > 1e-3
