"""The finance suitability check on hand-made cases whose over-risk shares are known."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from crossrec_peft.data import leave_one_out, load_layout
from crossrec_peft.data.domains import get_domain
from crossrec_peft.data.split import EvalCases
from crossrec_peft.suitability import SuitabilityCheck, over_risk_counts, risk_rank, suitability_check, top_k

ITEM_RISK = np.array([1, 2, 3, 4, np.nan])
SCORES = {  # history -> scores of items 0..4
    (2,): [0.1, 0.2, 0.9, 0.8, 0.7],
    (0,): [0.9, 0.1, 0.5, 0.6, 0.2],
    (1,): [0.0, 0.0, 0.0, 0.0, 1.0],
    (): [0.5, 0.4, 0.3, 0.2, 0.1],
}


def scorer(histories):
    return torch.tensor([SCORES[tuple(int(i) for i in h)] for h in histories])


def test_risk_rank():
    assert [risk_rank(v) for v in ("Conservative", "income", "Predicted_Balanced", "AGGRESSIVE", 2, "3")] == [1, 2, 3, 4, 2, 3]
    assert all(math.isnan(risk_rank(v)) for v in ("Not_Available", "", None, 0, 5, 2.5, "risky"))


def test_over_risk_counts():
    top = np.array([[3, 0], [2, 4]])
    assert over_risk_counts(top, ITEM_RISK, np.array([2.0, 2.0])) == (2, 3)  # item 4 has no risk level
    assert over_risk_counts(top, ITEM_RISK, np.array([np.nan, 4.0])) == (0, 1)  # an unprofiled user counts nothing


def test_shares_on_hand_made_cases():
    # case 0: Conservative, item 2 held -> top-2 = items 3 (risk 4, over) and 4 (unknown risk)
    # case 1: Balanced, item 0 held -> top-2 = items 3 (over) and 2 (risk 3, fine)
    # case 2: no profile: left out
    # case 3: Aggressive -> top-2 = items 0 and 1 (nothing is over)
    cases = EvalCases([np.array([2]), np.array([0]), np.array([1]), np.array([], dtype=np.int64)], np.array([4, 3, 0, 1]))
    check = SuitabilityCheck(ITEM_RISK, np.array([1.0, 3.0, np.nan, 4.0]), cases, ks=[2, 1], batch_size=2)
    out = check(scorer)
    assert out["over_risk@1"] == pytest.approx(2 / 3)
    assert out["over_risk@2"] == pytest.approx(2 / 5)
    # Targets: item 4 (unknown), item 3 for a Balanced user (over), item 1 for an Aggressive one.
    assert out["held_out_over_risk"] == pytest.approx(1 / 2)
    assert out["profiled_cases"] == 3


def test_top_k_excludes_history_and_breaks_ties_by_seed():
    scores = torch.zeros(3, 50)
    histories = [np.array([0, 1, 2]), np.array([], dtype=np.int64), np.array([49])]
    first = top_k(scores, histories, 10, torch.Generator().manual_seed(1))
    again = top_k(scores, histories, 10, torch.Generator().manual_seed(1))
    other = top_k(scores, histories, 10, torch.Generator().manual_seed(2))
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    assert not set(first[0]) & {0, 1, 2} and 49 not in first[2]
    assert all(len(set(row)) == 10 for row in first)


def _layout(tmp_path, users: bool):
    pq.write_table(pa.table({"item_id": ["a", "b", "c", "d"], "description": ["w", "x", "y", "z"], "risk_level": [1, 2, 3, 4]}),
                   tmp_path / "items.parquet")
    pq.write_table(pa.table({
        "user_id": ["u1"] * 3 + ["u2"] * 3, "item_id": ["a", "b", "c", "b", "c", "d"], "timestamp": [1, 2, 3, 1, 2, 3],
    }), tmp_path / "interactions.parquet")
    if users:
        (tmp_path / "users.csv").write_text("user_id,risk_level\nu2,Predicted_Aggressive\nu1,Income\n")
    return load_layout(tmp_path, ["description"])


def test_domain_hook_reads_the_users_table(tmp_path):
    data = _layout(tmp_path, users=True)
    split = leave_one_out(data.sequences)
    hook = get_domain("finance").extra_metrics
    check, why = hook(data, split, [1], seed=0)
    assert why == "" and check is not None
    assert check.case_risk.tolist() == [2.0, 4.0]  # aligned with data.user_ids (u1, u2), not the file order
    # u1 (Income) holds a, b: a popularity scorer that prefers d (risk 4) recommends it: over; u2 is Aggressive.
    out = check(lambda histories: torch.tensor([[0.0, 0.0, 0.0, 1.0]] * len(histories)))
    assert out["over_risk@1"] == pytest.approx(1 / 2)


def test_domain_hook_says_why_it_cannot_run(tmp_path):
    data = _layout(tmp_path, users=False)
    check, why = get_domain("finance").extra_metrics(data, leave_one_out(data.sequences), [1])
    assert check is None and "users table" in why


def test_duplicate_user_rows_are_a_clear_error(tmp_path):
    _layout(tmp_path, users=True)
    (tmp_path / "users.csv").write_text("user_id,risk_level\nu2,Income\nu1,Income\nu2,Balanced\n")
    from crossrec_peft.errors import DataError

    with pytest.raises(DataError, match=r"users\.csv, line 4, field 'user_id': duplicate user id 'u2' \(first at line 2\)"):
        load_layout(tmp_path, ["description"])
