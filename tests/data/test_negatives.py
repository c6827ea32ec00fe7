"""Negative sampling: the draws follow the stated distribution (chi-square), never hit the positive, and
are reproducible from the seed."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from crossrec_peft.data.negatives import NegativeSampler
from crossrec_peft.errors import ConfigError

COUNTS = np.array([0, 1, 3, 10, 30, 100, 2, 5])


@pytest.mark.parametrize(
    "distribution, alpha, seen_only",
    [("uniform", 0.75, False), ("popularity", 1.0, False), ("popularity", 0.5, False), ("uniform", 0.75, True), ("popularity", 1.0, True)],
)
def test_draws_follow_the_distribution_given_the_positive(distribution, alpha, seen_only):
    sampler = NegativeSampler(COUNTS, distribution=distribution, alpha=alpha, seen_only=seen_only)
    expected_weights = np.ones(len(COUNTS)) if distribution == "uniform" else (COUNTS + 1.0) ** alpha
    if seen_only:  # item 0 has no training interactions: never drawn
        expected_weights = np.where(COUNTS > 0, expected_weights, 0.0)
    positive = 5  # the most popular item: exclusion matters most here
    draws = sampler.sample(np.full(4000, positive), 5, np.random.default_rng(0))
    assert draws.shape == (4000, 5) and not (draws == positive).any()
    observed = np.bincount(draws.ravel(), minlength=len(COUNTS))
    if seen_only:
        assert observed[0] == 0
    drawable = (np.arange(len(COUNTS)) != positive) & (expected_weights > 0)
    expected = expected_weights[drawable] / expected_weights[drawable].sum() * draws.size
    result = stats.chisquare(observed[drawable], expected)
    assert result.pvalue > 1e-3, (observed, expected)


def test_popularity_is_not_uniform():
    # The chi-square test above must be able to fail: uniform draws are rejected as popularity draws.
    uniform = NegativeSampler(COUNTS, distribution="uniform").sample(np.zeros(4000, dtype=int), 5, np.random.default_rng(1))
    weights = np.delete((COUNTS + 1.0), 0)
    expected = weights / weights.sum() * uniform.size
    observed = np.delete(np.bincount(uniform.ravel(), minlength=len(COUNTS)), 0)
    assert stats.chisquare(observed, expected).pvalue < 1e-6


def test_every_row_excludes_its_own_positive_and_seed_reproduces():
    sampler = NegativeSampler(np.ones(3), distribution="popularity")
    positives = np.arange(3).repeat(200)
    a = sampler.sample(positives, 4, np.random.default_rng(7))
    assert not (a == positives[:, None]).any()
    np.testing.assert_array_equal(a, sampler.sample(positives, 4, np.random.default_rng(7)))
    assert not np.array_equal(a, sampler.sample(positives, 4, np.random.default_rng(8)))


def test_log_expected_count_is_log_of_draws_times_probability():
    sampler = NegativeSampler(COUNTS, distribution="popularity", alpha=1.0)
    q = (COUNTS + 1.0) / (COUNTS + 1.0).sum()
    np.testing.assert_allclose(sampler.log_expected_count(np.array([0, 5]), 10), np.log(10 * q[[0, 5]]))


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="uniform, popularity"):
        NegativeSampler(COUNTS, distribution="zipf")
    with pytest.raises(ConfigError, match="at least two items"):
        NegativeSampler(np.ones(1))
    with pytest.raises(ConfigError, match="at least two items with training interactions"):
        NegativeSampler(np.array([0, 0, 4]), seen_only=True)
