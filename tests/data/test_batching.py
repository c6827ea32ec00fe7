from __future__ import annotations

import numpy as np
import torch

from crossrec_peft.data.batching import Collator, TrainWindows


def test_windows_are_consecutive_and_full_length_when_possible():
    seqs = [np.arange(10), np.array([3, 4]), np.array([7])]
    windows = TrainWindows(seqs, samples_per_user=3, max_history=4, seed=1)
    assert len(windows) == 6  # the one-item user has no pair
    for i in range(len(windows)):
        user, end = windows.windows[i]
        seq = windows.sequences[user]
        w = windows[i]
        assert len(w) == min(len(seq), 5)  # max_history + 1
        assert w.tolist() == seq[end - len(w) : end].tolist()
    first = windows.windows.copy()
    windows.set_epoch(0)
    assert np.array_equal(first, windows.windows)
    ends = set()
    for epoch in range(1, 20):
        windows.set_epoch(epoch)
        ends |= {int(e) for u, e in windows.windows if u == 0}
    assert ends == set(range(5, 11))  # every end point of the long history gets drawn


def test_collator_encodes_each_item_once():
    features = {"x": torch.arange(20).view(10, 2)}
    seen = {}

    def collate_items(feats, index):
        seen["index"] = index
        return {"x": feats["x"][index]}

    batch = Collator(features, collate_items)([np.array([1, 2, 3, 4]), np.array([3, 1]), np.array([2, 9, 4])])
    unique = seen["index"].tolist()
    assert unique == [1, 2, 3, 4, 9]
    back = lambda pos: [unique[p] for p in pos]  # noqa: E731
    assert back(batch["sequence"][0].tolist()) == [1, 2, 3, 4]
    assert batch["sequence_mask"].tolist() == [[True] * 4, [True, True, False, False], [True, True, True, False]]
    assert back(batch["sequence"][2][:3].tolist()) == [2, 9, 4]
    assert batch["sequence_items"].tolist() == [[1, 2, 3, 4], [3, 1, -1, -1], [2, 9, 4, -1]]


def test_model_trains_on_every_position(tiny_bert):
    from omegaconf import OmegaConf

    from crossrec_peft import recipes
    from crossrec_peft.config import load_config
    from crossrec_peft.model import build_model

    raw = OmegaConf.to_container(load_config(recipes.path("ecommerce"), ["model.head_rank=4"]))
    raw["model"]["modalities"] = {"text": {"fields": ["title"], "backbone": {"name": f"hf:{tiny_bert}"}, "method": {"name": "frozen"}}}
    raw["model"]["fusion"] = {"name": "mean"}
    model = build_model(load_config(raw).model).eval()
    titles = {"title": [f"item {i}" for i in range(6)]}
    features = model.featurize(titles)
    batch = Collator(features, model.collate_items)([np.array([0, 1, 2, 3]), np.array([4, 5])])
    with torch.no_grad():
        out = model(batch)
        content = model.encode_content(model.collate_items(features, torch.arange(6)))
    assert out["target_item"].tolist() == [1, 2, 3, 5] and out["row"].tolist() == [0, 0, 0, 1]
    # The pair predicting item 3 uses the user made of items 0, 1, 2: exactly what evaluation computes.
    user = model.user_vectors(content[[0, 1, 2]].unsqueeze(0), torch.ones(1, 3, dtype=torch.bool))
    assert torch.allclose(out["users"][2], user[0], atol=1e-6)
    assert torch.allclose(out["items"][3], model.item_vectors(content[5:6])[0], atol=1e-6)


def test_windows_carry_interaction_values_aligned():
    seqs = [np.arange(8), np.array([5]), np.array([3, 4, 6])]
    ratings = [np.arange(8) * 10.0, np.array([99.0]), np.array([1.0, 2.0, 3.0])]
    windows = TrainWindows(seqs, samples_per_user=2, max_history=3, seed=0, values={"rating": ratings})
    kept = [(s, r) for s, r in zip(seqs, ratings) if len(s) >= 2]  # the one-item user has no window
    assert len(windows) == 4
    for i in range(len(windows)):
        user, end = windows.windows[i]
        items, values = windows[i]
        seq, rating = kept[user]
        assert items.tolist() == seq[end - len(items) : end].tolist()
        assert values["rating"].tolist() == rating[end - len(items) : end].tolist()


def test_collator_adds_pair_values_and_sampled_negatives():
    from crossrec_peft.data.batching import BatchNeeds
    from crossrec_peft.data.negatives import NegativeSampler

    features = {"x": torch.arange(40).view(20, 2)}
    windows = [(np.array([1, 2, 3]), {"rating": np.array([5.0, 4.0, 3.0])}), (np.array([7, 8]), {"rating": np.array([1.0, 2.0])})]
    needs = BatchNeeds(negatives=NegativeSampler(np.ones(20)), num_negatives=3, seed=5)
    collate = Collator(features, lambda f, index: {"x": f["x"][index], "index": index}, needs)
    batch = collate(windows)
    assert batch["ratings"].tolist() == [4.0, 3.0, 2.0]  # the targets' values, in pair order (2, 3, 8)
    unique = batch["items"]["index"]
    pool = batch["negative_pool_items"]
    assert torch.equal(unique[batch["negative_pool"]], pool)  # positions among the encoded items
    negatives = pool[batch["negatives"]]
    assert negatives.shape == (3, 3) and not (negatives == torch.tensor([2, 3, 8]).unsqueeze(1)).any()
    # Seeded by the batch's content: the same windows draw the same negatives, other windows others.
    assert torch.equal(pool[collate(windows)["negatives"]], negatives)
    other = collate([(np.array([1, 2, 4]), {"rating": np.ones(3)}), windows[1]])
    assert not torch.equal(pool[batch["negatives"]], other["negative_pool_items"][other["negatives"]])
    # Without needs, the batch is the plain retrieval batch.
    plain = Collator(features, lambda f, index: {"x": f["x"][index]})([w for w, _ in windows])
    assert set(plain) == {"items", "sequence", "sequence_mask", "sequence_items"}
