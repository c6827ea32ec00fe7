"""`report`'s load_run checks the cold_start section of report.json: a malformed one is a DataError naming the
file and the field, not an internal error in the comparison table."""

from __future__ import annotations

import json

import pytest

from crossrec_peft.errors import DataError
from crossrec_peft.report import comparison_rows, load_run

MODEL = {"recall@10": 0.2, "ndcg@10": 0.1, "mrr@10": 0.05}


def write(tmp_path, cold):
    run = tmp_path / "run"
    run.mkdir()
    report = {"name": "r", "metrics": {"model": MODEL}}
    if cold is not ...:
        report["cold_start"] = cold
    (run / "report.json").write_text(json.dumps(report))
    return run


@pytest.mark.parametrize(
    "cold,field",
    [
        ([1, 2], "'cold_start'"),
        ("cold", "'cold_start'"),
        (5, "'cold_start'"),
        ({"metrics": [1]}, "'cold_start.metrics'"),
        ({"metrics": "x"}, "'cold_start.metrics'"),
        ({"metrics": {"model": 5}}, "'cold_start.metrics.model'"),
        ({"metrics": {"model": {"ndcg@10": "high"}}}, "'cold_start.metrics.model'"),
    ],
)
def test_bad_cold_start_is_a_data_error(tmp_path, cold, field):
    run = write(tmp_path, cold)
    with pytest.raises(DataError) as err:
        load_run(run)
    assert str(run / "report.json") in str(err.value) and field in str(err.value)


@pytest.mark.parametrize("cold", [..., None, {}, {"cases": 0}, {"cases": 2, "metrics": {"model": {"ndcg@10": 0.3}}}])
def test_good_cold_start_loads(tmp_path, cold):
    report = load_run(write(tmp_path, cold))
    columns, rows = comparison_rows([report], ["r"])
    assert rows[0][0] == "r" and len(rows[0]) == len(columns)


@pytest.mark.parametrize("cold", [[1, 2], {"metrics": {"model": 5}}])
def test_cli_exit_2(tmp_path, cold, capsys):
    from crossrec_peft.cli import main

    run = write(tmp_path, cold)
    assert main(["report", str(run), "--no-plot"]) == 2
    assert "report.json" in capsys.readouterr().err


def write_named(tmp_path, fields):
    """A report.json with the model's metrics and `fields` on top (a field given as ... is left out)."""
    run = tmp_path / "run"
    run.mkdir()
    report = {"name": "r", "metrics": {"model": MODEL}}
    report.update(fields)
    (run / "report.json").write_text(json.dumps({k: v for k, v in report.items() if v is not ...}))
    return run


@pytest.mark.parametrize(
    "fields, key, shown",
    [
        ({"name": ["a", "b"]}, "'name'", 'a list ["a", "b"]'),
        ({"name": 7}, "'name'", "a number 7"),
        ({"name": True}, "'name'", "a boolean true"),
        ({"name": {"run": "a"}}, "'name'", 'an object {"run": "a"}'),
        ({"metrics": {"model": {"ndcg@10": True}}}, "'metrics.model'", '{"ndcg@10": true}'),
        ({"metrics": {"model": MODEL, "ids": {"ndcg@10": None}}}, "'metrics.ids'", '{"ndcg@10": null}'),
    ],
    ids=["name-list", "name-number", "name-bool", "name-object", "metric-bool", "metric-null"],
)
def test_a_key_of_the_wrong_type_is_a_data_error_naming_file_and_key(tmp_path, capsys, fields, key, shown):
    from crossrec_peft.cli import main

    run = write_named(tmp_path, fields)
    with pytest.raises(DataError) as err:
        load_run(run)
    message = str(err.value)
    assert message.startswith(f"{run / 'report.json'}: field {key} must") and shown in message
    assert main(["report", str(run), "--no-plot"]) == 2  # the CLI: the same message, exit 2
    assert f"{run / 'report.json'}: field {key}" in capsys.readouterr().err


@pytest.mark.parametrize("fields, label", [({"name": "shop"}, "shop"), ({"name": None}, "run"), ({"name": ...}, "run"), ({"name": ""}, "run")],
                         ids=["text", "null", "absent", "empty"])
def test_a_name_that_is_text_or_absent_labels_the_run(tmp_path, fields, label):
    """A text names the run; null, absent or empty fall back to the directory's name."""
    from crossrec_peft.report import run_labels

    run = write_named(tmp_path, fields)
    assert run_labels([run], [load_run(run)]) == [label]
