"""The layer cache through the backbone-level interface only: `frozen` on image towers (open_clip's tiny ViT,
a timm convnet) caches their embeddings, keyed by the image files' bytes."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from crossrec_peft.backbones.base import FeatureContext
from crossrec_peft.backbones.clip import ClipBackbone, ClipOptions
from crossrec_peft.backbones.timm_towers import TimmBackbone, TimmOptions
from crossrec_peft.cache import CacheSettings, Output, cached_rows
from crossrec_peft.cache import build as build_module
from tests.conftest import render_images

TOWERS = {
    "openclip": lambda: ClipBackbone("crossrec-tiny-vit", ClipOptions(tower="image")),
    "timm": lambda: TimmBackbone("mobilenetv3_small_050", TimmOptions(image_size=32)),
}


@pytest.mark.parametrize("tower", list(TOWERS))
def test_frozen_image_tower_is_cached_by_image_bytes(tmp_path, monkeypatch, tower):
    names = [f"img/{i}.png" for i in range(6)]
    render_images(tmp_path / "data", names + ["img/new.png"])
    backbone = TOWERS[tower]()
    encoded: list[int] = []
    real = build_module._encode
    monkeypatch.setattr(build_module, "_encode", lambda *a: encoded.append(len(a[3])) or real(*a))

    def rows():
        context = FeatureContext(item_ids=[str(i) for i in range(6)], root=tmp_path / "data")
        features = backbone.featurize([names], context)
        out = cached_rows(backbone, Output(), features, CacheSettings(root=tmp_path / "cache", progress=False, dtype="float32"))
        return features, out["output"].all()

    features, first = rows()
    with torch.no_grad():
        direct = backbone(**{k: v for k, v in backbone.collate(features, torch.arange(6)).items() if k != "present"})
    torch.testing.assert_close(first, direct.float(), atol=1e-5, rtol=1e-5)
    assert sum(encoded) == 6
    shutil.copy(tmp_path / "data" / "img/new.png", tmp_path / "data" / names[3])  # a new picture under an old name
    encoded.clear()
    _, second = rows()
    assert sum(encoded) == 1
    shutil.copy(tmp_path / "data" / names[0], tmp_path / "data" / names[4])  # bytes the cache already holds
    encoded.clear()
    _, third = rows()
    assert sum(encoded) == 0  # keyed by content: item 0's row serves item 4 too
    np.testing.assert_array_equal(third[4].numpy(), first[0].numpy())
    assert not np.array_equal(second[3].numpy(), first[3].numpy())
