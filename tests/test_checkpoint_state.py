"""A checkpoint's trainer_state.json that is valid JSON but malformed is a CheckpointError naming the file and
the key, raised while the state is read (before a resumed run writes anything)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from crossrec_peft.checkpoint import STATE_FILE, CheckpointError, read_state
from crossrec_peft.errors import CrossrecError
from crossrec_peft.train_state import TrainState


def good_state() -> dict:
    return {"format": 1, "step": 18, "num_processes": 1, "files": {}, "fingerprint": {}, **TrainState(epoch=2).to_dict()}


CASES = [
    ("files", ["best.safetensors"]),
    ("files", {"a.bin": 5}),
    ("num_processes", None),
    ("num_processes", "1"),
    ("step", -1),
    ("fingerprint", [1]),
    ("epoch", "two"),
    ("epoch", 0),
    ("batch", 1.5),
    ("best_score", "high"),
    ("best_validation", [1]),
    ("history", {"a": 1}),
    ("records", [1]),
    ("done", "no"),
    ("pending", {"loss": "x"}),
    ("pending_batches", None),
]


@pytest.mark.parametrize("key,value", CASES)
def test_read_state_names_file_and_key(tmp_path, key, value):
    state = good_state()
    if value is None:
        del state[key]
    else:
        state[key] = value
    (tmp_path / STATE_FILE).write_text(json.dumps(state))
    with pytest.raises(CheckpointError) as err:
        read_state(tmp_path, cfg=None, num_processes=1)
    assert isinstance(err.value, CrossrecError)
    assert str(tmp_path / STATE_FILE) in str(err.value) and key in str(err.value)


@pytest.mark.parametrize("text", ["[1]", "5", '"state"'])
def test_read_state_non_object(tmp_path, text):
    (tmp_path / STATE_FILE).write_text(text)
    with pytest.raises(CheckpointError, match="not an object"):
        read_state(tmp_path, cfg=None, num_processes=1)


@pytest.mark.parametrize("key,value", [("epoch", "two"), ("loss_sum", [0]), ("bad_epochs", True)])
def test_from_dict_checks_types(key, value):
    saved = {**TrainState().to_dict(), key: value}
    with pytest.raises(CheckpointError, match=f"key '{key}'"):
        TrainState.from_dict(saved, "some/trainer_state.json")


def test_from_dict_accepts_a_written_state():
    state = TrainState(epoch=3, best_score=0.5, best_validation={"ndcg@10": 0.5}, history=[{"epoch": 1}], pending={"loss": 1.0})
    assert TrainState.from_dict(state.to_dict()) == state
    assert [f.name for f in dataclasses.fields(TrainState)]  # every field is checked by from_dict
