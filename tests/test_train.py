"""The trainer's options: schedules, parameter groups, precision fallback on CPU, gradient accumulation,
dropout, and stopping on a non-finite loss with the last good checkpoint kept."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass

import pytest
import torch

from crossrec_peft import checkpoint, registry
from crossrec_peft.checkpoint import find_resumable
from crossrec_peft.config import load_config
from crossrec_peft.pipeline import run
from crossrec_peft.train import DivergedError, make_accelerator, make_scheduler, parameter_groups, set_dropout
from tests.trainer_setup import BATCHES_PER_EPOCH, tiny_data, tiny_train_config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tiny_data(tmp_path_factory.mktemp("train-data"))


def lrs(name: str, warmup: int, total: int) -> list[float]:
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=1.0)
    scheduler = make_scheduler(name, optimizer, warmup, total)
    out = []
    for _ in range(total):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_schedules_warm_up_linearly_then_follow_their_shape():
    for name in ("linear", "cosine", "constant"):
        values = lrs(name, 4, 20)
        assert values[:5] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0]), name
    assert lrs("linear", 4, 20)[12] == pytest.approx(0.5)  # halfway through the 16 decay steps
    assert lrs("cosine", 4, 20)[12] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lrs("cosine", 4, 20)[8] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))
    assert set(lrs("constant", 4, 20)[4:]) == {1.0}


def test_no_weight_decay_on_biases_norms_and_scalars():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    model.register_parameter("log_temperature", torch.nn.Parameter(torch.tensor(0.0)))
    frozen = torch.nn.Linear(2, 2).requires_grad_(False)
    model.add_module("frozen", frozen)
    decay, no_decay = parameter_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 3])]
    assert len(no_decay["params"]) == 4  # linear bias, norm weight and bias, the temperature; frozen left out


def test_mixed_precision_on_cpu_falls_back_to_fp32_with_a_message(caplog):
    cfg = load_config(tiny_train_config("unused", "unused", mixed_precision="bf16", cpu=True))
    with caplog.at_level(logging.WARNING, logger="crossrec_peft.train"):
        accelerator = make_accelerator(cfg)
    assert accelerator.mixed_precision == "no"
    assert "train.mixed_precision=bf16 needs a CUDA GPU" in caplog.text


def test_dropout_setting_reaches_every_dropout(tiny_bert):
    from crossrec_peft.model import build_model

    cfg = load_config(tiny_train_config(tiny_bert, "unused"))
    model = build_model(cfg.model)
    features = model.featurize({"title": ["red lamp", "blue chair", "green mug"]})
    inputs = model.collate_items(features, torch.arange(3))
    model.train()
    torch.manual_seed(0)
    assert not torch.equal(model.encode_content(inputs), model.encode_content(inputs))  # BERT's own 0.1
    assert set_dropout(model, 0.0) >= 5
    assert torch.equal(model.encode_content(inputs), model.encode_content(inputs))


def test_gradient_accumulation_divides_the_optimizer_steps(tiny_bert, data_dir, tmp_path, monkeypatch):
    """Also: evaluation encodes the catalog once per evaluation, in batches, never per user."""
    from crossrec_peft.model.two_tower import TwoTowerModel

    encoded = []  # items per encode_content call outside training
    original = TwoTowerModel.encode_content

    def counting(self, item_inputs):
        out = original(self, item_inputs)
        if not self.training:
            encoded.append(len(out))
        return out

    monkeypatch.setattr(TwoTowerModel, "encode_content", counting)
    cfg = load_config(tiny_train_config(
        tiny_bert, data_dir, epochs=1, grad_accum_steps=2, log_every=1, schedule="cosine", eval_batch_size=16,
    ))
    report = run(cfg, tmp_path / "run", progress=False, summary=False)
    assert report["steps"] == BATCHES_PER_EPOCH // 2
    # One validation and one test evaluation, each the 30-item catalog in batches of 16 (40 users ranked).
    assert encoded == [16, 14, 16, 14]
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "lr" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5]
    assert steps[-1]["lr"] == pytest.approx(cfg.train.lr * 0.5 * (1 + math.cos(math.pi * 4 / 5)))


@pytest.fixture
def inf_objective():
    """A retrieval objective whose loss becomes +inf at a chosen call."""
    from crossrec_peft.objectives.retrieval import InBatchSoftmax, RetrievalOptions

    @dataclass
    class Options(RetrievalOptions):
        at_call: int = 5

    @registry.objectives.register("test_inf_loss", options=Options)
    class InfAt(InBatchSoftmax):
        """Retrieval with an injected infinite loss."""

        calls = 0

        def __call__(self, outputs, batch):
            loss, logs = super().__call__(outputs, batch)
            self.calls += 1
            return (loss * math.inf, logs) if self.calls == self.options.at_call else (loss, logs)

    yield "test_inf_loss"
    registry.objectives._entries.pop("test_inf_loss", None)


def test_infinite_loss_stops_with_step_batch_and_lr_and_keeps_the_last_checkpoint(tiny_bert, data_dir, tmp_path, inf_objective):
    cfg = load_config(tiny_train_config(
        tiny_bert, data_dir, objective={"name": inf_objective, "at_call": 5}, checkpoint_every=2, schedule="constant", warmup_ratio=0.0,
    ))
    with pytest.raises(DivergedError) as info:
        run(cfg, tmp_path / "run", progress=False, summary=False)
    message = str(info.value)
    assert "the loss became inf at step 5 (epoch 1, batch 5 of 10)" in message
    assert "the last learning rate was 0.002" in message
    assert "step-00000004 (step 4)" in message
    found, state = find_resumable(tmp_path / "run", load_config({**tiny_train_config(
        tiny_bert, data_dir, objective={"name": inf_objective, "at_call": 5}, checkpoint_every=2, schedule="constant", warmup_ratio=0.0,
    )}), 1)
    assert found.name == "step-00000004" and state["step"] == 4
    assert not (tmp_path / "run" / "report.json").exists()


def test_huge_learning_rate_diverges_with_a_clear_error(tiny_bert, data_dir, tmp_path):
    cfg = load_config(tiny_train_config(tiny_bert, data_dir, lr=1e30, warmup_ratio=0.0, schedule="constant", checkpoint_every=1))
    with pytest.raises(DivergedError, match=r"Training diverged: the (loss|weights) became nan at step \d+ .*1e\+30"):
        run(cfg, tmp_path / "run", progress=False, summary=False)
    for kept in checkpoint.checkpoint_dirs(tmp_path / "run" / "checkpoints"):  # only finite weights were saved
        from safetensors.torch import load_file

        assert all(torch.isfinite(t).all() for t in load_file(str(kept / checkpoint.TRAINABLE_FILE)).values())
