"""Per-feature mean and standard deviation in one streaming pass, chunk by chunk.

Each chunk contributes its count ``n``, mean and ``M2 = sum (x - mean)^2`` (two passes over the
chunk, in float64), and chunks are merged with Chan, Golub and LeVeque's parallel formula
("Updating formulae and a pairwise algorithm for computing sample variances", 1979):

    n = n_a + n_b,  delta = mean_b - mean_a,
    mean = mean_a + delta * n_b / n,
    M2 = M2_a + M2_b + delta^2 * n_a * n_b / n

which never subtracts two large sums (the one-pass ``E[x^2] - E[x]^2`` loses every digit when the
mean is large against the spread). The merge is associative, so ranks of a distributed job can
merge their ``Moments`` the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Moments:
    """Count, mean and sum of squared deviations per feature (float64, shape ``(d,)``)."""

    n: int
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def empty(cls, d: int) -> Moments:
        return cls(0, np.zeros(d), np.zeros(d))

    @classmethod
    def of(cls, X: np.ndarray) -> Moments:
        """The moments of the rows of ``X`` (n, d)."""
        X = np.asarray(X, dtype=np.float64)
        if X.shape[0] == 0:
            return cls.empty(X.shape[1])
        mean = X.mean(axis=0)
        return cls(X.shape[0], mean, ((X - mean) ** 2).sum(axis=0))

    def merge(self, other: Moments) -> Moments:
        """The moments of the union of both row sets (Chan et al.'s pairwise update)."""
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        n = self.n + other.n
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.n / n)
        m2 = self.m2 + other.m2 + delta**2 * (self.n * other.n / n)
        return Moments(n, mean, m2)

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, std)`` with the population standard deviation (``ddof=0``, as scikit-learn's
        ``StandardScaler``). A constant feature gets ``std = 1.0``, so standardising maps it to 0
        instead of dividing by zero (or by rounding noise)."""
        if self.n == 0:
            raise ValueError("no rows: the mean and standard deviation of 0 samples are undefined")
        var = self.m2 / self.n
        # "Constant" includes a variance that is only rounding error of the two-pass algorithm:
        # the bound scikit-learn uses (sklearn/preprocessing/_data.py, _is_constant_feature).
        eps = np.finfo(np.float64).eps
        constant = var <= self.n * eps * var + (self.n * self.mean * eps) ** 2
        std = np.where(constant, 1.0, np.sqrt(var))
        return self.mean.copy(), std
