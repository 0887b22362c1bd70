"""Labels and the network's outputs: what a classifier's y becomes (0/1 targets) and what its outputs
become (probabilities and predicted labels).

Three kinds of targets, every output a sigmoid unit:

- ``binary``: two label values (any dtype, strings too) -> 1 output, ``t = 1`` for ``classes[1]``;
- ``multiclass``: K > 2 classes -> K outputs, one-vs-rest; the prediction is the largest output and
  the probabilities are the K sigmoids normalised to sum to 1;
- ``multilabel``: a 2-D 0/1 indicator matrix (n, K) -> K independent outputs, thresholded at 0.5.

Checking labels is split in two so that every process of a data-parallel job can take part: each
checks its own labels (``check_labels``: everything one process can see, and its set of labels),
then the sets are joined (``join_labels``: the union, and whether it makes a classifier). A single
process joins a set of one.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _validate as V

BINARY, MULTICLASS, MULTILABEL = "binary", "multiclass", "multilabel"
KINDS = (BINARY, MULTICLASS, MULTILABEL)

try:  # scikit-learn's own warning class when it is there, so its filters apply
    from sklearn.exceptions import DataConversionWarning
except ImportError:  # scikit-learn is optional (the `train` extra)

    class DataConversionWarning(UserWarning):  # type: ignore[no-redef]
        """Input converted to the expected shape (as scikit-learn's warning of the same name)."""


@dataclass(frozen=True)
class LabelSet:
    """What one process's labels say about the classes: ``indicator`` K columns of a multi-label
    matrix (``labels`` None), or the sorted unique ``labels`` of 1-D labels; ``where`` names them in
    messages."""

    indicator: int | None
    labels: np.ndarray | None
    where: str = "y"


class LabelEncoder:
    """Raw labels (rows,) or an indicator matrix -> the network's 0/1 targets (rows, n_outputs) of
    ``dtype``. Every label is known to be one of ``classes`` (checked before training)."""

    def __init__(self, kind: str, classes: np.ndarray, dtype: np.dtype) -> None:
        self.kind, self.classes, self.dtype = kind, classes, np.dtype(dtype)

    @property
    def n_outputs(self) -> int:
        return 1 if self.kind == BINARY else len(self.classes)

    def __call__(self, y: np.ndarray) -> np.ndarray:
        if self.kind == MULTILABEL:
            return np.asarray(y, dtype=self.dtype).reshape(len(y), -1)
        y = np.asarray(y).reshape(len(y))
        if self.kind == BINARY:
            return (y == self.classes[1]).astype(self.dtype)[:, None]
        T = np.zeros((len(y), len(self.classes)), self.dtype)
        T[np.arange(len(y)), np.searchsorted(self.classes, y)] = 1
        return T


def kind_of(classes: np.ndarray, indicator: bool) -> str:
    return MULTILABEL if indicator else (BINARY if len(classes) == 2 else MULTICLASS)


def as_label_array(y: Any) -> np.ndarray | None:
    """y (a list, NumPy or CuPy array, pandas Series) as a NumPy array; None stays None."""
    if y is None:
        return None
    if hasattr(y, "iloc"):
        y = y.to_numpy()
    return V.to_numpy(y) if V.array_module(y) is not np else np.asarray(y)


def check_labels(y: Any, n_rows: int, classes: np.ndarray | None = None) -> tuple[np.ndarray, LabelSet]:
    """This process's y checked against its ``n_rows`` rows of X: ``(y as NumPy, its LabelSet)``.
    ``classes`` (given to ``partial_fit``, or a fitted model's): every label must be one of them.
    Messages follow scikit-learn's where it has one."""
    if y is None:
        raise ValueError("MLPClassifier requires y to be passed, but the target y is None")
    y = as_label_array(y)
    if y.ndim == 2 and y.shape[1] == 1:
        warnings.warn("A column-vector y was passed when a 1d array was expected; using y.ravel()",
                      DataConversionWarning, stacklevel=4)
        y = y.ravel()
    if y.ndim not in (1, 2):
        raise ValueError(f"y must be 1-D labels or a 2-D 0/1 indicator matrix; got shape {y.shape}")
    if y.shape[0] != n_rows:
        raise ValueError(f"y has {y.shape[0]} rows but X has {n_rows}; they must match")
    if y.ndim == 2:
        Y = V.numeric(y, "y")
        V._check_finite(Y, "y")
        bad = (Y != 0) & (Y != 1)
        if bad.any():
            i, j = V._first_bad(bad)
            raise ValueError(f"y[{i}, {j}] = {Y[i, j].item()!r}; a 2-D y is a multi-label indicator matrix and must "
                             "hold only 0 and 1")
        K = Y.shape[1]
        if classes is not None and len(classes) != K:
            raise ValueError(f"y has {K} label columns but the model was fitted with {len(classes)}")
        return Y, LabelSet(K, None)
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        i = int(np.flatnonzero(~np.isfinite(y))[0])
        raise ValueError(f"y[{i}] is {y[i]}; labels must be finite")
    if y.dtype.kind == "f" and (y != np.round(y)).any():
        i = int(np.flatnonzero(y != np.round(y))[0])
        raise ValueError(f"Unknown label type: continuous (y[{i}] = {y[i].item()!r}); a classifier needs discrete "
                         "labels")
    try:
        labels = np.unique(y)
    except TypeError as exc:
        raise TypeError(f"y mixes label types that cannot be ordered ({exc}); use one type") from None
    if classes is not None:
        unknown = ~np.isin(y, classes)
        if unknown.any():
            i = int(np.flatnonzero(unknown)[0])
            raise ValueError(f"y[{i}] = {y[i].item()!r} is not one of the classes {classes.tolist()!r}")
    return y, LabelSet(None, labels)


def join_labels(sets: list[LabelSet], *, need_two: bool = True) -> tuple[str, np.ndarray]:
    """(kind, classes) from every process's ``LabelSet`` in rank order: the union of the labels, or
    ``arange(K)`` for an indicator matrix. The same sets give the same verdict on every process, so
    an error raised here is raised everywhere. ``need_two``: the union must hold two classes
    (``fit``; a first ``partial_fit`` gets them from ``classes``)."""
    n = len(sets)
    kinds = ["indicator" if s.indicator is not None else "labels" for s in sets]
    if len(set(kinds)) > 1:
        r = kinds.index("indicator")
        raise ValueError(f"rank {r} of {n}: y is a 2-D indicator matrix there but 1-D labels on rank "
                         f"{kinds.index('labels')}; every process must pass the same kind of y")
    if kinds[0] == "indicator":
        Ks = [s.indicator for s in sets]
        for r, K in enumerate(Ks):
            if K != Ks[0]:
                raise ValueError(f"rank {r} of {n}: y has {K} label columns but rank 0's has {Ks[0]}")
        return MULTILABEL, np.arange(Ks[0])
    parts = [s.labels for s in sets]
    if n == 1:
        classes = parts[0]
    else:
        try:
            classes = np.unique(np.concatenate(parts))
        except (TypeError, ValueError) as exc:
            kinds_ = ", ".join(f"rank {r}: {a.dtype}" for r, a in enumerate(parts))
            raise TypeError(f"the processes' labels cannot be compared ({kinds_}): {exc}") from None
    if need_two and len(classes) < 2:
        where = "y" if n > 1 else sets[0].where
        everywhere = " on every process" if n > 1 else ""
        raise ValueError(f"{where} has only one class ({classes[0].item()!r}){everywhere}; a classifier needs at "
                         "least two")
    return kind_of(classes, False), classes


def given_classes(classes: Any) -> np.ndarray:
    """``partial_fit``'s ``classes``: sorted, unique, at least two."""
    cls = np.unique(np.asarray(classes))
    if len(cls) < 2:
        raise ValueError(f"classes must hold at least two labels; got {cls.tolist()!r}")
    return cls


def _family(a: np.ndarray) -> str:
    return "text" if a.dtype.kind in "USO" else "numbers"


def check_labels_against(labels: np.ndarray, classes: np.ndarray, what: str) -> np.ndarray:
    """The labels of ``labels`` that are not among ``classes`` (an error when the two cannot be
    compared at all: text against numbers)."""
    if len(labels) and _family(labels) != _family(classes):
        shown = classes.tolist() if len(classes) <= 10 else classes[:10].tolist() + ["..."]
        raise ValueError(f"{what} are {_family(labels)} ({labels[:3].tolist()!r}...) but the model's classes "
                         f"are {_family(classes)} ({shown!r}); they cannot be compared")
    return labels[~np.isin(labels, classes)]


# -- outputs -----------------------------------------------------------------------------------------
def raw_proba(net: Any, Xd: Any) -> np.ndarray:
    """p(t = 1 | x) per output as float64 NumPy (n, n_outputs), for X already on the network's device
    in its dtype; the engine runs it in chunks."""
    y = V.to_numpy(net._engine.predict_proba(Xd)).astype(np.float64)
    return y if net.positive_class == 1 else 1.0 - y


def hits(kind: str, P: np.ndarray, T: np.ndarray) -> int:
    """Rows whose prediction from the raw probabilities P (n, n_outputs) matches the targets T."""
    if kind == MULTICLASS:
        return int(np.sum(P.argmax(axis=1) == T.argmax(axis=1)))
    return int(np.sum(((P > 0.5) == (T == 1)).all(axis=1)))


def probabilities(kind: str, P: np.ndarray) -> np.ndarray:
    """``predict_proba`` from the raw per-output probabilities P (n, n_outputs)."""
    if kind == BINARY:
        return np.hstack([1.0 - P, P])
    if kind == MULTICLASS:
        s = P.sum(axis=1, keepdims=True)
        # A row whose every sigmoid underflowed to 0 carries no preference: uniform.
        return np.where(s > 0, P / np.where(s > 0, s, 1.0), 1.0 / P.shape[1])
    return P


def predictions(kind: str, classes: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """``predict`` from ``predict_proba``'s output."""
    if kind == MULTILABEL:
        return (proba > 0.5).astype(np.int64)
    return classes[proba.argmax(axis=1)]
