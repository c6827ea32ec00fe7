"""Hugging Face text backbones: offline loading from a local directory, pooling, item text checks, quantization."""

from __future__ import annotations

import re

import pytest
import torch

from crossrec_peft.backbones.text import TextBackbone, TextBackboneOptions, minilm
from crossrec_peft.data import load_layout
from crossrec_peft.errors import ConfigError, DataError
from tests.conftest import write_jsonl


def test_local_directory_loads_offline_and_pools(tiny_bert):
    mean = TextBackbone(str(tiny_bert), model_id="tiny", options=TextBackboneOptions(pooling="mean"))
    cls = TextBackbone(str(tiny_bert), model_id="tiny", options=TextBackboneOptions(pooling="cls"))
    assert mean.hidden_size == 32 and mean.model_type == "bert" and mean.arch.lora_targets == ("query", "value")
    assert mean.model.pooler is None  # we pool ourselves
    feats = mean.featurize([["red lamp", "a much longer blue desk title"]], ctx(2))
    batch = mean.collate(feats, torch.arange(2))
    assert batch["input_ids"].shape[1] == int(feats["attention_mask"].sum(1).max())  # padding trimmed
    with torch.no_grad():
        hidden = mean.model(**batch).last_hidden_state
        m = mean(**batch)
        c = cls(**batch)
    mask = batch["attention_mask"][0].bool()
    assert torch.allclose(m[0], hidden[0][mask].mean(0), atol=1e-6)
    assert torch.allclose(c[0], hidden[0, 0], atol=1e-6)
    assert all(not p.requires_grad for p in mean.parameters())


def ctx(n):
    from crossrec_peft.backbones.base import FeatureContext

    return FeatureContext(item_ids=[f"i{i}" for i in range(n)])


def test_item_without_text_is_named_with_its_line(tmp_path, tiny_bert):
    write_jsonl(tmp_path / "items.jsonl", [{"item_id": f"i{i}", "title": "" if i == 2 else "x", "category": None} for i in range(4)])
    write_jsonl(tmp_path / "interactions.jsonl", [{"user_id": "u", "item_id": f"i{i}"} for i in range(4)])
    data = load_layout(tmp_path, ["title", "category"])
    backbone = TextBackbone(str(tiny_bert), model_id="tiny", options=TextBackboneOptions())
    with pytest.raises(DataError, match=r"items.jsonl, line 3: item 'i2' has no text"):
        backbone.featurize(list(data.columns(["title", "category"]).values()), data.feature_context())


@pytest.mark.parametrize(
    "files, says",
    [
        ({}, r"local directory '.*' has no config\.json"),
        ({"config.json": "{not json"}, r"from local directory '.*': .+ Only safetensors weights are read\."),
        ({"config.json": '{"model_type": "bert"}'}, r"from local directory '.*': .+ Only safetensors weights are read\."),
    ],
    ids=["empty", "config-not-json", "config-without-weights"],
)
def test_unloadable_directory_is_a_config_error(tmp_path, files, says):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=r"^Cannot load text backbone 'broken'") as caught:
        TextBackbone(str(tmp_path), model_id="broken", options=TextBackboneOptions())
    assert re.search(says, str(caught.value)), str(caught.value)
    assert "\n" not in str(caught.value)  # one line, whatever transformers said


def test_minilm_is_bundled():
    backbone = minilm(TextBackboneOptions())
    assert backbone.model_id == "sentence-transformers/all-MiniLM-L6-v2" and backbone.hidden_size == 384
    ident = backbone.identity()
    assert len(ident["sha256"]) == 64 and ident["bytes"] > 80_000_000


@pytest.mark.parametrize("mode", ["int8", "nf4"])
def test_quantized_backbone_stays_close(tiny_bert, mode):
    full = TextBackbone(str(tiny_bert), model_id="tiny", options=TextBackboneOptions())
    quant = TextBackbone(str(tiny_bert), model_id="tiny", options=TextBackboneOptions(quantize=mode))
    assert quant.quantized
    import bitsandbytes as bnb

    layer = quant.model.encoder.layer[0].attention.self.query
    assert isinstance(layer, bnb.nn.Linear8bitLt if mode == "int8" else bnb.nn.Linear4bit)
    feats = full.featurize([["red lamp", "blue desk", "green pen"]], ctx(3))
    batch = full.collate(feats, torch.arange(3))
    with torch.no_grad():
        cos = torch.nn.functional.cosine_similarity(full(**batch), quant(**batch)).min().item()
    assert cos > (0.98 if mode == "int8" else 0.9), cos
