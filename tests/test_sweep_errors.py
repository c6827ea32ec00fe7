"""`crossrec-peft sweep` refuses a user's mistake with one paragraph (exit 2), before anything is written:
int ranges that are not whole numbers, non-scalar categorical choices, an --out directory that holds
something other than a sweep study; a trial that fails for real or is interrupted by Ctrl-C prints no
Optuna traceback."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys

import optuna
import pytest

from crossrec_peft.cli import main
from crossrec_peft.errors import ConfigError
from crossrec_peft.sweep import parse_space
from tests.test_sweep import sweep_overrides


@pytest.mark.parametrize(
    "spec, expected",
    [
        ({"type": "floaty", "low": 1, "high": 2}, "Did you mean 'float'?"),
        ({"type": "float", "low": 0.1, "high": 0.01}, "'low' < 'high'"),
        ({"type": "float", "low": 0, "high": 0.01, "log": True}, "log range needs 'low' > 0"),
        ({"type": "float", "low": 0.001, "high": 0.01, "lgo": True}, "unknown field 'lgo'"),
        ({"type": "categorical", "choices": ["mean"]}, "at least two values"),
        (0.01, "must be a mapping"),
        ({"type": "int", "low": 4, "high": 12, "step": 0.5}, "whole-number 'step' of at least 1"),
        ({"type": "int", "low": 4, "high": 12, "step": 1.5}, "whole-number 'step' of at least 1"),
        ({"type": "int", "low": 4.5, "high": 12}, "whole numbers 'low' and 'high'"),
        ({"type": "int", "low": 4, "high": 12.7}, "whole numbers 'low' and 'high'"),
        ({"type": "categorical", "choices": [{"name": "mean"}, {"name": "attention"}]}, "choices must be numbers, strings, booleans or null"),
        ({"type": "categorical", "choices": [[5, 10, 20], [10, 20]]}, "choices must be numbers, strings, booleans or null"),
        ({"type": "categorical", "choices": [8, [16]]}, "got [16]"),
    ],
)
def test_malformed_space_names_the_key(spec, expected):
    with pytest.raises(ConfigError) as err:
        parse_space({"model.max_history": spec})
    assert expected in str(err.value) and "'sweep.space.model.max_history'" in str(err.value)


@pytest.mark.parametrize(
    "spec, low, high, step",
    [
        ({"type": "int", "low": 4, "high": 12, "step": 2}, 4, 12, 2),
        ({"type": "int", "low": 4.0, "high": 12.0, "step": 4.0}, 4, 12, 4),  # YAML 4.0 is a whole number
        ({"type": "int", "low": 4, "high": 12}, 4, 12, None),
    ],
)
def test_space_accepts_whole_int_ranges(spec, low, high, step):
    (dim,) = parse_space({"model.max_history": spec})
    assert (dim.low, dim.high, dim.step) == (low, high, step)


@pytest.mark.parametrize("choices", [[0.001, 0.01], ["mean", "attention"], [True, False], [None, "x"]])
def test_space_accepts_scalar_choices(choices):
    (dim,) = parse_space({"k": {"type": "categorical", "choices": choices}})
    assert list(dim.choices) == choices


@pytest.mark.parametrize(
    "override, expected",
    [
        ("sweep.space={train.lrr: {type: float, low: 0.001, high: 0.01}}", "Did you mean 'lr'?"),
        ("sweep.space={model.user_encoder.name: {type: categorical, choices: [mean, atention]}}", "Did you mean 'attention'?"),
        ("sweep.metric=ndcg@7", "'sweep.metric'"),
        ("sweep.space={}", "declares no search space"),
        ("sweep.space={model.max_history: {type: int, low: 4, high: 12, step: 0.5}}", "'sweep.space.model.max_history'"),
        ("sweep.space={model.max_history: {type: int, low: 4.5, high: 12}}", "whole numbers"),
        ("sweep.space={model.user_encoder: {type: categorical, choices: [{name: mean}, {name: attention}]}}", "'sweep.space.model.user_encoder'"),
        ("sweep.space={eval.ks: {type: categorical, choices: [[5, 10], [10, 20]]}}", "'sweep.space.eval.ks'"),
    ],
)
def test_sweep_command_refuses_bad_space_and_writes_nothing(tmp_path, capsys, override, expected):
    out = tmp_path / "sweep"
    assert main(["sweep", "ecommerce", override, "--trials", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.startswith("error: ") and "Traceback" not in err
    assert not out.exists()


def _user_files(out):
    (out / "sweep.json").write_text('{"mine": true}\n')


def _orphan_trials(out):
    (out / "trial-000").mkdir()
    (out / "trial-000" / "report.json").write_text("{}\n")


def _not_sqlite(out):
    (out / "study.db").write_text("my notes, not a database\n")


def _corrupt_sqlite(out):
    (out / "study.db").write_bytes(b"SQLite format 3\x00" + b"\xff" * 200)


@pytest.mark.parametrize(
    "make, expected",
    [
        (_user_files, "is not empty and holds no sweep study (study.db)"),
        (_orphan_trials, "holds trial directories (trial-000) but no study.db"),
        (_not_sqlite, "study.db' is not a sweep study"),
        (_corrupt_sqlite, "study.db' is not a sweep study"),
    ],
)
def test_sweep_refuses_an_out_dir_without_a_usable_study(tiny_bert, tmp_path, capsys, make, expected):
    out = tmp_path / "mine"
    out.mkdir()
    make(out)
    before = {p.relative_to(out): (p.read_bytes() if p.is_file() else None) for p in out.rglob("*")}
    assert main(["sweep", "ecommerce", *sweep_overrides(tiny_bert), "--trials", "1", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert expected in err and "choose another --out" in err and "Traceback" not in err and "internal error" not in err
    after = {p.relative_to(out): (p.read_bytes() if p.is_file() else None) for p in out.rglob("*")}
    assert after == before  # nothing of the user's changed, no study created


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def _missing_model(tmp_path):
    return f"hf:{tmp_path / 'no-such-model'}"  # neither a directory nor a Hub id: HF_HUB_OFFLINE=1 in the tests


def _empty_directory(tmp_path):
    (tmp_path / "empty-model").mkdir()
    return f"hf:{tmp_path / 'empty-model'}"  # a directory transformers finds no config in


@pytest.mark.parametrize("bad_backbone", [_missing_model, _empty_directory], ids=["missing", "empty"])
def test_a_failing_trial_stops_the_sweep_with_one_paragraph(tiny_bert, tmp_path, capsys, bad_backbone):
    """A trial whose sampled setting fails for real: every choice of the space is a text backbone that cannot
    be loaded, which no config check sees (check_space loads configs, not models), so the first trial fails
    building its model. The sweep stops with the trial's own error as one paragraph (exit 2), Optuna logs no
    traceback, and the study records the trial as failed with its overrides, so a rerun does not count it."""
    bad = bad_backbone(tmp_path)
    other = f"hf:{tmp_path / 'also-missing'}"
    # Not the recipe's own backbone (hf:<tiny_bert>), which would be enqueued first and succeed.
    space = f"sweep.space={{model.modalities.text.backbone.name: {{type: categorical, choices: ['{bad}', '{other}']}}}}"
    optuna_log = logging.getLogger("optuna")
    records = _Records()
    optuna_log.addHandler(records)
    out = tmp_path / "sweep"
    try:
        assert main(["sweep", "ecommerce", *sweep_overrides(tiny_bert), space, "--trials", "1", "--out", str(out), "--quiet"]) == 2
    finally:
        optuna_log.removeHandler(records)
    err = capsys.readouterr().err
    assert err.startswith("error: Cannot load text backbone '") and "Traceback" not in err and "internal error" not in err
    assert not [r for r in records.records if r.levelno >= logging.WARNING], "Optuna logged the failed trial (with its traceback)"
    (trial,) = optuna.load_study(study_name="ecommerce", storage=f"sqlite:///{out.resolve() / 'study.db'}").trials
    assert trial.state == optuna.trial.TrialState.FAIL
    (sampled,) = trial.user_attrs["overrides"]
    assert sampled.split("=", 1)[1] in (bad, other) and sampled.split("=", 1)[1][len("hf:"):] in err
    assert not (out / "trial-000" / "report.json").exists() and not (out / "sweep.json").exists()


def test_ctrl_c_during_a_trial_exits_130_without_a_traceback(tiny_bert, tmp_path):
    """A real SIGINT, sent to a sweep in its own process once its first trial has started (long enough to
    still be running): exit code 130, 'interrupted', and no traceback from Optuna or Python."""
    out = tmp_path / "sweep"
    overrides = [*sweep_overrides(tiny_bert), "train.epochs=100", "train.patience=100"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "crossrec_peft", "sweep", "ecommerce", *overrides, "--trials", "1", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        for line in proc.stdout:
            if line.startswith("trial 0:"):
                break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err and "Traceback" not in err and "Trial 0 failed" not in err


def test_an_out_under_a_file_is_refused_before_anything_is_written(tiny_bert, tmp_path, capsys):
    (tmp_path / "a-file").write_text("mine\n")
    out = tmp_path / "a-file" / "sweep"
    assert main(["sweep", "ecommerce", *sweep_overrides(tiny_bert), "--trials", "1", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "Cannot create" in err and "is a file, not a directory" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"] and (tmp_path / "a-file").read_text() == "mine\n"
