"""Splits on hand-made histories: leave-one-out per user, and the global temporal split by cut-off times
(given or as quantiles), with its errors; the chosen split is recorded in a run's report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from crossrec_peft.data import leave_one_out, load_layout, make_split, temporal
from crossrec_peft.errors import ConfigError, DataError
from tests.conftest import write_jsonl


def _arrays(rows):
    return [np.array(r, dtype=np.int64) for r in rows]


# Three users on one timeline (items are 0..9, times in seconds).
SEQUENCES = _arrays([[0, 1, 2, 3], [4, 5, 6], [7, 8]])
TIMES = [np.array(t, dtype=np.float64) for t in ([10, 20, 30, 40], [15, 35, 45], [50, 60])]


def test_leave_one_out_holds_out_the_last_two():
    split = leave_one_out(_arrays([[0, 1, 2, 3], [4, 5, 6]]))
    assert [s.tolist() for s in split.train] == [[0, 1], [4]]
    assert split.validation.targets.tolist() == [2, 5]
    assert [h.tolist() for h in split.validation.histories] == [[0, 1], [4]]
    assert split.test.targets.tolist() == [3, 6]
    assert [h.tolist() for h in split.test.histories] == [[0, 1, 2], [4, 5]]
    assert split.describe() == {"kind": "leave_one_out", "train_interactions": 3, "validation_cases": 2, "test_cases": 2}


def test_temporal_with_given_cut_offs():
    split = temporal(SEQUENCES, TIMES, test_time=40, validation_time=30)
    # Training: everything strictly before the validation cut-off.
    assert [s.tolist() for s in split.train] == [[0, 1], [4]]
    # Validation: first interaction in [30, 40) with the history before 30; user 2 has none there.
    assert split.validation.targets.tolist() == [2, 5]
    assert [h.tolist() for h in split.validation.histories] == [[0, 1], [4]]
    # Test: first interaction at or after 40 with the history before it; user 2 starts after 40 (cold).
    assert split.test.targets.tolist() == [3, 6]
    assert [h.tolist() for h in split.test.histories] == [[0, 1, 2], [4, 5]]
    detail = split.describe()
    assert detail["kind"] == "temporal" and detail["test_time"] == 40.0 and detail["validation_time"] == 30.0
    assert detail["cold_test_users"] == 1 and detail["train_interactions"] == 3 and detail["test_cases"] == 2


def test_temporal_no_case_sees_its_future():
    split = temporal(SEQUENCES, TIMES, test_time=40, validation_time=30)
    time_of = {int(i): float(t) for seq, ts in zip(SEQUENCES, TIMES) for i, t in zip(seq, ts)}
    for cases, cut in ((split.validation, 30), (split.test, 40)):
        for history, target in zip(cases.histories, cases.targets):
            assert all(time_of[int(i)] < cut <= time_of[int(target)] for i in history)


def test_temporal_iso_dates_and_quantiles():
    day = 86_400.0
    base = 1_704_067_200.0  # 2024-01-01T00:00:00Z
    times = [base + day * np.arange(10, dtype=np.float64) for _ in range(3)]
    seqs = _arrays([list(range(10))] * 3)
    by_date = temporal(seqs, times, test_time="2024-01-09T00:00:00Z", validation_time="2024-01-08")
    assert by_date.describe()["test_date"] == "2024-01-09T00:00:00Z"
    assert by_date.test.targets.tolist() == [8, 8, 8] and by_date.validation.targets.tolist() == [7, 7, 7]
    by_quantile = temporal(seqs, times, test_quantile=0.85, validation_quantile=0.75)
    # 30 timestamps (each day thrice): the 0.85 quantile sits at sorted position 24.65 (day 8), the 0.75 one
    # at 21.75 (day 7).
    assert by_quantile.describe()["test_time"] == base + 8 * day
    assert by_quantile.describe()["validation_time"] == base + 7 * day
    assert by_quantile.test.targets.tolist() == [8, 8, 8] and by_quantile.validation.targets.tolist() == [7, 7, 7]


def test_temporal_cut_off_after_everything_leaves_no_test_users():
    with pytest.raises(DataError, match="leaves no test users") as err:
        temporal(SEQUENCES, TIMES, test_time=100, validation_time=30)
    assert "split_time" in str(err.value)


def test_temporal_cut_off_before_everything():
    with pytest.raises(DataError, match="no interaction is before the validation cut-off"):
        temporal(SEQUENCES, TIMES, test_time=12, validation_time=5)
    # One user entirely before the test cut-off, one entirely after it (no history): no test case.
    seqs, times = _arrays([[0, 1], [2, 3]]), [np.array([1.0, 2.0]), np.array([6.0, 7.0])]
    with pytest.raises(DataError, match=r"leaves no test users.*\(1 users have only the latter\)"):
        temporal(seqs, times, test_time=5, validation_time=1.5)


def test_temporal_errors():
    with pytest.raises(DataError, match="not before the test cut-off"):
        temporal(SEQUENCES, TIMES, test_time=30, validation_time=40)
    with pytest.raises(DataError, match="no user has an interaction between"):
        temporal(SEQUENCES, TIMES, test_time=40, validation_time=39)
    with pytest.raises(DataError, match="needs a 'timestamp' column"):
        temporal(SEQUENCES, None)
    with pytest.raises(ConfigError, match="ISO 8601"):
        temporal(SEQUENCES, TIMES, test_time="next tuesday")
    with pytest.raises(ConfigError, match="between 0 and 1"):
        temporal(SEQUENCES, TIMES, test_quantile=1.5)


def test_loader_keeps_timestamps_for_the_split(tmp_path):
    d = tmp_path / "d"
    write_jsonl(d / "items.jsonl", [{"item_id": f"i{i}", "title": f"t{i}"} for i in range(6)])
    rows = [("a", 0, "2024-01-01"), ("a", 1, "2024-01-02"), ("a", 2, "2024-01-05"), ("a", 3, "2024-01-07"),
            ("b", 4, "2024-01-03"), ("b", 5, "2024-01-04"), ("b", 0, "2024-01-06")]
    write_jsonl(d / "interactions.jsonl", [{"user_id": u, "item_id": f"i{i}", "timestamp": t} for u, i, t in rows[::-1]])
    data = load_layout(d, ["title"])
    assert [t.tolist() == sorted(t.tolist()) for t in data.timestamps] == [True, True]
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"split": "temporal", "split_time": "2024-01-06", "split_quantile": 0.9,
                            "validation_time": "2024-01-04", "validation_quantile": 0.8})
    split = make_split(data, cfg)
    # Users in order of first appearance (the file is reversed: b first).
    # a: train i0 i1 (before the 4th), validation i2 (5th), test i3 (7th); b: train i4, validation i5, test i0.
    assert data.user_ids == ["b", "a"]
    assert [s.tolist() for s in split.train] == [[4], [0, 1]]
    assert split.validation.targets.tolist() == [5, 2] and split.test.targets.tolist() == [0, 3]
    assert [h.tolist() for h in split.test.histories] == [[4, 5], [0, 1, 2]]
    (d / "interactions.jsonl").write_text("".join(json.dumps({"user_id": u, "item_id": f"i{i}"}) + "\n" for u, i, _ in rows))
    no_time = load_layout(d, ["title"])
    assert no_time.timestamps is None
    with pytest.raises(DataError, match="timestamp"):
        make_split(no_time, cfg)


def test_run_records_the_temporal_split(tiny_bert, tmp_path):
    from crossrec_peft import recipes
    from crossrec_peft.config import load_config
    from crossrec_peft.pipeline import run
    from tests.conftest import tiny_overrides

    overrides = tiny_overrides(tiny_bert, **{"data.split": "temporal", "export.enabled": "false", "data.split_quantile": 0.8,
                                             "data.validation_quantile": 0.6, "eval.baselines": "[popularity]"})
    cfg = load_config(recipes.path("ecommerce"), overrides, name="temporal")
    report = run(cfg, tmp_path / "run", progress=False, summary=False)
    on_disk = json.loads((tmp_path / "run" / "report.json").read_text())
    assert on_disk["split"] == "temporal" and on_disk["split_detail"] == report["split_detail"]
    detail = on_disk["split_detail"]
    assert detail["validation_time"] < detail["test_time"]
    assert 0 < detail["test_cases"] <= on_disk["data"]["users"]
    assert detail["train_interactions"] < on_disk["data"]["interactions"]
    assert f"Test split (temporal): full ranking over all 120 items for {detail['test_cases']} users" in (tmp_path / "run" / "report.md").read_text()


def test_config_rejects_unknown_split():
    from crossrec_peft import recipes
    from crossrec_peft.config import load_config

    with pytest.raises(ConfigError, match="Did you mean 'temporal'"):
        load_config(recipes.path("ecommerce"), ["data.split=temporl"])
    with pytest.raises(ConfigError, match="data.split_quantile"):
        load_config(recipes.path("ecommerce"), ["data.split_quantile=0"])
