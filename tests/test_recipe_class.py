"""The recipe class: a user's subclass named by `recipe_class:` in a YAML runs end to end through the CLI with
its overridden hooks in charge; a bad `recipe_class` exits 2 naming the key and writes nothing; the loop's
state dataclass round-trips through a checkpoint, and is exactly what a checkpoint holds besides its own keys."""

from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path

import pytest
import torch

from crossrec_peft import checkpoint
from crossrec_peft.checkpoint import CheckpointError
from crossrec_peft.cli import main as cli_main
from crossrec_peft.config import load_config
from crossrec_peft.train import make_accelerator
from crossrec_peft.train_state import TrainState
from tests.trainer_setup import BATCHES_PER_EPOCH, cli, cli_env, tiny_data, tiny_train_config, write_config

USER_RECIPES = '''
"""A user's recipes (test only): each records its hooks into hooks.jsonl in the run directory."""
import json

from crossrec_peft.recipe_class import Recipe

NOT_A_CLASS = 3


class Hooked(Recipe):
    def hook(self, record):
        with open(self.run_dir / "hooks.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\\n")

    def train_epoch(self, epoch):
        before = self.state.step
        super().train_epoch(epoch)
        self.hook({"hook": "train_epoch", "epoch": epoch, "steps": self.state.step - before})

    def score(self, epoch):
        raise NotImplementedError

    def validate(self, model):
        metrics = super().validate(model)
        epoch = self.state.epoch
        self.hook({"hook": "validate", "epoch": epoch, "measured": metrics["ndcg@10"]})
        return {**metrics, "ndcg@10": self.score(epoch)}


class EarliestBest(Hooked):
    """A validation that prefers earlier epochs: epoch 1 is best, and patience 1 stops after epoch 2."""

    def score(self, epoch):
        return 1.0 / epoch


class LatestBest(Hooked):
    """A validation that prefers later epochs: every epoch improves, all three run."""

    def score(self, epoch):
        return epoch / 10
'''

BROKEN = "raise RuntimeError('the user module fails at import')\n"


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("user-recipes")
    (directory / "user_recipes.py").write_text(textwrap.dedent(USER_RECIPES))
    (directory / "broken_recipes.py").write_text(BROKEN)
    return directory


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tiny_data(tmp_path_factory.mktemp("recipe-class-data"))


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("cls, scores, best_epoch, epochs_run", [
    ("EarliestBest", [1.0, 0.5], 1, 2),  # epoch 2 is worse: patience 1 stops before epoch 3
    ("LatestBest", [0.1, 0.2, 0.3], 3, 3),
])
def test_a_subclass_named_in_the_yaml_runs_its_hooks(tiny_bert, data_dir, user_dir, tmp_path, cls, scores, best_epoch, epochs_run):
    config = tiny_train_config(tiny_bert, data_dir, epochs=3, patience=1)
    config_file = write_config(tmp_path / "mine.yaml", {**config, "recipe_class": f"user_recipes.{cls}"})
    out = tmp_path / "run"
    done = cli(["train", str(config_file), "--out", str(out), "--quiet"], env=cli_env(user_dir))
    assert done.returncode == 0, done.stderr
    hooks = lines(out / "hooks.jsonl")
    epochs = list(range(1, epochs_run + 1))
    assert [h["epoch"] for h in hooks if h["hook"] == "train_epoch"] == epochs
    assert all(h["steps"] == BATCHES_PER_EPOCH for h in hooks if h["hook"] == "train_epoch")
    measured = [h for h in hooks if h["hook"] == "validate"]
    assert [h["epoch"] for h in measured] == epochs and all(0 < h["measured"] <= 1 for h in measured)
    # The loop acted on what the override returned: the validation log, the best epoch and early stopping.
    validation = [r for r in lines(out / "metrics.jsonl") if r.get("split") == "validation" and "system" not in r]
    assert [r["ndcg@10"] for r in validation] == pytest.approx(scores)
    report = json.loads((out / "report.json").read_text())
    assert (report["best_epoch"], report["epochs_run"], report["stopped_early"]) == (best_epoch, epochs_run, epochs_run < 3)
    assert report["validation"]["model"]["ndcg@10"] == pytest.approx(max(scores))
    # The checkpoint's state is the TrainState, and resuming under another recipe class is refused.
    latest = checkpoint.latest(out / "checkpoints")
    saved = json.loads((latest / checkpoint.STATE_FILE).read_text())
    state = TrainState.from_dict(saved)
    assert state.done and state.step == epochs_run * BATCHES_PER_EPOCH and state.best_epoch == best_epoch
    assert [h["epoch"] for h in state.history] == epochs
    with pytest.raises(CheckpointError, match="recipe_class: checkpoint 'user_recipes"):
        checkpoint.read_state(latest, load_config({**config, "train": {**config["train"], "resume": True}}), 1)


@pytest.mark.parametrize("name, message", [
    ("user_recipes.Missing", "module 'user_recipes' has no 'Missing'. Recipe classes defined there: EarliestBest, Hooked, LatestBest."),
    ("no_such_module_zz.MyRecipe", "no module named 'no_such_module_zz'"),
    ("collections.OrderedDict", "is class collections.OrderedDict, not a subclass of crossrec_peft.recipe_class.Recipe"),
    ("user_recipes.NOT_A_CLASS", "is a value of type int, not a subclass"),
    ("broken_recipes.Anything", "importing 'broken_recipes' raised RuntimeError: the user module fails at import"),
    ("Recipe", "is not a dotted name module.Class"),
    ("user-recipes.Hooked", "is not a dotted name module.Class"),
    ("user_recipes.", "is not a dotted name module.Class"),
])
def test_a_bad_recipe_class_exits_2_naming_the_key(tiny_bert, data_dir, user_dir, tmp_path, monkeypatch, capsys, name, message):
    monkeypatch.syspath_prepend(str(user_dir))
    config_file = write_config(tmp_path / "bad.yaml", {**tiny_train_config(tiny_bert, data_dir), "recipe_class": name})
    out = tmp_path / "run"
    assert cli_main(["train", str(config_file), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "error: 'recipe_class'" in err and message in err, err
    assert "Traceback" not in err
    assert not out.exists()  # refused before anything was written


STATES = {
    "fresh": TrainState(),
    "mid-epoch": TrainState(
        epoch=2, batch=3, step=13, loss_sum=7.25, loss_batches=3, best_score=0.125, best_epoch=1,
        best_validation={"ndcg@10": 0.125, "recall@10": 0.25}, bad_epochs=0,
        history=[{"epoch": 1, "step": 10, "split": "validation", "train_loss": 2.5, "ndcg@10": 0.125}],
        records=[{"epoch": 1, "step": 10, "lr": 0.002, "loss": 2.5}], pending={"loss": 4.75, "accuracy": 0.5}, pending_batches=2,
    ),
    "stopped": TrainState(epoch=4, step=30, best_score=0.3, best_epoch=1, bad_epochs=2, done=True),
}


@pytest.mark.parametrize("case", list(STATES))
def test_the_train_state_round_trips_through_a_checkpoint(tiny_bert, tmp_path, case):
    cfg = load_config(tiny_train_config(tiny_bert, "unused", cpu=True))
    accelerator = make_accelerator(cfg)
    model = torch.nn.Linear(3, 2)
    state = STATES[case]
    written = checkpoint.write(
        accelerator, tmp_path / "checkpoints", state.step, model, {**state.to_dict(), "fingerprint": checkpoint.fingerprint(cfg)}, None, 2,
    )
    saved = checkpoint.read_state(written, cfg, 1)
    assert TrainState.from_dict(saved) == state
    assert set(saved) - {f.name for f in dataclasses.fields(TrainState)} == {"format", "num_processes", "files", "fingerprint"}


def test_a_trainer_state_lacking_a_field_is_refused_naming_it():
    saved = TrainState().to_dict()
    del saved["best_score"], saved["pending"]
    with pytest.raises(CheckpointError, match=r"trainer_state.json: the trainer state lacks best_score, pending"):
        TrainState.from_dict(saved, "step-00000004/trainer_state.json")


def test_the_documented_example_recipe_runs(tiny_bert, data_dir, tmp_path, monkeypatch):
    """docs/training.md's `my_recipes.py`, as printed there, runs in process and its hooks take effect."""
    from crossrec_peft.pipeline import run

    text = (Path(__file__).resolve().parent.parent / "docs" / "training.md").read_text()
    code = text.split("# my_recipes.py", 1)[1].split("\n", 1)[1].split("```", 1)[0]
    (tmp_path / "my_recipes.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tiny_train_config(tiny_bert, data_dir, epochs=2)
    report = run(load_config({**config, "recipe_class": "my_recipes.LoggedRecipe"}), tmp_path / "run", progress=False, summary=False)
    norms = lines(tmp_path / "run" / "norms.jsonl")
    assert [(n["epoch"], n["step"]) for n in norms] == [(1, BATCHES_PER_EPOCH), (2, 2 * BATCHES_PER_EPOCH)]
    assert all(n["norm"] > 0 for n in norms)
    # The example's selection rule is what the log holds and what picked the best epoch: the same run under the
    # plain Recipe (the same training: validation draws no random numbers) gives the metrics the rule combines.
    plain = run(load_config(config), tmp_path / "plain", progress=False, summary=False)
    chosen, measured = (
        [r for r in lines(tmp_path / d / "metrics.jsonl") if r.get("split") == "validation" and "system" not in r] for d in ("run", "plain")
    )
    assert [r["ndcg@10"] for r in chosen] == pytest.approx([r["ndcg@10"] + 0.5 * r["recall@10"] for r in measured])
    assert report["validation"]["model"]["ndcg@10"] == max(r["ndcg@10"] for r in chosen)
    assert report["metrics"] == plain["metrics"] or report["best_epoch"] != plain["best_epoch"]
