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
    seed : int >= 0 or None, default None
        Seeds the initial weights, the shuffle order and the early-stopping split (all drawn on the
        host with NumPy, so cpu and cuda agree to rounding). None draws fresh entropy.
    early_stopping : bool, default False
        Hold out ``validation_fraction`` of the data (stratified), stop when its accuracy has not
        improved by ``tol`` for ``n_iter_no_change`` epochs, keep the best epoch's model.
        Without it ``fit`` runs exactly ``epochs`` epochs and ``tol``/``n_iter_no_change`` are unused.
    validation_fraction : float in (0, 1), default 0.1
    n_iter_no_change : int >= 1, default 10
    tol : float >= 0, default 1e-4
    verbose : bool, default False
        Print the loss (and validation score) of every epoch.
    distributed : bool, default False
        Data-parallel training over the processes of ``MPI.COMM_WORLD`` (run under ``mpiexec``; needs
        ``pip install 'bp_gpu[mpi]'``): every process passes its own rows to ``fit``, ``batch_size``
        is per process, and each step is the mean gradient over every process's batch (see
        ``bp_gpu.distributed``). A single process trains as without it.

    Attributes
    ----------
    classes_ : ndarray (n_classes,)   (for multi-label: ``arange(K)``)
    n_features_in_ : int
    n_outputs_ : int                  network outputs: 1 (binary) or K
    net_ : bp_gpu.MLP                 the trained network
    loss_curve_ : list of float       mean training loss per epoch
    n_iter_ : int                     epochs trained in total
    validation_scores_ : list of float, best_validation_score_ : float   (early stopping only)
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
        seed: int | None = None,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 10,
        tol: float = 1e-4,
        verbose: bool = False,
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
        self.seed = seed
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.verbose = verbose
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
        if self.seed is not None:
            _int("seed", self.seed, 0)
        for name in ("early_stopping", "verbose", "distributed"):
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
        if hasattr(X, "iloc"):  # a pandas DataFrame: its values (feature names are not tracked)
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
        """A new network and loop state from ``seed``, and the early-stopping split's generator:
        three independent streams, so each is the same whatever the others draw."""
        init_seq, shuffle_seq, split_seq = np.random.SeedSequence(self.seed).spawn(3)
        net = MLP(
            [n_features, *p["hidden"], n_outputs],
            positive_class=int(self.positive_class),
            dtype=p["dtype"],
            backend=self.backend,
            seed=np.random.default_rng(init_seq),
        )
        state = TrainState(rng=np.random.default_rng(shuffle_seq))
        return net, state, np.random.default_rng(split_seq)

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

    def fit(self, X: Any, y: Any, *, monitor: TrainingMonitor | None = None) -> MLPClassifier:
        """Train a new network from scratch; returns self.

        ``monitor`` (optional) gets ``on_batch(n_rows)`` and ``on_epoch(EpochInfo)`` calls (see
        ``bp_gpu.train``). If anything fails (bad input, divergence) the estimator is left exactly
        as it was; Ctrl-C stops cleanly with the model of the last completed epoch.
        """
        group = self._process_group()
        if group is not None:  # data-parallel: bp_gpu.distributed
            from . import distributed

            return distributed.fit(self, group, X, y, monitor)
        p = self._checked_params()
        Xh = self._host_X(X)
        kind, classes, T = self._encode(y, Xh.shape[0])
        net, state, split_rng = self._fresh(p, Xh.shape[1], T.shape[1])
        validate = None
        if self.early_stopping:
            tr, va = self._split(
                kind, T, p["validation_fraction"], split_rng
            )
            Xv = self._device_X(net, Xh[self._index(Xh, va)])
            Tv = T[va]
            Xh, T = Xh[self._index(Xh, tr)], T[tr]
            validate = lambda: self._accuracy(net, kind, Xv, Tv)  # noqa: E731
        opt = self._optimizer_for(net, p, Xh.shape[0])
        self._train_and_commit(
            net, opt, state, kind, classes, Xh, T, p, p["epochs"], validate, monitor
        )
        return self

    def partial_fit(
        self,
        X: Any,
        y: Any,
        classes: Any = None,
        *,
        epochs: int = 1,
        monitor: TrainingMonitor | None = None,
    ) -> MLPClassifier:
        """Continue training on (X, y) for ``epochs`` passes (default one, as scikit-learn).

        The first call on an unfitted model needs ``classes`` (all labels that will ever appear),
        except for a multi-label indicator y. Later calls continue from the current weights,
        optimizer state and shuffle generator, so ``fit`` for k epochs then ``partial_fit`` for j
        equals ``fit`` for k + j (without early stopping, which ``partial_fit`` does not use).
        ``learning_rate``, ``momentum``, ``weight_decay``, ``batch_size``, ``verbose`` may change
        between calls; the architecture, optimizer kind, dtype, backend and convention may not.
        A failed call leaves the model as it was.
        """
        group = self._process_group()
        if group is not None:  # data-parallel: bp_gpu.distributed
            from . import distributed

            return distributed.partial_fit(self, group, X, y, classes, epochs, monitor)
        p = self._checked_params()
        epochs = _int("epochs", epochs, 1)
        if not hasattr(self, "net_"):
            Xh = self._host_X(X)
            y_arr = np.asarray(V.to_numpy(y) if V.array_module(y) is not np else y)
            if classes is None and not (y_arr.ndim == 2 and y_arr.shape[1] > 1):
                raise ValueError(
                    "classes must be passed on the first call to partial_fit "
                    "(every label that will appear, e.g. np.unique(y_all))"
                )
            cls = None
            if classes is not None:
                cls = np.unique(np.asarray(classes))
                if len(cls) < 2:
                    raise ValueError(f"classes must hold at least two labels; got {cls.tolist()!r}")
            kind, cls, T = self._encode(y, Xh.shape[0], cls)
            net, state, _ = self._fresh(p, Xh.shape[1], T.shape[1])
            opt = self._optimizer_for(net, p, Xh.shape[0])
            self._train_and_commit(net, opt, state, kind, cls, Xh, T, p, epochs, None, monitor)
            return self

        self._check_same_setup(p)
        Xh = self._host_X(X, self.n_features_in_)
        if classes is not None and not np.array_equal(
            np.unique(np.asarray(classes)), self.classes_
        ):
            raise ValueError(
                f"classes {np.unique(classes).tolist()!r} differ from the fitted classes_ "
                f"{self.classes_.tolist()!r}"
            )
        if self._label_kind == MULTILABEL:
            y_arr = np.asarray(V.to_numpy(y) if V.array_module(y) is not np else y)
            if y_arr.ndim != 2:
                raise ValueError(
                    "the model was fitted on a multi-label indicator matrix; y must be 2-D"
                )
        kind, _, T = self._encode(y, Xh.shape[0], self.classes_)
        if kind != self._label_kind:
            raise ValueError(f"y is {kind} but the model was fitted on {self._label_kind} targets")
        net, opt, state = self.net_, self._optimizer, self._state
        start = Snapshot(net._engine, opt)
        start.capture(state)
        try:
            opt.learning_rate = self._learning_rate(p, Xh.shape[0])
            opt.weight_decay = p["weight_decay"]
            if self.optimizer == "momentum":
                opt.momentum = p["momentum"]
            self._train_and_commit(
                net, opt, state, kind, self.classes_, Xh, T, p, epochs, None, monitor
            )
        except BaseException:
            start.restore(state)  # roll back: the model and its optimizer are exactly as before the call
            raise
        return self

    def _check_same_setup(self, p: dict[str, Any]) -> None:
        net = self.net_
        now = {
            "hidden_layer_sizes": (p["hidden"], tuple(net.layer_sizes[1:-1])),
            "optimizer": (self.optimizer, self._optimizer_name),
            "dtype": (p["dtype"].name, net.dtype.name),
            "positive_class": (int(self.positive_class), net.positive_class),
        }
        if self.backend != "auto":
            now["backend"] = (self.backend, net.backend)
        for name, (want, have) in now.items():
            if want != have:
                raise ValueError(
                    f"{name} is {want!r} but the model was fitted with {have!r}; "
                    "partial_fit cannot change it (call fit to start over)"
                )

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
    def _device_X(net: MLP, X: Any) -> Any:
        return V.check_features(X, net.layer_sizes[0], net.dtype, net._engine.xp)

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

    def _train_and_commit(
        self, net, opt, state, kind, classes, Xh, T, p, epochs, validate, monitor
    ) -> None:
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

        def view() -> MLPClassifier:
            m = type(self)(**self.get_params())
            m._commit(net, opt, state, kind, classes, early=validate is not None)
            return m

        train(
            net,
            opt,
            state,
            ArraySource(net._engine, X_train, T_train, p["batch_size"]),
            epochs=epochs,
            validate=validate,
            n_iter_no_change=p["n_iter_no_change"],
            tol=p["tol"],
            monitor=monitor,
            make_view=view,
            verbose=bool(self.verbose),
        )
        self._commit(net, opt, state, kind, classes, early=validate is not None)

    def _commit(self, net, opt, state, kind, classes, early: bool) -> None:
        """Install a trained state; nothing here can fail, so the estimator is never half-updated."""
        self.__dict__.pop("_group", None)  # a data-parallel fit sets it again after this
        self.net_ = net
        self._optimizer = opt
        self._optimizer_name = self.optimizer
        self._state = state
        self._label_kind = kind
        self.classes_ = classes
        self.n_features_in_ = net.layer_sizes[0]
        self.n_outputs_ = net.layer_sizes[-1]
        self.loss_curve_ = list(state.loss_curve)
        self.n_iter_ = state.n_iter
        if early:
            self.validation_scores_ = list(state.validation_scores)
            self.best_validation_score_ = state.best_validation_score
        else:
            self.__dict__.pop("validation_scores_", None)
            self.__dict__.pop("best_validation_score_", None)

    # -- prediction ----------------------------------------------------------------------------
    def predict_proba(self, X: Any) -> np.ndarray:
        """Probabilities as float64 NumPy: (n, 2) binary, (n, K) multi-class (rows sum to 1),
        (n, K) multi-label (per-label probabilities); columns in ``classes_`` order."""
        self._check_fitted()
        Xd = self._device_X(self.net_, self._host_X(X, self.n_features_in_))
        P = self._raw_proba(self.net_, Xd)
        if self._label_kind == BINARY:
            return np.hstack([1.0 - P, P])
        if self._label_kind == MULTICLASS:
            s = P.sum(axis=1, keepdims=True)
            # A row whose every sigmoid underflowed to 0 carries no preference: uniform.
            return np.where(s > 0, P / np.where(s > 0, s, 1.0), 1.0 / P.shape[1])
        return P

    def predict(self, X: Any) -> np.ndarray:
        """Labels from ``classes_`` (n,), or the 0/1 indicator matrix (n, K) for multi-label."""
        P = self.predict_proba(X)
        if self._label_kind == MULTILABEL:
            return (P > 0.5).astype(np.int64)
        return self.classes_[P.argmax(axis=1)]

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
