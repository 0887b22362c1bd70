"""``standardize=True``: every feature mapped to ``(x - mean) / std`` with the training rows' statistics.

The statistics come from one streaming pass over the training rows (``bp_gpu.data.Moments``, Chan
et al.'s merge of per-chunk moments), and in a data-parallel job from every process's rows: each
process computes its moments, and the moments are merged in rank order, so every process gets the
same mean and std. A single process merges nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _validate as V
from .data.moments import Moments


class Standardizer:
    """``x -> (x - mean) / std`` per feature.

    ``mean``/``std`` are float64 (d,); the arithmetic runs in the model's dtype, subtract then divide,
    as the ONNX export's ``Sub`` and ``Div`` nodes do, so bp_gpu and ONNX Runtime feed the network the
    same values.

    Training applies it to the data, not to the weights. Folding it into the first layer
    (``W' = W / std``, ``b' = b - W' mean``) would give the same forward pass but a different
    parametrisation: the gradient with respect to ``W'`` is the one of ``W`` scaled by ``1 / std``
    per input, so every step (and SGD most of all) would move differently from training on
    standardised data. Applied per chunk as the rows are read (for a data set, in the reader's
    thread) the optimizer sees exactly what it would see on data standardised beforehand.
    """

    def __init__(self, mean: np.ndarray, std: np.ndarray, dtype: np.dtype) -> None:
        self.mean64, self.std64 = np.asarray(mean, np.float64), np.asarray(std, np.float64)
        self.mean, self.std = self.mean64.astype(dtype), self.std64.astype(dtype)
        self._device: dict[Any, tuple[Any, Any]] = {}

    def transform(self, X: np.ndarray) -> None:
        """In place on a host array of the model's dtype (a chunk the reader owns)."""
        np.subtract(X, self.mean, out=X)
        np.divide(X, self.std, out=X)

    def apply(self, X: Any) -> Any:
        """A new standardised array, in X's array module (NumPy or CuPy)."""
        xp = V.array_module(X)
        if xp is np:
            return (X - self.mean) / self.std
        key = id(xp)
        if key not in self._device:
            self._device[key] = (xp.asarray(self.mean), xp.asarray(self.std))
        mean, std = self._device[key]
        return (X - mean) / std


def merged(every: list[Moments]) -> Moments:
    """The moments of the union of every process's rows, merged in rank order (a list of one is
    itself)."""
    total = every[0]
    for m in every[1:]:
        total = total.merge(m)
    return total


def standardizer(group: Any, local: Moments, dtype: np.dtype) -> Standardizer:
    """The standardisation of the training rows of every process of ``group`` (this one's moments
    ``local``), the same on every process."""
    every = group.allgather((local.n, local.mean, local.m2), "merging the feature statistics")
    total = merged([Moments(int(n), np.asarray(mean), np.asarray(m2)) for n, mean, m2 in every])
    mean, std = total.mean_std()
    return Standardizer(mean, std, dtype)
