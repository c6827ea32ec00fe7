"""Two processes on CPU (torch.distributed with gloo) through `accelerate launch ... -m crossrec_peft`.

With the batches sharded over 2 processes and DDP averaging the gradients, each optimizer step sees the
gradient mean over 2 batches of 4: exactly what one process computes with grad_accum_steps=2 on the same
batch order (the sampler's order depends only on seed and epoch; rank r takes batches r, r+2, ...). With
dropout off nothing else is random, so the two runs must agree up to float summation order (the all-reduce
adds the two gradients in another order than accumulation does): weights within 1e-5, logged losses within
1e-4 relative, and test metrics within one user's hit (1/40 of recall/NDCG on 40 test users) in case a
near-tie flips. With the same per-process batch but no accumulation the runs would differ for a real reason
(different batch composition: 4 in-batch negatives instead of 8 per step), which is why the reference
accumulates. Only the main process writes: one metrics log, one report; each process's RNG state is saved.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
import torch

from crossrec_peft.config import load_config
from crossrec_peft.pipeline import run
from tests.trainer_setup import REPO, cli_env, tiny_data, tiny_train_config, write_config


def free_port() -> int:
    with socket.socket() as s:  # a fixed port would collide with any other job launching on this machine
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_two_processes_match_one_process_with_accumulation(tiny_bert, tmp_path):
    data = tiny_data(tmp_path / "data")
    base = tiny_train_config(tiny_bert, data, dropout=0.0, checkpoint_every=3)
    base["export"] = {"enabled": True}

    one = dict(base, train={**base["train"], "grad_accum_steps": 2})
    single = run(load_config(one), tmp_path / "one", progress=False, summary=False)

    config_file = write_config(tmp_path / "two.yaml", base)
    launch = [
        sys.executable, "-m", "accelerate.commands.launch",
        # --multi_gpu selects the torchrun launcher; without GPUs each process runs on CPU over gloo.
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no", "--main_process_port", str(free_port()),
        "-m", "crossrec_peft", "train", str(config_file), "--out", str(tmp_path / "two"), "--quiet", "train.cpu=true",
    ]
    done = subprocess.run(launch, env=cli_env(OMP_NUM_THREADS="1"), cwd=REPO, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    double = json.loads((tmp_path / "two" / "report.json").read_text())

    assert double["steps"] == single["steps"] == 10  # 10 batches per epoch, 2 per optimizer step, 2 epochs
    assert double["best_epoch"] == single["best_epoch"]
    for name, value in single["metrics"]["model"].items():
        assert double["metrics"]["model"][name] == pytest.approx(value, abs=1 / 40 + 1e-9), name
    assert double["metrics"]["popularity"] == single["metrics"]["popularity"]

    one_log, two_log = records(tmp_path / "one" / "metrics.jsonl"), records(tmp_path / "two" / "metrics.jsonl")
    assert [(r.get("step"), r.get("split")) for r in two_log] == [(r.get("step"), r.get("split")) for r in one_log]
    for a, b in zip(one_log, two_log):
        if "loss" in a:
            assert b["lr"] == pytest.approx(a["lr"]) and b["loss"] == pytest.approx(a["loss"], rel=1e-4)

    from safetensors.torch import load_file

    for name in ("adapter_model.safetensors", "crossrec_weights.safetensors"):
        w1, w2 = load_file(str(tmp_path / "one" / "adapter" / name)), load_file(str(tmp_path / "two" / "adapter" / name))
        assert w1.keys() == w2.keys() and w1
        for key in w1:
            torch.testing.assert_close(w2[key], w1[key], atol=1e-5, rtol=1e-4)

    last = sorted((tmp_path / "two" / "checkpoints").iterdir())[-1]
    assert {"random_states_0.pkl", "random_states_1.pkl"} <= {p.name for p in last.iterdir()}
    assert json.loads((last / "trainer_state.json").read_text())["num_processes"] == 2
