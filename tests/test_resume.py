"""Checkpoints and resuming: a run killed mid-epoch (SIGKILL) and resumed ends exactly where an uninterrupted
run with the same seed ends (CPU, bit for bit: same metrics, same metrics log); checkpoints hold only what
trains; a corrupt, incomplete or incompatible checkpoint is refused with exit code 2, never a fresh start."""

from __future__ import annotations

import importlib
import json
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from crossrec_peft import checkpoint
from crossrec_peft.checkpoint import CheckpointError, find_resumable
from crossrec_peft.cli import main as cli_main
from crossrec_peft.config import load_config
from crossrec_peft.pipeline import run
from tests.trainer_setup import BATCHES_PER_EPOCH, REPO, cli, cli_env, tiny_data, tiny_train_config, write_config

STALL_PLUGIN = '''
"""Test plugin: retrieval that blocks at call $CROSSREC_TEST_STALL_AT (after writing $CROSSREC_TEST_STALL_MARKER),
so that a test can SIGKILL the training process at a known batch."""
import os
import time
from pathlib import Path

from crossrec_peft.objectives.retrieval import InBatchSoftmax, RetrievalOptions
from crossrec_peft.registry import objectives


@objectives.register("stall_retrieval", options=RetrievalOptions)
class StallRetrieval(InBatchSoftmax):
    """In-batch softmax that can stall at a given call (test only)."""

    calls = 0

    def __call__(self, outputs, batch):
        self.calls += 1
        if self.calls == int(os.environ.get("CROSSREC_TEST_STALL_AT", "0")):
            Path(os.environ["CROSSREC_TEST_STALL_MARKER"]).write_text(str(self.calls))
            time.sleep(600)
        return super().__call__(outputs, batch)
'''

CHECKPOINT_EVERY = 3
STALL_AT = 8  # epoch 1, batch 8: after the step-6 checkpoint, before the epoch ends


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory) -> Path:
    """The stall objective as an installed plugin (module + dist-info), also registered in this process."""
    directory = tmp_path_factory.mktemp("plugin")
    (directory / "crossrec_stall_plugin.py").write_text(textwrap.dedent(STALL_PLUGIN))
    dist = directory / "crossrec_stall_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: crossrec-stall-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[crossrec_peft.plugins]\nstall = crossrec_stall_plugin\n")
    sys.path.insert(0, str(directory))
    importlib.import_module("crossrec_stall_plugin")
    yield directory
    sys.path.remove(str(directory))


@pytest.fixture(scope="module")
def setup(tiny_bert, tmp_path_factory, plugin_dir):
    """The config, and an uninterrupted run of it that keeps every checkpoint."""
    root = tmp_path_factory.mktemp("resume")
    config = tiny_train_config(
        tiny_bert, tiny_data(root / "data"), objective={"name": "stall_retrieval"}, checkpoint_every=CHECKPOINT_EVERY
    )
    reference = root / "reference"
    cfg = load_config({**config, "train": {**config["train"], "keep_checkpoints": 100}})
    report = run(cfg, reference, progress=False, summary=False)
    return root, config, reference, report


def log_records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_checkpoints_every_n_steps_and_each_epoch_holding_only_trainable_weights(setup, tiny_bert):
    _, _, reference, report = setup
    steps = [int(p.name.removeprefix("step-")) for p in checkpoint.checkpoint_dirs(reference / "checkpoints")]
    assert steps == [3, 6, 9, 10, 12, 15, 18, 20]  # every 3 steps, and the epoch ends (10, 20)
    assert report["steps"] == 2 * BATCHES_PER_EPOCH
    latest = reference / "checkpoints" / "step-00000020"
    from safetensors.torch import load_file

    saved = load_file(str(latest / checkpoint.TRAINABLE_FILE))
    assert saved and all("lora_" in k or not k.startswith("modalities.") for k in saved)  # no frozen backbone weight
    backbone_bytes = (tiny_bert / "model.safetensors").stat().st_size
    checkpoint_bytes = sum(p.stat().st_size for p in latest.iterdir())
    assert checkpoint_bytes < backbone_bytes / 10, (checkpoint_bytes, backbone_bytes)
    state = json.loads((latest / checkpoint.STATE_FILE).read_text())
    assert state["done"] and state["epoch"] == 3 and state["batch"] == 0
    assert set(state["files"]) >= {"optimizer.bin", "scheduler.bin", "random_states_0.pkl", checkpoint.TRAINABLE_FILE}
    assert not list((reference / "checkpoints").glob(".tmp-*"))


def test_resume_mid_epoch_equals_uninterrupted(setup):
    """In process: a run directory holding only the step-12 checkpoint (epoch 2, batch 2) resumes to the same end."""
    root, config, reference, report = setup
    resumed = root / "resumed-in-process"
    shutil.copytree(reference / "checkpoints" / "step-00000012", resumed / "checkpoints" / "step-00000012")
    again = run(load_config({**config, "train": {**config["train"], "resume": True}}), resumed, progress=False, summary=False)
    assert again["metrics"] == report["metrics"]
    assert log_records(resumed) == log_records(reference)


def test_sigkill_mid_epoch_then_resume_from_cli(setup, plugin_dir):
    """The CLI is killed with SIGKILL inside epoch 1 (batch 8, after the step-6 checkpoint); `train FILE --resume
    RUN_DIR` skips the 6 batches done and reaches exactly the uninterrupted run's metrics."""
    root, config, reference, report = setup
    config_file = write_config(root / "stall.yaml", config)
    run_dir, marker = root / "killed", root / "stalled"
    env = cli_env(plugin_dir, CROSSREC_TEST_STALL_AT=str(STALL_AT), CROSSREC_TEST_STALL_MARKER=str(marker))
    process = subprocess.Popen(
        [sys.executable, "-m", "crossrec_peft", "train", str(config_file), "--out", str(run_dir), "--quiet"],
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 150
        while not marker.exists():
            if process.poll() is not None:
                pytest.fail(f"training exited (code {process.returncode}) before the stall point: {process.stderr.read()}")
            if time.monotonic() > deadline:
                pytest.fail("training did not reach the stall point within 150 s")
            time.sleep(0.2)
        assert [p.name for p in checkpoint.checkpoint_dirs(run_dir / "checkpoints")] == ["step-00000003", "step-00000006"]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (run_dir / "report.json").exists()

    done = cli(["train", str(config_file), "--resume", str(run_dir), "--quiet"], env=cli_env(plugin_dir))
    assert done.returncode == 0, done.stderr
    resumed = json.loads((run_dir / "report.json").read_text())
    assert resumed["metrics"] == report["metrics"]
    assert resumed["steps"] == report["steps"] and resumed["best_epoch"] == report["best_epoch"]
    assert log_records(run_dir) == log_records(reference)


@pytest.fixture
def copy_of_latest(setup, tmp_path):
    """A run directory whose only checkpoint is a copy of the reference's step-12 one."""
    root, config, reference, _ = setup
    shutil.copytree(reference / "checkpoints" / "step-00000012", tmp_path / "run" / "checkpoints" / "step-00000012")
    (tmp_path / "run" / "config.yaml").write_text("sentinel\n")
    return tmp_path / "run", load_config({**config, "train": {**config["train"], "resume": True}})


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: (d / checkpoint.TRAINABLE_FILE).write_bytes(b"\0" * 64), "checksum"),
        (lambda d: (d / "optimizer.bin").write_bytes((d / "optimizer.bin").read_bytes()[:100]), "checksum"),
        (lambda d: (d / "random_states_0.pkl").unlink(), "random_states_0.pkl is missing"),
        (lambda d: (d / checkpoint.STATE_FILE).write_text("{not json"), "cannot be read"),
        (lambda d: (d / checkpoint.STATE_FILE).unlink(), "not a complete checkpoint"),
    ],
    ids=["garbled-weights", "truncated-optimizer", "missing-rng", "bad-state-json", "missing-state"],
)
def test_corrupt_checkpoint_is_refused(copy_of_latest, damage, message):
    run_dir, cfg = copy_of_latest
    damage(run_dir / "checkpoints" / "step-00000012")
    with pytest.raises(CheckpointError, match=message):
        find_resumable(run_dir, cfg, 1)


def test_incompatible_or_missing_checkpoint_is_refused(copy_of_latest, tmp_path):
    run_dir, cfg = copy_of_latest
    changed = load_config({**cfg_dict(cfg), "train": {**cfg_dict(cfg)["train"], "lr": 0.01}})
    with pytest.raises(CheckpointError, match=r"train\.lr: checkpoint 0\.002, now 0\.01"):
        find_resumable(run_dir, changed, 1)
    with pytest.raises(CheckpointError, match="1 process.*this run has 2"):
        find_resumable(run_dir, cfg, 2)
    with pytest.raises(CheckpointError, match="Nothing to resume"):
        find_resumable(tmp_path / "empty", cfg, 1)
    # Keys that only say where and how often to write may change.
    relaxed = load_config({**cfg_dict(cfg), "train": {**cfg_dict(cfg)["train"], "checkpoint_every": 7, "log_every": 5}})
    assert find_resumable(run_dir, relaxed, 1)[0].name == "step-00000012"


def test_cli_refuses_a_corrupt_checkpoint_with_exit_2_and_leaves_the_run_alone(copy_of_latest, setup, capsys):
    run_dir, _ = copy_of_latest
    root, config, _, _ = setup
    (run_dir / "checkpoints" / "step-00000012" / checkpoint.TRAINABLE_FILE).write_bytes(b"garbage")
    config_file = write_config(run_dir.parent / "c.yaml", config)
    assert cli_main(["train", str(config_file), "--resume", str(run_dir), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "checksum" in err and "Traceback" not in err
    assert (run_dir / "config.yaml").read_text() == "sentinel\n"  # nothing was started or overwritten
    assert not (run_dir / "metrics.jsonl").exists()
    assert cli_main(["train", str(config_file), "--resume", str(run_dir), "--out", str(root), "--quiet"]) == 2
    assert "names another" in capsys.readouterr().err


def cfg_dict(cfg) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)
