from __future__ import annotations

import numpy as np
import torch

from crossrec_peft.data.batching import Collator, TrainPairs


def test_pairs_are_prefixes_and_deterministic_per_epoch():
    seqs = [np.arange(10), np.array([3, 4]), np.array([7])]
    pairs = TrainPairs(seqs, samples_per_user=3, max_history=4, seed=1)
    assert len(pairs) == 6  # the one-item user has no pair
    for i in range(len(pairs)):
        user, cut = pairs.pairs[i]
        seq = pairs.sequences[user]
        history, target = pairs[i]
        assert 1 <= cut < len(seq)
        assert history.tolist() == seq[max(0, cut - 4) : cut].tolist() and target == seq[cut]
    first = pairs.pairs.copy()
    pairs.set_epoch(0)
    assert np.array_equal(first, pairs.pairs)
    pairs.set_epoch(1)
    assert not np.array_equal(first, pairs.pairs)


def test_collator_encodes_each_item_once():
    features = {"x": torch.arange(20).view(10, 2)}
    seen = {}

    def collate_items(feats, index):
        seen["index"] = index
        return {"x": feats["x"][index]}

    batch = Collator(features, collate_items)([(np.array([1, 2, 3]), 4), (np.array([3]), 1), (np.array([2, 9]), 4)])
    unique = seen["index"].tolist()
    assert unique == [1, 2, 3, 4, 9]
    back = lambda pos: [unique[p] for p in pos]  # noqa: E731
    assert back(batch["history"][0].tolist()) == [1, 2, 3]
    assert batch["history_mask"].tolist() == [[True, True, True], [True, False, False], [True, True, False]]
    assert back(batch["history"][2][:2].tolist()) == [2, 9]
    assert back(batch["target"].tolist()) == [4, 1, 4]
    assert batch["target_item"].tolist() == [4, 1, 4]
