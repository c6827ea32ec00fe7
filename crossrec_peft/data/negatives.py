"""Sampled negatives for training: items drawn uniformly or in proportion to popularity^alpha, never the
positive they are drawn for. Shared by the `retrieval` and `ctr` objectives.

The distribution over the catalog is q(j) ∝ (count_j + 1)^alpha, where count_j is item j's number of training
interactions: alpha = 0 is uniform, alpha = 1 follows popularity, 0.75 is word2vec's compromise. The add-one
keeps items never seen in training drawable, unless `seen_only`: then only items with training interactions
are drawn (q(j) = 0 for the others). `log_expected_count` gives the logQ correction term.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError

DISTRIBUTIONS = ("uniform", "popularity")


class NegativeSampler:
    """Draws `k` negatives per positive item from a fixed distribution over the catalog, excluding the positive.

    Exclusion is by rejection (redraw the clashes), so a negative's probability is q(j) / (1 - q(positive)).
    """

    def __init__(self, counts: np.ndarray, *, distribution: str = "uniform", alpha: float = 0.75, seen_only: bool = False):
        if distribution not in DISTRIBUTIONS:
            raise ConfigError(f"negative sampling distribution must be one of {', '.join(DISTRIBUTIONS)}, got '{distribution}'.")
        counts = np.asarray(counts, dtype=np.float64)
        if len(counts) < 2:
            raise ConfigError("negative sampling needs a catalog of at least two items.")
        self.distribution = distribution
        self.alpha = 0.0 if distribution == "uniform" else float(alpha)
        weights = (counts + 1.0) ** self.alpha
        if seen_only:
            # An item that is never a training target is otherwise only ever a negative: the heads then learn
            # to push down whatever looks like it, which is exactly the cold-start items of the test split.
            if int((counts > 0).sum()) < 2:
                raise ConfigError("seen_only negative sampling needs at least two items with training interactions.")
            weights = np.where(counts > 0, weights, 0.0)
        self.probs = weights / weights.sum()
        self._uniform = self.alpha == 0.0 and not seen_only  # plain integers, no search
        self._cdf = np.cumsum(self.probs)
        self._cdf[-1] = 1.0  # no draw may fall past the last item through rounding

    @property
    def num_items(self) -> int:
        return len(self.probs)

    def sample(self, positives: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
        """[len(positives), k] item indices, each different from its row's positive."""
        positives = np.asarray(positives, dtype=np.int64)
        out = self._draw((len(positives), k), rng)
        clash = out == positives[:, None]
        while clash.any():
            out[clash] = self._draw(int(clash.sum()), rng)
            clash = out == positives[:, None]
        return out

    def _draw(self, shape, rng: np.random.Generator) -> np.ndarray:
        if self._uniform:
            return rng.integers(0, self.num_items, size=shape)
        return np.searchsorted(self._cdf, rng.random(size=shape), side="right").clip(max=self.num_items - 1)

    def log_expected_count(self, items: np.ndarray, draws: int) -> np.ndarray:
        """log(draws * q(item)): the logQ correction subtracted from a sampled item's logit (sampled softmax)."""
        return np.log(draws * self.probs[np.asarray(items)])
