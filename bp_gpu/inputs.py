"""What ``fit`` and ``partial_fit`` train on, checked once at the public edge: arrays in memory, or a
``bp_gpu.data`` data set streamed chunk by chunk.

Both kinds of input answer the same questions for the training pipeline (``bp_gpu.pipeline``), so the
pipeline never asks which kind it has: its labels (``label_set``), its 0/1 targets, a held-out part
for early stopping (``split``), the statistics of its features (``moments``), the accuracy of a
network on it (``count_hits``) and its batches (``batches``).

- ``ArrayInput``: X checked (2-D, finite, fitting the model's dtype) and converted once to the model's
  dtype, where training reads it (a CuPy array stays on its device); its targets encoded once. The
  held-out part is a stratified sample of rows; batches come from ``bp_gpu.train.ArraySource``.
- ``DatasetInput``: a data set; its values are checked as its chunks are read (``bp_gpu.data``
  errors name the file, row and column). The held-out part is whole chunks; batches come from
  ``bp_gpu.dataset_source.DatasetSource`` (a reader thread, memory bounded by a few chunks).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import _validate as V
from ._feature_names import check_feature_names, feature_names
from .data.arrays import from_arrays
from .data.dataset import Dataset
from .data.moments import Moments
from .labels import (
    BINARY,
    MULTILABEL,
    LabelEncoder,
    LabelSet,
    as_label_array,
    check_labels,
    check_labels_against,
    hits,
    raw_proba,
)
from .standardize import Standardizer
from .train import ArraySource

CLASSES_NEEDED = ("classes must be passed on the first call to partial_fit (every label that will appear, e.g. "
                  "np.unique(y_all))")


def check_X(X: Any, n_features: int | None = None) -> Any:
    """X as a 2-D finite float array (a CuPy array stays on the device; the dtype is X's own float
    dtype, or float64); with ``n_features`` (a fitted model) its width must match. Messages follow
    scikit-learn's where it has one."""
    if type(X).__module__.startswith("scipy.sparse"):
        raise TypeError("sparse input is not supported: MLPClassifier needs dense X (convert with X.toarray() if it "
                        "fits in memory)")
    if hasattr(X, "iloc"):  # a pandas DataFrame: its values (the caller checked the names)
        X = X.to_numpy()
    if V.array_module(X) is np:
        X = np.asarray(X)
        if X.dtype.kind == "c":
            raise ValueError("Complex data not supported: X must be real")
        X = V.numeric(X, "X")
    if X.ndim != 2:
        raise ValueError(f"Expected 2-D X (n_samples, n_features), got {X.ndim}-D with shape {X.shape}. Reshape your "
                         "data: X.reshape(-1, 1) if it holds one feature, X.reshape(1, -1) if it holds one sample.")
    if X.shape[1] == 0:
        raise ValueError(f"X has 0 feature(s) (shape={X.shape}) while a minimum of 1 is required.")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"X has {X.shape[1]} features, but MLPClassifier is expecting {n_features} features as input.")
    dtype = X.dtype if X.dtype.kind == "f" else np.float64
    return V.check_features(X, X.shape[1], dtype, V.array_module(X))


def on_device(net: Any, X: Any, scaler: Standardizer | None = None) -> Any:
    """Checked X (``check_X``) on the network's device in its dtype, standardised with ``scaler``."""
    Xd = V.narrowed(X, net.dtype, net._engine.xp)
    return Xd if scaler is None else scaler.apply(Xd)


class ArrayInput:
    """Rows in memory: ``X`` (n, d) checked, in the model's dtype, on the host or already on the
    network's device; ``y`` the labels as given (checked by ``label_set``); ``names`` the DataFrame's
    column names or None. ``where`` and ``targets_are`` word the messages."""

    where = "y"
    targets_are = "y is"

    def __init__(self, X: Any, y: Any, names: np.ndarray | None) -> None:
        self.X, self.y, self.names = X, y, names
        self.T: np.ndarray | None = None  # (n, n_outputs) 0/1 in the model's dtype, once encoded

    @classmethod
    def checked(cls, X: Any, y: Any, fitted: Any = None) -> ArrayInput:
        """X and y of a ``fit`` / ``partial_fit`` call; ``fitted``: the model to continue (its feature
        names and width), or None."""
        names = feature_names(X)
        if fitted is not None:
            check_feature_names(fitted.feature_names, X)
        return cls(check_X(X, None if fitted is None else fitted.n_features), y, names)

    def to_model(self, net: Any) -> None:
        """X in the network's dtype, where training reads it: host memory, or the network's device
        for an array already there. A value too large for the dtype is an error here, before training."""
        xp = V.array_module(self.X)
        self.X = V.narrowed(self.X, net.dtype, xp if xp is net._engine.xp else np)

    @property
    def n_rows(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    def require_classes(self, classes: Any) -> None:
        """A first ``partial_fit`` on 1-D labels cannot know every class from one batch of rows."""
        y = as_label_array(self.y)
        if classes is None and not (y is not None and y.ndim == 2 and y.shape[1] > 1):
            raise ValueError(CLASSES_NEEDED)

    def label_set(self, classes: np.ndarray | None = None, fitted_kind: str | None = None) -> LabelSet:
        """This process's labels checked (against ``classes`` when given) and summarised."""
        if fitted_kind == MULTILABEL:
            y = as_label_array(self.y)
            if y is None or y.ndim != 2:
                raise ValueError("the model was fitted on a multi-label indicator matrix; y must be 2-D")
        self.y, labels = check_labels(self.y, self.n_rows, classes)
        return labels

    def encode(self, encoder: LabelEncoder) -> None:
        T = encoder(self.y)
        self.T = T if V.array_module(self.X) is np else V.array_module(self.X).asarray(T)

    def split(self, kind: str, fraction: float, rng: np.random.Generator) -> tuple[ArrayInput, ArrayInput]:
        """(training rows, validation rows): stratified per class (plain for multi-label)."""
        T = V.to_numpy(self.T)
        n = T.shape[0]
        if kind == MULTILABEL:
            groups = [np.arange(n)]
        else:
            labels = T[:, 0] if kind == BINARY else T.argmax(axis=1)
            groups = [np.flatnonzero(labels == c) for c in np.unique(labels)]
        val = [rng.permutation(g)[: int(round(fraction * len(g)))] for g in groups]
        va = np.sort(np.concatenate(val))
        tr = np.setdiff1d(np.arange(n), va)
        if len(va) == 0 or len(tr) == 0:
            raise ValueError(f"early_stopping: validation_fraction={fraction} of {n} samples leaves {len(tr)} training "
                             f"and {len(va)} validation samples; both need at least one")
        return self._rows(tr), self._rows(va)

    def _rows(self, idx: np.ndarray) -> ArrayInput:
        xp = V.array_module(self.X)
        part = ArrayInput(self.X[xp.asarray(idx)], None, self.names)
        part.T = self.T[xp.asarray(idx)]
        return part

    def moments(self, dtype: np.dtype) -> Moments:
        """The statistics of the rows, computed as for a data set (chunk by chunk, so the temporaries
        stay small), from X as the model reads it."""
        return from_arrays(V.to_numpy(self.X)).moments(dtype)

    def scorer(self, net: Any, kind: str, scaler: Standardizer | None) -> Callable[[], tuple[int, int]]:
        """``score()`` -> (rows the network predicts right, rows), called once an epoch: the rows are
        moved to the device and standardised once, here."""
        Xd, T, n = on_device(net, self.X, scaler), V.to_numpy(self.T), self.n_rows
        return lambda: (hits(kind, raw_proba(net, Xd), T), n)

    def batches(self, net: Any, batch_size: int, scaler: Standardizer | None) -> ArraySource:
        X = self.X if scaler is None else scaler.apply(self.X)
        return ArraySource(net._engine, X, self.T, batch_size)


class DatasetInput:
    """A data set with a target column, its values checked as they are read."""

    def __init__(self, ds: Dataset, y: Any, method: str) -> None:
        if y is not None:
            raise TypeError(f"{method}(dataset) takes the labels from the data set's target column ({ds.target!r}); "
                            "do not pass y")
        if ds.target is None:
            raise ValueError(f"{ds.path}: the data set has no target column; open it with target=... to train on it "
                             "(bp_gpu.data.open(path, target='label'))")
        if ds.n_rows == 0:
            raise ValueError(f"{ds.path}: the data set has no rows")
        self.ds = ds
        self.names = np.array(ds.feature_names, dtype=object) if ds.named_columns else None
        self.where = f"{ds.path}: the target column {ds.target!r}"
        self.targets_are = f"{ds.path}: its targets are"
        self.encoder: LabelEncoder | None = None

    @classmethod
    def checked(cls, ds: Dataset, y: Any, method: str, fitted: Any = None) -> DatasetInput:
        inp = cls(ds, y, method)
        if fitted is not None:
            check_dataset_features(ds, fitted.n_features, fitted.feature_names)
        return inp

    @property
    def n_rows(self) -> int:
        return int(self.ds.n_rows)

    @property
    def n_features(self) -> int:
        return self.ds.n_features

    def in_memory(self) -> ArrayInput:
        """This data set's rows read into memory (a data-parallel process's shard), its column names
        kept."""
        X, y = self.ds.read_all()
        return ArrayInput(check_X(X), y, self.names)

    def require_classes(self, classes: Any) -> None:
        """A data set's labels come from a pass over its target column: nothing is required."""

    def label_set(self, classes: np.ndarray | None = None, fitted_kind: str | None = None) -> LabelSet:
        """The labels of the target column, from the data set's label pass, checked (against ``classes``
        when given) and summarised."""
        ds = self.ds
        labels = ds.labels()
        if ds.label_columns is not None:
            bad = labels[(labels != 0) & (labels != 1)] if labels.dtype.kind in "biuf" else labels
            if len(bad):
                raise ValueError(f"{ds.path}: a 2-D target is a multi-label indicator matrix and must hold only 0 "
                                 f"and 1; it holds {bad[0].item()!r}")
            K = ds.label_columns
            if classes is not None and len(classes) != K:
                raise ValueError(f"{ds.path}: the target has {K} label columns but the model has {len(classes)}")
            return LabelSet(K, None, self.where)
        if classes is not None:
            unknown = check_labels_against(labels, classes, f"{ds.path}: the labels of column {ds.target!r}")
            if len(unknown):
                raise ValueError(f"{ds.path}: the target column {ds.target!r} holds labels that are not among the "
                                 f"classes {classes.tolist()!r}: {unknown[:10].tolist()!r}")
        return LabelSet(None, labels, self.where)

    def encode(self, encoder: LabelEncoder) -> None:
        self.encoder = encoder  # applied chunk by chunk, by the reader

    def split(self, kind: str, fraction: float, rng: np.random.Generator) -> tuple[Any, Any]:
        """(training part, validation part): ``round(fraction * n_chunks)`` whole chunks held out (at
        least one, and at least one left to train on), drawn from ``rng``. A data set of one chunk (a
        small file) is read into memory and split as arrays are: a stratified sample of its rows."""
        ds = self.ds
        n = ds.n_chunks
        if n < 2:
            X, y = ds.read_all(self.encoder.dtype)
            rows = ArrayInput(X, y, self.names)
            rows.encode(self.encoder)
            return rows.split(kind, fraction, rng)
        k = min(n - 1, max(1, int(round(fraction * n))))
        held = np.sort(rng.permutation(n)[:k])
        return self._view(ds.select_chunks(np.setdiff1d(np.arange(n), held))), self._view(ds.select_chunks(held))

    def _view(self, part: Dataset) -> DatasetInput:
        view = DatasetInput(part, None, "fit")
        view.encoder = self.encoder
        return view

    def moments(self, dtype: np.dtype) -> Moments:
        return self.ds.moments(dtype)

    def to_model(self, net: Any) -> None:
        """Nothing to convert: chunks are read in the network's dtype."""

    def scorer(self, net: Any, kind: str, scaler: Standardizer | None) -> Callable[[], tuple[int, int]]:
        """``score()`` -> (rows predicted right, rows), streamed over the chunks each time."""
        return lambda: dataset_hits(net, kind, self.ds, self.encoder, scaler)

    def batches(self, net: Any, batch_size: int, scaler: Standardizer | None) -> Any:
        from .dataset_source import DatasetSource  # its reader thread's module, needed for data sets only

        return DatasetSource(net._engine, self.ds, batch_size, n_outputs=net.layer_sizes[-1], encode=self.encoder,
                             transform=None if scaler is None else scaler.transform)


def training_input(X: Any, y: Any, method: str, fitted: Any = None) -> Any:
    """The checked input of a ``fit``/``partial_fit`` call (``method``): a ``DatasetInput`` for a data
    set given as X, else an ``ArrayInput``."""
    if isinstance(X, Dataset):
        return DatasetInput.checked(X, y, method, fitted)
    return ArrayInput.checked(X, y, fitted)


def check_dataset_features(ds: Dataset, n_features: int, fitted_names: np.ndarray | None) -> None:
    """A data set to predict on or continue training with has the model's features, by count and (where
    both have names) by name and order."""
    if ds.n_features != n_features:
        raise ValueError(f"{ds.path} has {ds.n_features} feature columns, but MLPClassifier is expecting {n_features} "
                         "features as input")
    if fitted_names is not None and ds.named_columns and list(ds.feature_names) != [str(n) for n in fitted_names]:
        raise ValueError(f"{ds.path}: the feature columns {ds.feature_names} are not those the model was fitted with, "
                         f"in its order: {list(fitted_names)}; open it with features=[...] in that order")


def chunk_proba(net: Any, X: np.ndarray, scaler: Standardizer | None) -> np.ndarray:
    """p(t = 1 | x) per output of a data set chunk (its own array, of the model's dtype)."""
    if scaler is not None:
        scaler.transform(X)
    return raw_proba(net, net._engine.xp.asarray(X))


def dataset_hits(net: Any, kind: str, ds: Dataset, encoder: LabelEncoder, scaler: Standardizer | None
                 ) -> tuple[int, int]:
    """(rows predicted right, rows) over a data set, chunk by chunk."""
    right = n = 0
    for c in ds.iter_chunks(dtype=net.dtype):
        P = chunk_proba(net, c.X, scaler)
        right += hits(kind, P, encoder(c.y))
        n += len(P)
    return right, n

