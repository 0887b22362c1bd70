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

import dataclasses
import inspect
import numbers
import os
import warnings
from typing import Any

import numpy as np

from . import persistence
from ._feature_names import check_feature_names
from .data.dataset import Dataset
from .group import LocalGroup
from .inputs import check_dataset_features, check_X, chunk_proba, on_device
from .labels import MULTILABEL, check_labels_against, predictions, probabilities, raw_proba
from .pipeline import run
from .train import TrainingMonitor
from .trained import TrainedModel


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
    from sklearn.exceptions import NotFittedError

    _BASES: tuple[type, ...] = (ClassifierMixin, BaseEstimator)
except ImportError:  # scikit-learn is optional (the `train` extra): see the module docstring
    _BASES = (_EstimatorBase,)

    class NotFittedError(ValueError, AttributeError):  # type: ignore[no-redef]
        """The estimator is used before ``fit`` (as scikit-learn's error of the same name)."""


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
    precision : {"highest", "tf32", "bf16"}, default "highest"
        How the GEMMs treat their operands (``bp_gpu.MLP``'s ``precision``; docs/math.md, "Mixed
        precision"): ``"highest"`` computes in ``dtype``; ``"tf32"`` rounds the operands to TF32 and
        ``"bf16"`` stores and multiplies them in bfloat16, both accumulating in float32, for the GPU's
        tensor cores. The weights, optimizer state, sigmoid derivative and everything between the
        GEMMs stay float32 (``dtype="float32"`` is required); the saved model, ``get_weights`` and the
        ONNX export hold the float32 master weights. On the CPU it is an exact reference of what the
        GPU rounds, not a speed mode.
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
    chunk left to train on), drawn at random from ``random_state``'s split generator; a data set of
    a single chunk (a small file) is read into memory and split as arrays are, by rows.
    distributed : bool, default False
        Data-parallel training over the processes of ``MPI.COMM_WORLD`` (run under ``mpiexec``; needs
        ``pip install 'bp_gpu[mpi]'``): every process passes its own rows to ``fit``, ``batch_size``
        is per process, and each step is the mean gradient over every process's batch (see
        ``bp_gpu.distributed``). A single process trains as without it. ``save`` stays a local call
        that never waits on the other processes: ``if rank == 0: clf.save(path)`` (PyTorch DDP's and
        Horovod's idiom) writes a file that resumes the whole job.

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
        precision: str = "highest",
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
        self.precision = precision
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

    def set_params(self, **params: Any) -> MLPClassifier:
        """Set parameters (scikit-learn's ``set_params``). While the deprecated ``seed`` lives, a
        ``random_state`` set here, after construction, replaces it (scikit-learn's ``clone`` then
        ``set_random_state`` does this to every estimator); giving both in one call, as in the
        constructor, is still an error at ``fit``."""
        if params.get("random_state") is not None and "seed" not in params:
            params["seed"] = None
        return super().set_params(**params)

    # -- training: one path (bp_gpu.pipeline) ------------------------------------------------------
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
        return self._fit(X, y, incremental=False, monitor=monitor)

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
        return self._fit(X, y, incremental=True, classes=classes, epochs=epochs, monitor=monitor)

    def _fit(self, X: Any, y: Any, *, incremental: bool, classes: Any = None, epochs: Any = None,
             monitor: TrainingMonitor | None = None) -> MLPClassifier:
        trained = run(self.get_params(), X, y, group=self._process_group(), seed=self._seed_sequence,
                      previous=self._current() if incremental and hasattr(self, "_trained") else None,
                      incremental=incremental,
                      classes=classes, epochs=epochs, monitor=monitor, view=self._view)
        self._commit(trained)
        return self

    def _process_group(self) -> Any:
        """The processes this estimator trains across: ``MPI.COMM_WORLD``'s (``bp_gpu.distributed``)
        with ``distributed=True``, else this process alone."""
        if not self.distributed:
            return LocalGroup()
        from .distributed import world_group  # mpi4py is needed only here

        return world_group()

    def _seed_sequence(self) -> np.random.SeedSequence:
        """The root of a new model's randomness (see ``random_state``); draws from an instance."""
        source = self.random_state
        if self.seed is not None:
            warnings.warn(
                "MLPClassifier(seed=...) is deprecated and will be removed in the next release; use "
                "random_state=... (the same int gives the same model)",
                FutureWarning,
                stacklevel=6,
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

    def _view(self, trained: TrainedModel) -> MLPClassifier:
        """A fitted estimator holding ``trained`` (a model in progress: ``EpochInfo.model()``)."""
        m = type(self)(**self.get_params())
        m._commit(trained)
        return m

    def _commit(self, trained: TrainedModel) -> None:
        """Install a trained model; nothing here can fail, so the estimator is never half-updated."""
        net, state = trained.net, trained.state
        self._trained = trained
        self.net_ = net
        self.feature_mean_ = None if trained.scaler is None else trained.scaler.mean64.copy()
        self.feature_std_ = None if trained.scaler is None else trained.scaler.std64.copy()
        self.classes_ = trained.classes
        self.n_features_in_ = net.layer_sizes[0]
        self.n_outputs_ = net.layer_sizes[-1]
        self.loss_curve_ = list(state.loss_curve)
        self.n_iter_ = state.n_iter
        if trained.feature_names is not None:
            self.feature_names_in_ = trained.feature_names
        else:
            self.__dict__.pop("feature_names_in_", None)
        if trained.early_stopping:
            self.validation_scores_ = list(state.validation_scores)
            self.best_validation_score_ = state.best_validation_score
        else:
            self.__dict__.pop("validation_scores_", None)
            self.__dict__.pop("best_validation_score_", None)

    def _current(self) -> TrainedModel:
        """The trained model as the estimator holds it now: its fitted attributes (``net_``,
        ``classes_``, ``feature_names_in_``) are the model's."""
        return dataclasses.replace(self._trained, net=self.net_, classes=self.classes_,
                                   feature_names=getattr(self, "feature_names_in_", None))

    def _check_fitted(self) -> None:
        if not hasattr(self, "_trained"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with appropriate "
                "arguments before using this estimator."
            )

    # The trained model's parts that the CLI and the tests read.
    @property
    def _label_kind(self) -> str:
        return self._trained.label_kind

    @property
    def _optimizer(self) -> Any:
        return self._trained.optimizer

    @property
    def _state(self) -> Any:
        return self._trained.state

    # -- prediction ----------------------------------------------------------------------------
    def predict_proba(self, X: Any) -> np.ndarray:
        """Probabilities as float64 NumPy: (n, 2) binary, (n, K) multi-class (rows sum to 1),
        (n, K) multi-label (per-label probabilities); columns in ``classes_`` order. ``X`` may be a
        data set (computed chunk by chunk, see ``iter_predict_proba``)."""
        self._check_fitted()
        if isinstance(X, Dataset):
            parts = [P for P, _ in self.iter_predict_proba(X)]
            return np.concatenate(parts) if parts else np.empty((0, len(self.classes_)))
        t = self._trained
        check_feature_names(getattr(self, "feature_names_in_", None), X, type(self).__name__)
        Xd = on_device(t.net, check_X(X, self.n_features_in_), t.scaler)
        return probabilities(t.label_kind, raw_proba(t.net, Xd))

    def iter_predict_proba(self, dataset: Dataset) -> Any:
        """``(probabilities, chunk)`` for each chunk of ``dataset`` in file order: what
        ``predict_proba`` returns for the chunk's rows, and the ``bp_gpu.data.Chunk`` (its ``y`` are
        the raw labels when the data set has a target, ``start`` its first row). Memory holds one
        chunk at a time (``bp-gpu predict`` writes each before reading the next)."""
        self._check_fitted()
        t = self._trained
        check_dataset_features(dataset, self.n_features_in_, t.feature_names)
        for c in dataset.iter_chunks(dtype=t.net.dtype):
            yield probabilities(t.label_kind, chunk_proba(t.net, c.X, t.scaler)), c

    def predict(self, X: Any) -> np.ndarray:
        """Labels from ``classes_`` (n,), or the 0/1 indicator matrix (n, K) for multi-label; ``X``
        may be a data set."""
        self._check_fitted()
        return predictions(self._label_kind, self.classes_, self.predict_proba(X))

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

    def _dataset_score(self, ds: Dataset) -> float:
        if ds.target is None:
            raise ValueError(f"{ds.path}: the data set has no target column to score against; open it with "
                             "target=...")
        hits = n = 0
        for P, c in self.iter_predict_proba(ds):
            pred, y = predictions(self._label_kind, self.classes_, P), c.y
            if self._label_kind == MULTILABEL:
                hits += int(np.sum((pred == np.asarray(y).reshape(pred.shape)).all(axis=1)))
            else:
                check_labels_against(np.asarray(y[:1]), self.classes_, f"{ds.path}: the labels of column "
                                     f"{ds.target!r}")
                hits += int(np.sum(pred == y))
            n += len(pred)
        return hits / n

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
        state = dict(self.get_params())
        if hasattr(self, "_trained"):
            state["_bp_gpu_model"] = persistence.to_arrays(self.get_params(), self._current())
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        arrays = state.pop("_bp_gpu_model", None)
        self.__dict__.update(state)
        if arrays is not None:
            _, trained = persistence.from_arrays(arrays, "pickled MLPClassifier", type(self)().get_params(),
                                                 backend=self.backend)
            self._commit(trained)

    def save(self, path: Any) -> None:
        """Write the fitted model, with optimizer state to resume training, as a ``.npz`` file
        (format: ``bp_gpu.persistence``); atomic: the file is either the old one or the new one.
        A local call, as ``torch.save``: it never waits on other processes. A data-parallel model
        holds every process's shuffle generator (gathered after each epoch), so the file written by
        any one process (``if rank == 0: clf.save(path)``) resumes the whole job; processes that all
        save to one path write the same bytes."""
        self._check_fitted()
        persistence.save(path, self.get_params(), self._current())


def load(path: Any, backend: str | None = None) -> MLPClassifier:
    """Read a model written by ``MLPClassifier.save``; every part is validated.

    ``backend`` overrides the saved ``backend`` hyperparameter (e.g. ``"cpu"`` to load a model
    trained on a GPU on a machine without one). Raises ``bp_gpu.persistence.ModelFileError`` naming
    what is wrong.
    """
    path = os.fspath(path)
    hyper, trained = persistence.from_arrays(persistence.read(path), path, MLPClassifier().get_params(), backend)
    clf = MLPClassifier(**hyper)
    clf._commit(trained)
    return clf
