"""`crossrec-peft sweep` on the tiny BERT: the recipe's own setting first, median pruning, a study that
continues after a kill, the best overrides printed as a command that loads (refusals: test_sweep_errors.py)."""

from __future__ import annotations

import json

import optuna
import pytest
from omegaconf import OmegaConf

from crossrec_peft import recipes
from crossrec_peft.cli import main
from crossrec_peft.config import load_config
from crossrec_peft.sweep import parse_space, pruner, run_sweep
from tests.conftest import tiny_overrides

# lr 1e-9 learns nothing: after epoch 2 it is below the recipe's own lr (0.005 here), so the median rule
# (prune_after_trials=1: judged against the first, finished trial) prunes it.
SPACE = "sweep.space={train.lr: {type: categorical, choices: [0.005, 1e-9]}}"


def sweep_overrides(tiny_bert):
    return [*tiny_overrides(tiny_bert, **{"train.epochs": 3, "train.lr": 0.005, "model.modalities.image": "null"}), SPACE, "sweep.prune_after_trials=1"]


def test_sweep_prunes_resumes_and_prints_loadable_best(tiny_bert, tmp_path, capsys):
    out = tmp_path / "sweep"
    overrides = sweep_overrides(tiny_bert)
    first = run_sweep(recipes.path("ecommerce"), overrides, out, trials=2, name="ecommerce", progress=False, enqueue=[{"train.lr": 1e-9}])
    states = [t["state"] for t in first["trials"]]
    assert states == ["complete", "pruned"]
    assert first["trials"][0]["overrides"] == ["train.lr=0.005"]  # the recipe's own setting comes first
    # the pruned run stopped at a validation: it never reached the test split or the report
    assert (out / "trial-000" / "report.json").is_file() and not (out / "trial-001" / "report.json").exists()
    # ...but the validation it was pruned at is in its metrics.jsonl, with the value the study recorded
    logged = [json.loads(line) for line in (out / "trial-001" / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in logged if r.get("split") == "validation" and "train_loss" in r]
    pruned = first["trials"][1]
    assert [r["epoch"] for r in epochs] == list(range(1, pruned["epochs"] + 1)) and epochs[-1]["ndcg@10"] == pruned["value"]
    assert (out / "study.db").is_file() and (out / "sweep.png").is_file()
    assert json.loads((out / "sweep.json").read_text())["trials"] == first["trials"]

    # A sweep killed mid-trial leaves a RUNNING trial in the study: the next run marks it failed, keeps
    # the finished trials as they were and runs only what is missing.
    study = optuna.load_study(study_name="ecommerce", storage=f"sqlite:///{out.resolve() / 'study.db'}")
    study.ask()
    again = run_sweep(recipes.path("ecommerce"), overrides, out, trials=3, name="ecommerce", progress=False)
    assert again["trials"][:2] == first["trials"]
    assert [t["state"] for t in again["trials"]][2:] in (["fail", "complete"], ["fail", "pruned"])
    finished = [t for t in again["trials"] if t["state"] in ("complete", "pruned")]
    assert len(finished) == 3

    best = again["best"]
    assert best["value"] == max(t["value"] for t in again["trials"] if t["state"] == "complete")
    assert best["overrides"] == ["train.lr=0.005"]
    # the printed command reruns the best setting: its overrides load as a config
    assert again["command"].startswith("crossrec-peft recipe ecommerce ") and "sweep." not in again["command"]
    cfg = load_config(recipes.path("ecommerce"), [*tiny_overrides(tiny_bert), *best["overrides"]], name="ecommerce")
    assert cfg.train.lr == 0.005

    # the command on a finished study runs nothing more and prints the table, the best trial and its command
    capsys.readouterr()
    assert main(["sweep", "ecommerce", *overrides, "--trials", "3", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"best: trial {best['number']}" in printed and "rerun it: crossrec-peft recipe ecommerce" in printed
    assert len(json.loads((out / "sweep.json").read_text())["trials"]) == 4


def test_a_trial_is_never_pruned_after_its_last_epoch(tiny_bert, tmp_path):
    """With one epoch, a trial's only validation is its last: one below the median is complete, with its report.
    (On the tiny model one epoch at lr 0.005 scores below the untrained lr 1e-9, so 0.005 is the losing trial.)"""
    out = tmp_path / "sweep"
    overrides = [*sweep_overrides(tiny_bert), "train.epochs=1", "train.lr=1e-9"]
    summary = run_sweep(recipes.path("ecommerce"), overrides, out, trials=2, name="ecommerce", progress=False, enqueue=[{"train.lr": 0.005}])
    first, losing = summary["trials"]
    assert first["overrides"] == ["train.lr=1e-09"] and losing["overrides"] == ["train.lr=0.005"]
    assert losing["value"] < first["value"]  # below the median of the finished trials: the rule would prune it
    assert [first["state"], losing["state"]] == ["complete", "complete"] and (out / "trial-001" / "report.json").is_file()


@pytest.mark.parametrize("name", [n for n in recipes.names() if load_config(recipes.path(n), name=n).sweep.space])
def test_every_shipped_sweep_space_loads_at_its_bounds(name):
    from omegaconf import OmegaConf

    from crossrec_peft.sweep import check_space

    cfg = load_config(recipes.path(name), name=name)
    dims = parse_space(OmegaConf.to_container(cfg.sweep.space))
    check_space(recipes.path(name), [], dims, name)
    assert all(d.contains(OmegaConf.select(cfg, d.key)) for d in dims), "the recipe's own setting is its first trial"


@pytest.mark.parametrize("prune_from_epoch", [1, 2, 3])
def test_a_losing_trial_is_first_pruned_at_prune_from_epoch(prune_from_epoch):
    """Trials report at step = epoch (1-based); the first epoch a clearly losing trial can be pruned is the
    declared one, not the one before it."""
    study = optuna.create_study(direction="maximize", pruner=pruner(OmegaConf.create({"prune_after_trials": 2, "prune_from_epoch": prune_from_epoch})))
    for _ in range(2):
        good = study.ask()
        for epoch in (1, 2, 3, 4):
            good.report(0.5, epoch)
        study.tell(good, 0.5)
    losing = study.ask()
    pruned_at = None
    for epoch in (1, 2, 3, 4):
        losing.report(0.1, epoch)
        if losing.should_prune():
            pruned_at = epoch
            break
    assert pruned_at == prune_from_epoch
