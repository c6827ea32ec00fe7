"""crossrec_peft.errors: the helpers every user-facing message is built with."""

from __future__ import annotations

import pytest

from crossrec_peft.errors import closest, did_you_mean, named


@pytest.mark.parametrize(
    "values, limit, expected",
    [
        ([], 10, ""),
        (["a"], 10, "'a'"),
        (["a", "b", "a"], 10, "'a', 'b'"),  # repeats named once, in order of first appearance
        ([3, "3"], 10, "'3'"),  # ids are compared as the strings a catalog holds
        ([f"i{n}" for n in range(12)], 10, ", ".join(repr(f"i{n}") for n in range(10)) + " and 2 more"),
        (["x", "y", "z"], 2, "'x', 'y' and 1 more"),
        (["x", "y"], 2, "'x', 'y'"),
    ],
)
def test_named(values, limit, expected):
    assert named(values, limit) == expected


@pytest.mark.parametrize(
    "name, choices, match",
    [("lroa", ["lora", "ia3", "side"], "lora"), ("zzzz", ["lora", "ia3"], None)],
)
def test_closest_and_did_you_mean(name, choices, match):
    assert closest(name, choices) == match
    assert did_you_mean(name, choices) == (f" Did you mean '{match}'?" if match else "")
