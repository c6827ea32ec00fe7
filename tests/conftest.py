"""Shared fixtures: a tiny random BERT saved to disk (loaded through the real `hf:<dir>` path), small data
written in the standard layout, and an isolated demo-catalog cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    os.environ["CROSSREC_PEFT_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    from crossrec_peft.pipeline import quiet_libraries

    quiet_libraries()


def _checkout_outputs() -> dict[str, float]:
    """Files under the checkout's default output places (runs/, the default comparison plot)."""
    root = RECIPES.parent
    found = {str(p): p.stat().st_mtime for p in (root / "runs").rglob("*") if p.is_file()} if (root / "runs").is_dir() else {}
    for name in ("runs-comparison.png",):
        if (root / name).is_file():
            found[name] = (root / name).stat().st_mtime
    return found


@pytest.fixture(autouse=True, scope="session")
def _checkout_untouched():
    """Tests never write into the checkout (a test running a recipe without --out used to rewrite
    runs/ecommerce of the checkout it ran in)."""
    before = _checkout_outputs()
    yield
    after = _checkout_outputs()
    assert after == before, f"tests wrote into the checkout: {sorted(set(after.items()) ^ set(before.items()))[:5]}"


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-layer BERT with hidden size 32 and MiniLM's tokenizer, saved as safetensors."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from crossrec_peft.backbones.text import minilm_path

    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("tiny-bert")
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(directory, safe_serialization=True)
    AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(directory)
    return directory


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def render_images(directory: Path, names: list[str]) -> Path:
    """Small product images (the demo's renderer), one per name, varied in colour, pattern and shape."""
    from crossrec_peft.data.demo.images import PATTERNS, RGB, SHAPES, render

    for i, name in enumerate(names):
        render(directory / name, color=list(RGB)[i % len(RGB)], pattern=PATTERNS[i % len(PATTERNS)], shape=SHAPES[i % len(SHAPES)])
    return directory


@pytest.fixture(scope="session")
def image_root(tmp_path_factory) -> Path:
    """A catalog directory with img/0.png .. img/11.png."""
    return render_images(tmp_path_factory.mktemp("catalog"), [f"img/{i}.png" for i in range(12)])


def small_layout(directory: Path, *, num_items: int = 12, num_users: int = 8, length: int = 5) -> Path:
    """A hand-made standard layout in JSONL with PNG images: users walk through consecutive items."""
    render_images(directory, [f"img/i{i}.png" for i in range(num_items)])
    items = [
        {"item_id": f"i{i}", "title": f"product {i} {'red' if i % 2 else 'blue'} lamp", "category": f"c{i % 3}", "image": f"img/i{i}.png"}
        for i in range(num_items)
    ]
    inter = []
    for u in range(num_users):
        for t in range(length):
            inter.append({"user_id": f"u{u}", "item_id": f"i{(u + t) % num_items}", "timestamp": 1000 + t})
    write_jsonl(directory / "items.jsonl", items)
    write_jsonl(directory / "interactions.jsonl", inter)
    return directory


@pytest.fixture
def layout_dir(tmp_path) -> Path:
    return small_layout(tmp_path / "data")


# The tiny CLIP image tower trained whole (`full`), in place of the recipes' frozen EfficientNet-Lite0: for tests
# about a tower a package stores whole (image_tower.safetensors), a tower that trains, or one with no zero-shot
# baseline of its own.
TINY_CLIP_IMAGE = {"model.modalities.image.backbone": "{name: openclip:crossrec-tiny-vit, tower: image}", "model.modalities.image.method": "full"}


def tiny_overrides(tiny_bert: Path, **extra) -> list[str]:
    """Overrides that make the e-commerce recipe run in seconds on the tiny BERT."""
    base = {
        "model.modalities.text.backbone.name": f"hf:{tiny_bert}",
        "model.modalities.text.backbone.max_length": 16,
        "data.num_items": 120,
        "data.num_users": 80,
        "train.epochs": 1,
        "train.batch_size": 16,
        "train.eval_batch_size": 64,
        "model.head_rank": 4,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]
