"""``bp_gpu.MLPClassifier``: a sigmoid MLP trained by backpropagation, with scikit-learn's conventions.

Targets and outputs (the notes' network, every unit sigmoid):

- two label values (any dtype, strings too) -> 1 output ``y = p(t = positive_class | x)`` with
  ``t = 1`` for ``classes_[1]``;
- K > 2 classes -> K outputs, one-vs-rest (the notes' several-output case); ``predict`` takes the
  largest, ``predict_proba`` normalises the K sigmoids so each row sums to 1;
- a 2-D 0/1 indicator matrix (n, K) -> multi-label: K independent outputs, ``predict_proba`` is
  the K sigmoids ``p(label k | x)`` (rows do not sum to 1), ``predict`` thresholds them at 0.5.

With scikit-learn importable the class derives from its ``ClassifierMixin, BaseEstimator`` (so
``clone``, ``Pipeline``, ``GridSearchCV``, ``cross_val_score`` and its HTML repr work). Without it a
small stand-in base gives ``get_params``/``set_params``/``score``/``repr`` with the same behaviour,
so training, prediction and save/load need only NumPy.
"""

from __future__ import annotations

import inspect
import math
import numbers
import warnings
from typing import Any

import numpy as np

from . import _validate as V
from ._feature_names import check_feature_names, feature_names
from .data.arrays import from_arrays
from .data.dataset import Dataset
from .mlp import DTYPES, MLP
from .optim import LAMB, SGD, Adam, AdamW, Optimizer, Schedule, warmup_cosine, warmup_linear
from .train import ArraySource, Snapshot, TrainingMonitor, TrainState, train


class _EstimatorBase:
    """Stand-in for scikit-learn's BaseEstimator and ClassifierMixin when scikit-learn is absent."""

    @classmethod
    def _get_param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return sorted(p.name for p in sig.parameters.values() if p.name != "self")

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params: Any) -> _EstimatorBase:
        valid = self._get_param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(
                    f"Invalid parameter {name!r} for estimator {type(self).__name__}. "
                    f"Valid parameters are: {valid!r}."
                )
            setattr(self, name, value)
        return self

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Accuracy of ``predict(X)`` against y (subset accuracy for multi-label)."""
        pred, y = self.predict(X), np.asarray(y)
        hits = (pred == y).all(axis=1) if y.ndim == 2 else pred == y
        return float(np.average(hits, weights=sample_weight))

    def __repr__(self) -> str:
        init = inspect.signature(type(self).__init__).parameters
        changed = [f"{k}={v!r}" for k, v in self.get_params().items() if init[k].default != v]
        return f"{type(self).__name__}({', '.join(changed)})"


try:
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.exceptions import DataConversionWarning, NotFittedError

    _BASES: tuple[type, ...] = (ClassifierMixin, BaseEstimator)
except ImportError:  # scikit-learn is optional (the `train` extra): see the module docstring
    _BASES = (_EstimatorBase,)

    class DataConversionWarning(UserWarning):  # type: ignore[no-redef]
        """Input converted to the expected shape (as scikit-learn's warning of the same name)."""

    class NotFittedError(ValueError, AttributeError):  # type: ignore[no-redef]
        """The estimator is used before ``fit`` (as scikit-learn's error of the same name)."""


BINARY, MULTICLASS, MULTILABEL = "binary", "multiclass", "multilabel"
OPTIMIZERS = ("sgd", "momentum", "adam", "adamw", "lamb")
LR_SCHEDULES = ("constant", "warmup_cosine", "warmup_linear")


def _real(
    name: str,
    value: Any,
    low: float,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {value!r}")
    lo_ok = value > low if low_open else value >= low
    hi_ok = value < high if high_open else value <= high
    if not (math.isfinite(value) and lo_ok and hi_ok):
        lb, hb = ("(" if low_open else "["), (")" if high_open else "]")
        hi = "inf" if high == math.inf else f"{high:g}"
        raise ValueError(f"{name} must be finite and in {lb}{low:g}, {hi}{hb}; got {value!r}")
    return float(value)


class Standardizer:
    """``x -> (x - mean) / std`` per feature, the ``standardize=True`` preprocessing.

    ``mean``/``std`` are float64 (d,) from one streaming pass over the training rows (``Moments``);
    the arithmetic runs in the model's dtype, subtract then divide, as the ONNX export's ``Sub`` and
    ``Div`` nodes do, so bp_gpu and ONNX Runtime feed the network the same values.

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


class LabelEncoder:
    """Raw labels of a data set's rows -> the network's 0/1 targets (rows, n_outputs) of ``dtype``.
    Every label is known to be one of ``classes`` (checked before training, from ``labels()``)."""

    def __init__(self, kind: str, classes: np.ndarray, dtype: np.dtype) -> None:
        self.kind, self.classes, self.dtype = kind, classes, np.dtype(dtype)

    def __call__(self, y: np.ndarray) -> np.ndarray:
        if self.kind == MULTILABEL:
            return np.asarray(y, dtype=self.dtype).reshape(len(y), -1)
        y = np.asarray(y).reshape(len(y))
        if self.kind == BINARY:
            return (y == self.classes[1]).astype(self.dtype)[:, None]
        T = np.zeros((len(y), len(self.classes)), self.dtype)
        T[np.arange(len(y)), np.searchsorted(self.classes, y)] = 1
        return T


def _label_family(a: np.ndarray) -> str:
    return "text" if a.dtype.kind in "USO" else "numbers"


def check_labels_against(labels: np.ndarray, classes: np.ndarray, what: str) -> np.ndarray:
    """The labels of ``labels`` that are not among ``classes`` (an error when the two cannot be
    compared at all: text against numbers)."""
    if len(labels) and _label_family(labels) != _label_family(classes):
        shown = classes.tolist() if len(classes) <= 10 else classes[:10].tolist() + ["..."]
        raise ValueError(f"{what} are {_label_family(labels)} ({labels[:3].tolist()!r}...) but the model's classes "
                         f"are {_label_family(classes)} ({shown!r}); they cannot be compared")
    return labels[~np.isin(labels, classes)]


def make_optimizer(name: str, net: MLP, learning_rate: float | Schedule, momentum: float,
                   weight_decay: float) -> Optimizer:
    """The ``bp_gpu.optim`` optimizer an ``optimizer=`` name stands for (``momentum`` only for
    "momentum")."""
    if name == "sgd":
        return SGD(net, learning_rate, weight_decay=weight_decay)
    if name == "momentum":
        return SGD(net, learning_rate, momentum=momentum, weight_decay=weight_decay)
    return {"adam": Adam, "adamw": AdamW, "lamb": LAMB}[name](net, learning_rate, weight_decay=weight_decay)


def _int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int; got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}; got {value!r}")
    return int(value)


class MLPClassifier(*_BASES):  # type: ignore[misc]
    """Sigmoid multilayer perceptron classifier trained by minibatch backpropagation.

    Parameters
    ----------
    hidden_layer_sizes : int or sequence of int, default (100,)
        Widths of the hidden layers; ``()`` means no hidden layer (logistic regression).
    optimizer : {"sgd", "momentum", "adam", "adamw", "lamb"}, default "adam"
        PyTorch's SGD, SGD with momentum (dampening 0, not Nesterov), Adam (L2 weight decay) and
        AdamW (decoupled weight decay), all with betas 0.9, 0.999 and eps 1e-8; and LAMB (eps 1e-6,
        per-layer trust ratios; see ``bp_gpu.optim.LAMB``).
    learning_rate : float > 0, default 0.001
        The rate, or with a schedule its peak.
    lr_schedule : {"constant", "warmup_cosine", "warmup_linear"}, default "constant"
        A learning-rate schedule over the ``epochs`` of ``fit`` (``bp_gpu.optim.warmup_cosine`` /
        ``warmup_linear``): a linear warm-up over ``warmup_epochs`` to ``learning_rate``, then a
        cosine or linear decay to ``final_learning_rate`` at the last step; the rate stays there
        after. ``partial_fit`` rebuilds it from the current parameters and the data of the call.
    warmup_epochs : float >= 0, default 0.0
        Epochs of linear warm-up (a fraction is rounded to whole steps).
    final_learning_rate : float >= 0, default 0.0
    momentum : float in [0, 1), default 0.9
        Used by ``optimizer="momentum"`` only.
    batch_size : int >= 1, default 200
        Rows per step (capped at the number of samples); the last batch of an epoch is smaller
        when it does not divide the data.
    epochs : int >= 1, default 200
        Passes over the data in ``fit`` (fewer with early stopping).
    weight_decay : float >= 0, default 0.0
        L2 penalty ``weight_decay/2 * ||W||^2`` added to the mean batch loss, on weights only
        (PyTorch's ``weight_decay``; scikit-learn's ``alpha`` is ``weight_decay * batch_size``).
        ``loss_curve_`` reports the data loss without it.
    positive_class : {0, 1}, default 1
        What each output models: ``p(t = 1 | x)`` (1, the usual convention) or ``p(t = 0 | x)``
        (0, the notes' convention). Predictions and probabilities are the same either way, up to
        rounding; it changes the saved network.
    dtype : {"float32", "float64"}, default "float32"
    backend : {"auto", "cpu", "cuda"}, default "auto"
    random_state : None, int >= 0, numpy.random.Generator or numpy.random.RandomState, default None
        The source of the initial weights, the shuffle order and the early-stopping split: three
        independent streams of one ``numpy.random.SeedSequence``, drawn on the host so cpu and cuda
        agree to rounding. As in scikit-learn: an int gives the same model at every ``fit``; None
        draws the seed from NumPy's global RandomState (every fit differs; ``np.random.seed`` makes
        it reproducible); a Generator or RandomState is drawn from, so its state advances and two
        fits with the same instance differ. Only ``fit`` (and a first ``partial_fit``) use it: later
        ``partial_fit`` calls continue the model's own shuffle generator. A saved model stores an int,
        or None for None and for an instance (the file keeps the shuffle generator's state instead).
    seed : int >= 0 or None, default None
        Deprecated alias of ``random_state`` (a FutureWarning at ``fit``; removed in the next
        release). Giving both is an error.
    early_stopping : bool, default False
        Hold out ``validation_fraction`` of the data (stratified), stop when its accuracy has not
        improved by ``tol`` for ``n_iter_no_change`` epochs, keep the best epoch's model.
        Without it ``fit`` runs exactly ``epochs`` epochs and ``tol``/``n_iter_no_change`` are unused.
    validation_fraction : float in (0, 1), default 0.1
    n_iter_no_change : int >= 1, default 10
    tol : float >= 0, default 1e-4
    verbose : bool, default False
        Print the loss (and validation score) of every epoch.
    standardize : bool, default False
        Standardise every feature, ``(x - mean) / std``, with the mean and (population) standard
        deviation of the training rows, from one streaming pass before the first epoch (a constant
        feature gets std 1). They are part of the model: ``predict``, ``predict_proba``, ``score``,
        the saved file, ``bp-gpu predict`` and ``to_onnx`` apply them, so raw data works end to end.
        ``partial_fit`` computes them on its first call and keeps them.

    Data sets: ``fit``, ``partial_fit``, ``predict``, ``predict_proba`` and ``score`` also take a
    ``bp_gpu.data`` data set (``bp_gpu.data.open(path, target=...)`` or ``from_arrays``) in place of
    ``X, y``: training then streams it chunk by chunk (memory holds a batch and a few chunks, not
    the file; the order is the one ``bp_gpu.data.batches`` documents, drawn from ``random_state``), the
    labels come from ``dataset.labels()`` (a pass over the target column) before the first step,
    and predictions are computed chunk by chunk. With ``early_stopping`` the validation rows are
    whole chunks: ``round(validation_fraction * n_chunks)`` of them (at least one, and at least one
    chunk left to train on), drawn at random from ``random_state``'s split generator.
    distributed : bool, default False
        Data-parallel training over the processes of ``MPI.COMM_WORLD`` (run under ``mpiexec``; needs
        ``pip install 'bp_gpu[mpi]'``): every process passes its own rows to ``fit``, ``batch_size``
        is per process, and each step is the mean gradient over every process's batch (see
        ``bp_gpu.distributed``). A single process trains as without it.

    Attributes
    ----------
    classes_ : ndarray (n_classes,)   (for multi-label: ``arange(K)``)
    n_features_in_ : int
    feature_names_in_ : ndarray of str objects (n_features_in_,)
        The column names when ``fit`` got a DataFrame whose names are all strings (absent
        otherwise). Later ``predict``/``predict_proba``/``score``/``partial_fit`` calls check them as
        scikit-learn does: different or reordered names raise ValueError; names on one side only
        give a UserWarning.
    n_outputs_ : int                  network outputs: 1 (binary) or K
    net_ : bp_gpu.MLP                 the trained network
    loss_curve_ : list of float       mean training loss per epoch
    n_iter_ : int                     epochs trained in total
    validation_scores_ : list of float, best_validation_score_ : float   (early stopping only)
    feature_mean_, feature_std_ : ndarray (n_features,) float64 or None   (standardize only)
    feature_names_in_ : ndarray of str  (fitted on a data set whose file names its columns)
    """

    def __init__(
        self,
        hidden_layer_sizes: Any = (100,),
        optimizer: str = "adam",
        learning_rate: float = 0.001,
        lr_schedule: str = "constant",
        warmup_epochs: float = 0.0,
        final_learning_rate: float = 0.0,
        momentum: float = 0.9,
        batch_size: int = 200,
        epochs: int = 200,
        weight_decay: float = 0.0,
        positive_class: int = 1,
        dtype: str = "float32",
        backend: str = "auto",
        random_state: int | np.random.Generator | np.random.RandomState | None = None,
        seed: int | None = None,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 10,
        tol: float = 1e-4,
        verbose: bool = False,
        standardize: bool = False,
        distributed: bool = False,
    ) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.lr_schedule = lr_schedule
        self.warmup_epochs = warmup_epochs
        self.final_learning_rate = final_learning_rate
        self.momentum = momentum
        self.batch_size = batch_size
        self.epochs = epochs
        self.weight_decay = weight_decay
        self.positive_class = positive_class
        self.dtype = dtype
        self.backend = backend
        self.random_state = random_state
        self.seed = seed
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.verbose = verbose
        self.standardize = standardize
        self.distributed = distributed

    def __sklearn_tags__(self):  # only called by scikit-learn, so its base class is there
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags

    # -- parameter and input checks ----------------------------------------------------------
    def _checked_params(self) -> dict[str, Any]:
        """Every constructor argument validated and normalised; raises naming the bad one."""
        h = self.hidden_layer_sizes
        if isinstance(h, numbers.Integral) and not isinstance(h, bool):
            h = (h,)
        if isinstance(h, (str, bytes)) or not hasattr(h, "__iter__"):
            raise TypeError(f"hidden_layer_sizes must be an int or a sequence of ints; got {h!r}")
        hidden = tuple(_int(f"hidden_layer_sizes[{k}]", n, 1) for k, n in enumerate(h))
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"optimizer must be one of {', '.join(map(repr, OPTIMIZERS))}; got {self.optimizer!r}"
            )
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(
                f"lr_schedule must be one of {', '.join(map(repr, LR_SCHEDULES))}; got {self.lr_schedule!r}"
            )
        if isinstance(self.positive_class, bool) or self.positive_class not in (0, 1):
            raise ValueError(f"positive_class must be 0 or 1; got {self.positive_class!r}")
        try:
            dtype = np.dtype(self.dtype)
        except TypeError:
            dtype = None
        if dtype is None or dtype.name not in DTYPES:
            raise ValueError(f"dtype must be 'float32' or 'float64'; got {self.dtype!r}")
        if self.backend not in ("auto", "cpu", "cuda"):
            raise ValueError(f"backend must be one of 'auto', 'cpu', 'cuda'; got {self.backend!r}")
        rs = self.random_state
        if self.seed is not None:
            if rs is not None:
                raise ValueError("seed is a deprecated alias of random_state; give random_state only")
            _int("seed", self.seed, 0)
        if not (rs is None or isinstance(rs, (np.random.Generator, np.random.RandomState))
                or (isinstance(rs, numbers.Integral) and not isinstance(rs, bool) and rs >= 0)):
            raise ValueError(
                "random_state must be None, an int >= 0, a numpy.random.Generator or a "
                f"numpy.random.RandomState; got {rs!r}"
            )
        for name in ("early_stopping", "verbose", "standardize", "distributed"):
            if not isinstance(getattr(self, name), (bool, np.bool_, numbers.Integral)):
                raise TypeError(f"{name} must be a bool; got {getattr(self, name)!r}")
        return {
            "hidden": hidden,
            "learning_rate": _real("learning_rate", self.learning_rate, 0.0, low_open=True),
            "warmup_epochs": _real("warmup_epochs", self.warmup_epochs, 0.0),
            "final_learning_rate": _real("final_learning_rate", self.final_learning_rate, 0.0),
            "momentum": _real("momentum", self.momentum, 0.0, 1.0, high_open=True),
            "batch_size": _int("batch_size", self.batch_size, 1),
            "epochs": _int("epochs", self.epochs, 1),
            "weight_decay": _real("weight_decay", self.weight_decay, 0.0),
            "validation_fraction": _real(
                "validation_fraction",
                self.validation_fraction,
                0.0,
                1.0,
                low_open=True,
                high_open=True,
            ),
            "n_iter_no_change": _int("n_iter_no_change", self.n_iter_no_change, 1),
            "tol": _real("tol", self.tol, 0.0),
            "dtype": dtype,
        }

    @staticmethod
    def _host_X(X: Any, n_features: int | None = None) -> Any:
        """X as a 2-D finite float array (a CuPy array stays on the device); with ``n_features``
        (a fitted model) its width must match. Messages follow scikit-learn's where it has one."""
        if type(X).__module__.startswith("scipy.sparse"):
            raise TypeError(
                "sparse input is not supported: MLPClassifier needs dense X "
                "(convert with X.toarray() if it fits in memory)"
            )
        if hasattr(X, "iloc"):  # a pandas DataFrame: its values (the caller checked the names)
            X = X.to_numpy()
        if V.array_module(X) is np:
            X = np.asarray(X)
            if X.dtype.kind == "c":
                raise ValueError("Complex data not supported: X must be real")
            if X.dtype.kind in "OUS":
                X = X.astype(np.float64)  # a non-number raises numpy's own precise message
        if X.ndim != 2:
            raise ValueError(
                f"Expected 2-D X (n_samples, n_features), got {X.ndim}-D with shape "
                f"{X.shape}. Reshape your data: X.reshape(-1, 1) if it holds one "
                "feature, X.reshape(1, -1) if it holds one sample."
            )
        if X.shape[1] == 0:
            raise ValueError(
                f"X has 0 feature(s) (shape={X.shape}) while a minimum of 1 is required."
            )
        if n_features is not None and X.shape[1] != n_features:
            raise ValueError(
                f"X has {X.shape[1]} features, but MLPClassifier is expecting {n_features} "
                "features as input."
            )
        dtype = X.dtype if X.dtype.kind == "f" else np.float64
        return V.check_features(X, X.shape[1], dtype, V.array_module(X))

    @staticmethod
    def _encode(
        y: Any, n_rows: int, classes: np.ndarray | None = None
    ) -> tuple[str, np.ndarray, np.ndarray]:
        """(kind, classes, T (n, n_outputs) of 0/1 float64) from labels or an indicator matrix."""
        if y is None:
            raise ValueError("MLPClassifier requires y to be passed, but the target y is None")
        if hasattr(y, "iloc"):
            y = y.to_numpy()
        y = V.to_numpy(y) if V.array_module(y) is not np else np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            warnings.warn(
                "A column-vector y was passed when a 1d array was expected; using y.ravel()",
                DataConversionWarning,
                stacklevel=3,
            )
            y = y.ravel()
        if y.ndim not in (1, 2):
            raise ValueError(
                f"y must be 1-D labels or a 2-D 0/1 indicator matrix; got shape {y.shape}"
            )
        if y.shape[0] != n_rows:
            raise ValueError(f"y has {y.shape[0]} rows but X has {n_rows}; they must match")
        if y.ndim == 2:
            Y = V._numeric(y, "y")
            V._check_finite(Y, "y")
            bad = (Y != 0) & (Y != 1)
            if bad.any():
                i, j = V._first_bad(bad)
                raise ValueError(
                    f"y[{i}, {j}] = {Y[i, j].item()!r}; a 2-D y is a multi-label indicator matrix "
                    "and must hold only 0 and 1"
                )
            K = Y.shape[1]
            if classes is not None and len(classes) != K:
                raise ValueError(
                    f"y has {K} label columns but the model was fitted with {len(classes)}"
                )
            return MULTILABEL, np.arange(K), Y.astype(np.float64)
        if y.dtype.kind == "f" and not np.isfinite(y).all():
            i = int(np.flatnonzero(~np.isfinite(y))[0])
            raise ValueError(f"y[{i}] is {y[i]}; labels must be finite")
        if y.dtype.kind == "f" and (y != np.round(y)).any():
            i = int(np.flatnonzero(y != np.round(y))[0])
            raise ValueError(
                f"Unknown label type: continuous (y[{i}] = {y[i].item()!r}); a classifier needs "
                "discrete labels"
            )
        if classes is None:
            try:
                classes = np.unique(y)
            except TypeError as exc:
                raise TypeError(
                    f"y mixes label types that cannot be ordered ({exc}); use one type"
                ) from None
            if len(classes) < 2:
                raise ValueError(
                    f"y has only one class ({classes[0].item()!r}); a classifier needs at least two"
                )
        unknown = ~np.isin(y, classes)
        if unknown.any():
            i = int(np.flatnonzero(unknown)[0])
            raise ValueError(
                f"y[{i}] = {y[i].item()!r} is not one of the classes {classes.tolist()!r}"
            )
        index = np.searchsorted(classes, y)  # (n,) class index of each row
        if len(classes) == 2:
            return BINARY, classes, (index == 1).astype(np.float64)[:, None]
        return MULTICLASS, classes, np.eye(len(classes))[index]

    def _check_fitted(self) -> None:
        if not hasattr(self, "net_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with appropriate "
                "arguments before using this estimator."
            )

    # -- training ------------------------------------------------------------------------------
    def _fresh(
        self, p: dict[str, Any], n_features: int, n_outputs: int
    ) -> tuple[MLP, TrainState, np.random.Generator]:
        """A new network and loop state from ``random_state``, and the early-stopping split's
        generator: three independent streams, so each is the same whatever the others draw."""
        init_seq, shuffle_seq, split_seq = self._seed_sequence().spawn(3)
        net = MLP(
            [n_features, *p["hidden"], n_outputs],
            positive_class=int(self.positive_class),
            dtype=p["dtype"],
            backend=self.backend,
            seed=np.random.default_rng(init_seq),
        )
        state = TrainState(rng=np.random.default_rng(shuffle_seq))
        return net, state, np.random.default_rng(split_seq)

    def _seed_sequence(self) -> np.random.SeedSequence:
        """The root of a new model's randomness (see ``random_state``); draws from an instance."""
        source = self.random_state
        if self.seed is not None:
            warnings.warn(
                "MLPClassifier(seed=...) is deprecated and will be removed in the next release; use "
                "random_state=... (the same int gives the same model)",
                FutureWarning,
                stacklevel=4,
            )
            source = self.seed
        if isinstance(source, numbers.Integral):
            return np.random.SeedSequence(int(source))
        # scikit-learn's check_random_state(None) is NumPy's global RandomState, which np.random.*
        # draws from (sklearn/utils/validation.py).
        if source is None:
            words = np.random.randint(0, 2**32, size=4, dtype=np.uint32)
        elif isinstance(source, np.random.Generator):
            words = source.integers(0, 2**32, size=4, dtype=np.uint32)
        else:
            words = source.randint(0, 2**32, size=4, dtype=np.uint32)
        return np.random.SeedSequence([int(w) for w in words])

    def _learning_rate(self, p: dict[str, Any], n_train: int) -> float | Schedule:
        """The rate or schedule of ``p`` for an epoch of ``n_train`` rows (schedules count steps)."""
        if self.lr_schedule == "constant":
            return p["learning_rate"]
        per_epoch = -(-n_train // min(p["batch_size"], n_train))
        total = max(1, p["epochs"] * per_epoch)
        warmup = min(total, int(round(p["warmup_epochs"] * per_epoch)))
        make = warmup_cosine if self.lr_schedule == "warmup_cosine" else warmup_linear
        return make(p["learning_rate"], warmup, total, p["final_learning_rate"])

    def _optimizer_for(self, net: MLP, p: dict[str, Any], n_train: int) -> Optimizer:
        return make_optimizer(self.optimizer, net, self._learning_rate(p, n_train), p["momentum"], p["weight_decay"])

    def _process_group(self) -> Any:
        """The data-parallel process group (``bp_gpu.distributed``), or None: plain training."""
        if not self.distributed:
            return None
        from .distributed import world_group

        return world_group()

    def fit(self, X: Any, y: Any = None, *, monitor: TrainingMonitor | None = None) -> MLPClassifier:
        """Train a new network from scratch on ``(X, y)``, or on a ``bp_gpu.data`` data set given as
        ``X`` alone (its target column holds the labels); returns self.

        ``monitor`` (optional) gets ``on_batch(n_rows)`` and ``on_epoch(EpochInfo)`` calls (see
        ``bp_gpu.train``). If anything fails (bad input, a bad row of a data set, divergence) the
        estimator is left exactly as it was. Ctrl-C stops cleanly: after at least one completed
        epoch ``fit`` returns with the model of the last completed epoch (a RuntimeWarning says how
        many); before the first epoch completes nothing is committed, the KeyboardInterrupt
        propagates and the estimator is as it was (still unfitted, or the previous model).
        """
        group = self._process_group()
        if group is not None:  # data-parallel (a data set here is this process's shard): bp_gpu.distributed
            from . import distributed

            return distributed.fit(self, group, X, y, monitor)
        if isinstance(X, Dataset):
            return self._fit_dataset(X, y, monitor)
        p = self._checked_params()
        names = feature_names(X)
        Xh = self._host_X(X)
        kind, classes, T = self._encode(y, Xh.shape[0])
        net, state, split_rng = self._fresh(p, Xh.shape[1], T.shape[1])
        validate, Xv = None, None
        if self.early_stopping:
            tr, va = self._split(kind, T, p["validation_fraction"], split_rng)
            Xv, Tv = Xh[self._index(Xh, va)], T[va]
            Xh, T = Xh[self._index(Xh, tr)], T[tr]
        X_train, T_train = self._train_arrays(net, Xh, T)
        scaler = self._array_scaler(X_train, net.dtype) if self.standardize else None
        if scaler is not None:
            X_train = scaler.apply(X_train)
        if Xv is not None:
            Xv = self._device_X(net, Xv, scaler)
            validate = lambda: self._accuracy(net, kind, Xv, Tv)  # noqa: E731
        opt = self._optimizer_for(net, p, Xh.shape[0])
        source = ArraySource(net._engine, X_train, T_train, p["batch_size"])
        self._train_and_commit(net, opt, state, kind, classes, names, source, p, p["epochs"], validate, monitor,
                               scaler)
        return self

    def partial_fit(
        self,
        X: Any,
        y: Any = None,
        classes: Any = None,
        *,
        epochs: int = 1,
        monitor: TrainingMonitor | None = None,
    ) -> MLPClassifier:
        """Continue training on (X, y), or on a data set given as ``X`` alone, for ``epochs`` passes
        (default one, as scikit-learn).

        The first call on an unfitted model needs ``classes`` (all labels that will ever appear),
        except for a multi-label indicator y and for a data set (whose ``labels()`` are used when
        ``classes`` is not given). Later calls continue from the current weights, optimizer state
        and shuffle generator, so ``fit`` for k epochs then ``partial_fit`` for j equals ``fit`` for
        k + j (without early stopping, which ``partial_fit`` does not use).
        ``learning_rate``, ``momentum``, ``weight_decay``, ``batch_size``, ``verbose`` may change
        between calls; the architecture, optimizer kind, dtype, backend, convention and
        ``standardize`` may not (the standardisation of the first call is kept).
        A failed call leaves the model as it was; Ctrl-C as in ``fit``.
        """
        group = self._process_group()
        if group is not None:  # data-parallel: bp_gpu.distributed
            from . import distributed

            return distributed.partial_fit(self, group, X, y, classes, epochs, monitor)
        p = self._checked_params()
        epochs = _int("epochs", epochs, 1)
        if isinstance(X, Dataset):
            return self._partial_fit_dataset(X, y, classes, p, epochs, monitor)
        if not hasattr(self, "net_"):
            names = feature_names(X)
            Xh = self._host_X(X)
            y_arr = np.asarray(V.to_numpy(y) if V.array_module(y) is not np else y)
            if classes is None and not (y_arr.ndim == 2 and y_arr.shape[1] > 1):
                raise ValueError(
                    "classes must be passed on the first call to partial_fit "
                    "(every label that will appear, e.g. np.unique(y_all))"
                )
            cls = None if classes is None else self._given_classes(classes)
            kind, cls, T = self._encode(y, Xh.shape[0], cls)
            net, state, _ = self._fresh(p, Xh.shape[1], T.shape[1])
            X_train, T_train = self._train_arrays(net, Xh, T)
            scaler = self._array_scaler(X_train, net.dtype) if self.standardize else None
            if scaler is not None:
                X_train = scaler.apply(X_train)
            opt = self._optimizer_for(net, p, Xh.shape[0])
            source = ArraySource(net._engine, X_train, T_train, p["batch_size"])
            self._train_and_commit(net, opt, state, kind, cls, names, source, p, epochs, None, monitor, scaler)
            return self

        self._check_same_setup(p)
        check_feature_names(self, X)
        Xh = self._host_X(X, self.n_features_in_)
        self._check_classes_unchanged(classes)
        if self._label_kind == MULTILABEL:
            y_arr = np.asarray(V.to_numpy(y) if V.array_module(y) is not np else y)
            if y_arr.ndim != 2:
                raise ValueError(
                    "the model was fitted on a multi-label indicator matrix; y must be 2-D"
                )
        kind, _, T = self._encode(y, Xh.shape[0], self.classes_)
        if kind != self._label_kind:
            raise ValueError(f"y is {kind} but the model was fitted on {self._label_kind} targets")
        X_train, T_train = self._train_arrays(self.net_, Xh, T)
        if self._scaler is not None:
            X_train = self._scaler.apply(X_train)
        self._continue(p, ArraySource(self.net_._engine, X_train, T_train, p["batch_size"]), epochs, monitor)
        return self

    def _given_classes(self, classes: Any) -> np.ndarray:
        cls = np.unique(np.asarray(classes))
        if len(cls) < 2:
            raise ValueError(f"classes must hold at least two labels; got {cls.tolist()!r}")
        return cls

    def _check_classes_unchanged(self, classes: Any) -> None:
        if classes is not None and not np.array_equal(np.unique(np.asarray(classes)), self.classes_):
            raise ValueError(
                f"classes {np.unique(classes).tolist()!r} differ from the fitted classes_ "
                f"{self.classes_.tolist()!r}"
            )

    def _continue(self, p: dict[str, Any], source: Any, epochs: int, monitor: TrainingMonitor | None) -> None:
        """More epochs of the fitted model on ``source``; on any failure the model and its optimizer
        are put back exactly as they were before the call."""
        net, opt, state = self.net_, self._optimizer, self._state
        start = Snapshot(net._engine, opt)
        start.capture(state)
        try:
            opt.learning_rate = self._learning_rate(p, source.n_rows)
            opt.weight_decay = p["weight_decay"]
            if self.optimizer == "momentum":
                opt.momentum = p["momentum"]
            self._train_and_commit(net, opt, state, self._label_kind, self.classes_,
                                   getattr(self, "feature_names_in_", None), source, p, epochs, None, monitor,
                                   self._scaler)
        except BaseException:
            start.restore(state)  # roll back: the model and its optimizer are exactly as before the call
            raise

    def _check_same_setup(self, p: dict[str, Any]) -> None:
        net = self.net_
        now = {
            "hidden_layer_sizes": (p["hidden"], tuple(net.layer_sizes[1:-1])),
            "optimizer": (self.optimizer, self._optimizer_name),
            "dtype": (p["dtype"].name, net.dtype.name),
            "positive_class": (int(self.positive_class), net.positive_class),
            "standardize": (bool(self.standardize), self._scaler is not None),
        }
        if self.backend != "auto":
            now["backend"] = (self.backend, net.backend)
        for name, (want, have) in now.items():
            if want != have:
                raise ValueError(
                    f"{name} is {want!r} but the model was fitted with {have!r}; "
                    "partial_fit cannot change it (call fit to start over)"
                )

    # -- data sets -----------------------------------------------------------------------------
    @staticmethod
    def _check_trainable(ds: Dataset, y: Any, method: str) -> None:
        if y is not None:
            raise TypeError(f"{method}(dataset) takes the labels from the data set's target column "
                            f"({ds.target!r}); do not pass y")
        if ds.target is None:
            raise ValueError(f"{ds.path}: the data set has no target column; open it with target=... to "
                             "train on it (bp_gpu.data.open(path, target='label'))")
        if ds.n_rows == 0:
            raise ValueError(f"{ds.path}: the data set has no rows")

    def _dataset_targets(
        self, ds: Dataset, dtype: np.dtype, classes: np.ndarray | None = None
    ) -> tuple[str, np.ndarray, LabelEncoder]:
        """(kind, classes, encoder) of a data set's labels, from its label pass (``labels()``):
        ``classes`` default to its labels; given, its labels must be among them."""
        labels = ds.labels()
        if ds.label_columns is not None:
            bad = labels[(labels != 0) & (labels != 1)] if labels.dtype.kind in "biuf" else labels
            if len(bad):
                raise ValueError(f"{ds.path}: a 2-D target is a multi-label indicator matrix and must hold only "
                                 f"0 and 1; it holds {bad[0].item()!r}")
            K = ds.label_columns
            if classes is not None and len(classes) != K:
                raise ValueError(f"{ds.path}: the target has {K} label columns but the model has {len(classes)}")
            return MULTILABEL, np.arange(K), LabelEncoder(MULTILABEL, np.arange(K), dtype)
        if classes is None:
            classes = labels
            if len(classes) < 2:
                shown = classes[0].item() if len(classes) else None
                raise ValueError(f"{ds.path}: the target column {ds.target!r} has only one class ({shown!r}); "
                                 "a classifier needs at least two")
        unknown = check_labels_against(labels, classes, f"{ds.path}: the labels of column {ds.target!r}")
        if len(unknown):
            raise ValueError(f"{ds.path}: the target column {ds.target!r} holds labels that are not among the "
                             f"classes {classes.tolist()!r}: {unknown[:10].tolist()!r}")
        kind = BINARY if len(classes) == 2 else MULTICLASS
        return kind, classes, LabelEncoder(kind, classes, dtype)

    @staticmethod
    def _held_out_chunks(ds: Dataset, fraction: float, rng: np.random.Generator) -> tuple[Dataset, Dataset]:
        """(training view, validation view) of a data set for early stopping: whole chunks (see the
        class docstring)."""
        n = ds.n_chunks
        if n < 2:
            raise ValueError(
                f"early_stopping on a data set holds out whole chunks, and {ds.path} has {n}; give it more "
                "chunks (smaller Parquet row groups, or chunk_rows= for arrays and .npy files)"
            )
        k = min(n - 1, max(1, int(round(fraction * n))))
        held = np.sort(rng.permutation(n)[:k])
        return ds.select_chunks(np.setdiff1d(np.arange(n), held)), ds.select_chunks(held)

    @staticmethod
    def _dataset_scaler(ds: Dataset, dtype: np.dtype) -> Standardizer:
        mean, std = ds.stats(dtype)
        return Standardizer(mean, std, dtype)

    @staticmethod
    def _array_scaler(X: Any, dtype: np.dtype) -> Standardizer:
        """The statistics of training arrays, computed as for a data set (chunk by chunk, so the
        temporaries stay small), from X as the model reads it."""
        mean, std = from_arrays(V.to_numpy(X)).stats(dtype)
        return Standardizer(mean, std, dtype)

    def _check_dataset_features(self, ds: Dataset) -> None:
        if ds.n_features != self.n_features_in_:
            raise ValueError(f"{ds.path} has {ds.n_features} feature columns, but MLPClassifier is expecting "
                             f"{self.n_features_in_} features as input")
        fitted = getattr(self, "feature_names_in_", None)
        if fitted is not None and ds.named_columns and list(ds.feature_names) != [str(n) for n in fitted]:
            raise ValueError(f"{ds.path}: the feature columns {ds.feature_names} are not those the model was fitted "
                             f"with, in its order: {list(fitted)}; open it with features=[...] in that order")

    def _dataset_source(self, net: MLP, ds: Dataset, p: dict[str, Any], encode: LabelEncoder,
                        scaler: Standardizer | None) -> Any:
        from .dataset_source import DatasetSource

        return DatasetSource(net._engine, ds, p["batch_size"], n_outputs=net.layer_sizes[-1], encode=encode,
                             transform=None if scaler is None else scaler.transform)

    def _fit_dataset(self, ds: Dataset, y: Any, monitor: TrainingMonitor | None) -> MLPClassifier:
        p = self._checked_params()
        self._check_trainable(ds, y, "fit")
        kind, classes, encode = self._dataset_targets(ds, p["dtype"])
        net, state, split_rng = self._fresh(p, ds.n_features, 1 if kind == BINARY else len(classes))
        train_ds, validate = ds, None
        if self.early_stopping:
            train_ds, val_ds = self._held_out_chunks(ds, p["validation_fraction"], split_rng)
        scaler = self._dataset_scaler(train_ds, net.dtype) if self.standardize else None
        if self.early_stopping:
            validate = lambda: self._dataset_accuracy(net, kind, val_ds, encode, scaler)  # noqa: E731
        opt = self._optimizer_for(net, p, train_ds.n_rows)
        source = self._dataset_source(net, train_ds, p, encode, scaler)
        self._train_and_commit(net, opt, state, kind, classes, self._dataset_names(ds), source, p, p["epochs"],
                               validate, monitor, scaler)
        return self

    def _partial_fit_dataset(self, ds: Dataset, y: Any, classes: Any, p: dict[str, Any], epochs: int,
                             monitor: TrainingMonitor | None) -> MLPClassifier:
        self._check_trainable(ds, y, "partial_fit")
        if not hasattr(self, "net_"):
            cls = None if classes is None else self._given_classes(classes)
            kind, cls, encode = self._dataset_targets(ds, p["dtype"], cls)
            net, state, _ = self._fresh(p, ds.n_features, 1 if kind == BINARY else len(cls))
            scaler = self._dataset_scaler(ds, net.dtype) if self.standardize else None
            opt = self._optimizer_for(net, p, ds.n_rows)
            source = self._dataset_source(net, ds, p, encode, scaler)
            self._train_and_commit(net, opt, state, kind, cls, self._dataset_names(ds), source, p, epochs, None,
                                   monitor, scaler)
            return self
        self._check_same_setup(p)
        self._check_dataset_features(ds)
        self._check_classes_unchanged(classes)
        kind, _, encode = self._dataset_targets(ds, self.net_.dtype, self.classes_)
        if kind != self._label_kind:
            raise ValueError(f"{ds.path}: its targets are {kind} but the model was fitted on {self._label_kind} "
                             "targets")
        self._continue(p, self._dataset_source(self.net_, ds, p, encode, self._scaler), epochs, monitor)
        return self

    @staticmethod
    def _dataset_names(ds: Dataset) -> np.ndarray | None:
        """``feature_names_in_`` of a model fitted on ``ds``: the column names the file gives
        (Parquet, Arrow, CSV with a header), so that files with the same columns in another order
        are matched by name (``bp-gpu predict``); none for positions."""
        return np.array(ds.feature_names, dtype=object) if ds.named_columns else None

    def _chunk_proba(self, net: MLP, X: np.ndarray, scaler: Standardizer | None) -> np.ndarray:
        """p(t = 1 | x) per output of a data set chunk (its own array, of the model's dtype)."""
        if scaler is not None:
            scaler.transform(X)
        return self._raw_proba(net, net._engine.xp.asarray(X))

    def _dataset_accuracy(self, net: MLP, kind: str, ds: Dataset, encode: LabelEncoder,
                          scaler: Standardizer | None) -> float:
        hits = n = 0
        for c in ds.iter_chunks(dtype=net.dtype):
            P, T = self._chunk_proba(net, c.X, scaler), encode(c.y)
            if kind == MULTICLASS:
                hits += int(np.sum(P.argmax(axis=1) == T.argmax(axis=1)))
            else:
                hits += int(np.sum(((P > 0.5) == (T == 1)).all(axis=1)))
            n += len(P)
        return hits / n

    def iter_predict_proba(self, dataset: Dataset) -> Any:
        """``(probabilities, chunk)`` for each chunk of ``dataset`` in file order: what
        ``predict_proba`` returns for the chunk's rows, and the ``bp_gpu.data.Chunk`` (its ``y`` are
        the raw labels when the data set has a target, ``start`` its first row). Memory holds one
        chunk at a time (``bp-gpu predict`` writes each before reading the next)."""
        self._check_fitted()
        self._check_dataset_features(dataset)
        net = self.net_
        for c in dataset.iter_chunks(dtype=net.dtype):
            yield self._proba(self._chunk_proba(net, c.X, self._scaler)), c

    def _dataset_score(self, ds: Dataset) -> float:
        if ds.target is None:
            raise ValueError(f"{ds.path}: the data set has no target column to score against; open it with "
                             "target=...")
        hits = n = 0
        for P, c in self.iter_predict_proba(ds):
            pred, y = self._predict_from(P), c.y
            if self._label_kind == MULTILABEL:
                hits += int(np.sum((pred == np.asarray(y).reshape(pred.shape)).all(axis=1)))
            else:
                check_labels_against(np.asarray(y[:1]), self.classes_, f"{ds.path}: the labels of column "
                                     f"{ds.target!r}")
                hits += int(np.sum(pred == y))
            n += len(pred)
        return hits / n

    # -- arrays --------------------------------------------------------------------------------
    @staticmethod
    def _index(X: Any, idx: np.ndarray) -> Any:
        return V.array_module(X).asarray(idx)

    @staticmethod
    def _split(
        kind: str, T: np.ndarray, fraction: float, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Stratified (per class; plain for multi-label) train/validation row indices."""
        n = T.shape[0]
        if kind == MULTILABEL:
            groups = [np.arange(n)]
        else:
            labels = T[:, 0] if kind == BINARY else T.argmax(axis=1)
            groups = [np.flatnonzero(labels == c) for c in np.unique(labels)]
        val = []
        for g in groups:
            g = rng.permutation(g)
            val.append(g[: int(round(fraction * len(g)))])
        va = np.sort(np.concatenate(val))
        tr = np.setdiff1d(np.arange(n), va)
        if len(va) == 0 or len(tr) == 0:
            raise ValueError(
                f"early_stopping: validation_fraction={fraction} of {n} samples leaves "
                f"{len(tr)} training and {len(va)} validation samples; both need at least one"
            )
        return tr, va

    @staticmethod
    def _device_X(net: MLP, X: Any, scaler: Standardizer | None = None) -> Any:
        Xd = V.check_features(X, net.layer_sizes[0], net.dtype, net._engine.xp)
        return Xd if scaler is None else scaler.apply(Xd)

    @staticmethod
    def _raw_proba(net: MLP, Xd: Any) -> np.ndarray:
        """p(t = 1 | x) per output as float64 NumPy (n, n_outputs); the engine runs it in chunks."""
        y = V.to_numpy(net._engine.predict_proba(Xd)).astype(np.float64)
        return y if net.positive_class == 1 else 1.0 - y

    @classmethod
    def _accuracy(cls, net: MLP, kind: str, Xd: Any, T: np.ndarray) -> float:
        P = cls._raw_proba(net, Xd)
        if kind == MULTICLASS:
            return float(np.mean(P.argmax(axis=1) == T.argmax(axis=1)))
        return float(np.mean(((P > 0.5) == (T == 1)).all(axis=1)))

    @staticmethod
    def _train_arrays(net: MLP, Xh: Any, T: np.ndarray) -> tuple[Any, Any]:
        """X and T in the network's dtype, where training reads them (device arrays stay there); a
        value of X too large for the dtype is an error here, before training."""
        dt = net.dtype
        X_train = V.check_features(
            Xh,
            net.layer_sizes[0],
            dt,
            V.array_module(Xh) if V.array_module(Xh) is net._engine.xp else np,
        )
        T_train = np.ascontiguousarray(T, dtype=dt)
        if V.array_module(X_train) is not np:
            T_train = net._engine.xp.asarray(T_train)
        return X_train, T_train

    def _train_and_commit(
        self, net, opt, state, kind, classes, names, source, p, epochs, validate, monitor, scaler
    ) -> None:
        def view() -> MLPClassifier:
            m = type(self)(**self.get_params())
            m._commit(net, opt, state, kind, classes, early=validate is not None, feature_names=names, scaler=scaler)
            return m

        train(
            net,
            opt,
            state,
            source,
            epochs=epochs,
            validate=validate,
            n_iter_no_change=p["n_iter_no_change"],
            tol=p["tol"],
            monitor=monitor,
            make_view=view,
            verbose=bool(self.verbose),
        )
        self._commit(net, opt, state, kind, classes, early=validate is not None, feature_names=names, scaler=scaler)

    def _commit(self, net, opt, state, kind, classes, early: bool, feature_names: np.ndarray | None = None,
                scaler: Standardizer | None = None) -> None:
        """Install a trained state; nothing here can fail, so the estimator is never half-updated."""
        self.__dict__.pop("_group", None)  # a data-parallel fit sets it again after this
        self.net_ = net
        self._optimizer = opt
        self._optimizer_name = self.optimizer
        self._state = state
        self._label_kind = kind
        self._scaler = scaler
        self.feature_mean_ = None if scaler is None else scaler.mean64.copy()
        self.feature_std_ = None if scaler is None else scaler.std64.copy()
        self.classes_ = classes
        self.n_features_in_ = net.layer_sizes[0]
        self.n_outputs_ = net.layer_sizes[-1]
        self.loss_curve_ = list(state.loss_curve)
        self.n_iter_ = state.n_iter
        if feature_names is not None:
            self.feature_names_in_ = feature_names
        else:
            self.__dict__.pop("feature_names_in_", None)
        if early:
            self.validation_scores_ = list(state.validation_scores)
            self.best_validation_score_ = state.best_validation_score
        else:
            self.__dict__.pop("validation_scores_", None)
            self.__dict__.pop("best_validation_score_", None)

    # -- prediction ----------------------------------------------------------------------------
    def _proba(self, P: np.ndarray) -> np.ndarray:
        """``predict_proba`` from the raw per-output probabilities P (n, n_outputs)."""
        if self._label_kind == BINARY:
            return np.hstack([1.0 - P, P])
        if self._label_kind == MULTICLASS:
            s = P.sum(axis=1, keepdims=True)
            # A row whose every sigmoid underflowed to 0 carries no preference: uniform.
            return np.where(s > 0, P / np.where(s > 0, s, 1.0), 1.0 / P.shape[1])
        return P

    def _predict_from(self, P: np.ndarray) -> np.ndarray:
        """``predict`` from ``predict_proba``'s output."""
        if self._label_kind == MULTILABEL:
            return (P > 0.5).astype(np.int64)
        return self.classes_[P.argmax(axis=1)]

    def predict_proba(self, X: Any) -> np.ndarray:
        """Probabilities as float64 NumPy: (n, 2) binary, (n, K) multi-class (rows sum to 1),
        (n, K) multi-label (per-label probabilities); columns in ``classes_`` order. ``X`` may be a
        data set (computed chunk by chunk, see ``iter_predict_proba``)."""
        self._check_fitted()
        if isinstance(X, Dataset):
            parts = [P for P, _ in self.iter_predict_proba(X)]
            return np.concatenate(parts) if parts else np.empty((0, len(self.classes_)))
        check_feature_names(self, X)
        Xd = self._device_X(self.net_, self._host_X(X, self.n_features_in_), self._scaler)
        return self._proba(self._raw_proba(self.net_, Xd))

    def predict(self, X: Any) -> np.ndarray:
        """Labels from ``classes_`` (n,), or the 0/1 indicator matrix (n, K) for multi-label; ``X``
        may be a data set."""
        return self._predict_from(self.predict_proba(X))

    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
        """Accuracy of ``predict(X)`` against y (subset accuracy for multi-label). ``X`` may be a data
        set with a target column (then no y): the accuracy is streamed, chunk by chunk."""
        if isinstance(X, Dataset):
            if y is not None or sample_weight is not None:
                raise TypeError("score(dataset) takes the labels from the data set's target column; do not "
                                "pass y or sample_weight")
            self._check_fitted()
            return self._dataset_score(X)
        return super().score(X, y, sample_weight=sample_weight)

    def to_onnx(self, path: Any) -> None:
        """Write the fitted model as an ONNX model (``bp_gpu.onnx_export.export_onnx``): input ``X``
        (float32, ``[N, n_features]``, raw features: the standardisation is in the graph), outputs
        ``label`` (what ``predict`` returns) and ``probabilities`` (what ``predict_proba`` returns).
        Needs ``pip install 'bp_gpu[onnx]'``; written atomically."""
        from .onnx_export import export_onnx

        self._check_fitted()
        export_onnx(self.net_.get_weights(), positive_class=self.net_.positive_class, label_kind=self._label_kind,
                    classes=self.classes_, mean=self.feature_mean_, std=self.feature_std_, path=path)

    # -- persistence ---------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        # Python pickling (joblib, multiprocessing in GridSearchCV) goes through the file format's
        # arrays: the engine holds modules and device buffers that cannot be pickled themselves.
        from .persistence import to_arrays

        state = dict(self.get_params())
        if hasattr(self, "net_"):
            state["_bp_gpu_model"] = to_arrays(self)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        from .persistence import from_arrays

        state = dict(state)
        arrays = state.pop("_bp_gpu_model", None)
        self.__dict__.update(state)
        if arrays is not None:
            fitted = from_arrays(arrays, "pickled MLPClassifier", backend=self.backend)
            self.__dict__.update({k: v for k, v in fitted.__dict__.items() if k not in state})

    def save(self, path: Any) -> None:
        """Write the fitted model, with optimizer state to resume training, as a ``.npz`` file
        (format: ``bp_gpu.persistence``); atomic: the file is either the old one or the new one.
        A data-parallel model saves collectively: call it on every process; rank 0 writes."""
        if getattr(self, "_group", None) is not None:
            from . import distributed

            return distributed.save(self, path)
        from .persistence import save

        save(self, path)
