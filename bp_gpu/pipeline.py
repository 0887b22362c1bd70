"""The one training path behind ``MLPClassifier.fit`` and ``partial_fit``, for arrays and data sets,
in one process or many:

    checked inputs -> labels and targets -> a fresh or continued model -> standardisation
    -> held-out split -> a batch source -> the epoch loop (``bp_gpu.train``) -> the trained model

``fit`` is this pipeline from scratch, ``partial_fit`` the same pipeline continuing a model
(``incremental``; scikit-learn's ``BaseMultilayerPerceptron._fit(X, y, incremental)`` has the same
shape). The input is an ``ArrayInput`` or a ``DatasetInput`` (``bp_gpu.inputs``); which one only
decides how the steps are done, never which steps run. Every step that must agree across the
processes of a data-parallel job calls the collectives of ``group`` (``bp_gpu.group``): for one
process they are identities, and the same code trains it.

The result is a ``TrainedModel``; the estimator installs it only when the pipeline returns, so a
call that fails leaves the estimator as it was, and a continued model is rolled back to where it
was (parameters and optimizer state on the device, loop state on the host).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .hyperparams import check_int, checked, learning_rate, make_optimizer
from .inputs import DatasetInput, training_input
from .labels import MULTILABEL, LabelEncoder, LabelSet, given_classes, join_labels, kind_of
from .mlp import MLP
from .standardize import standardizer
from .train import Snapshot, TrainingMonitor, TrainState, train
from .trained import TrainedModel


def fresh(p: dict[str, Any], seed: np.random.SeedSequence, n_features: int, n_outputs: int
          ) -> tuple[MLP, TrainState, np.random.Generator]:
    """A new network and loop state, and the early-stopping split's generator: three independent
    streams of ``seed``, so each is the same whatever the others draw."""
    init_seq, shuffle_seq, split_seq = seed.spawn(3)
    net = MLP([n_features, *p["hidden"], n_outputs], positive_class=p["positive_class"], dtype=p["dtype"],
              backend=p["backend"], seed=np.random.default_rng(init_seq), precision=p["precision"])
    return net, TrainState(rng=np.random.default_rng(shuffle_seq)), np.random.default_rng(split_seq)


def agreed_params(group: Any, params: dict[str, Any]) -> dict[str, Any]:
    """The checked hyperparameters (``bp_gpu.hyperparams.checked``), the same on every process."""
    p = group.agree(lambda: checked(params), "checking the hyperparameters")
    mine = {k: repr(v) for k, v in params.items() if k != "verbose"}
    every = group.allgather(mine, "comparing the hyperparameters")
    for r, theirs in enumerate(every):
        diff = sorted(k for k in every[0] if theirs.get(k) != every[0][k])
        if diff:
            shown = ", ".join(f"{k}={theirs[k]} (rank 0: {every[0][k]})" for k in diff)
            raise group.everywhere(ValueError(
                f"rank {r} of {group.size}: hyperparameters differ from rank 0's: {shown}; every process must "
                "build the same MLPClassifier"))
    return p


def _agreed_columns(group: Any, n_features: int, names: np.ndarray | None) -> np.ndarray | None:
    """The feature names (or None) every process saw, after checking that every process has the same
    number of feature columns, with the same names."""
    every = group.allgather((n_features, None if names is None else [str(n) for n in names]),
                            "comparing the feature columns")
    d0, names0 = every[0]
    for r, (d, theirs) in enumerate(every):
        if d != d0:
            raise group.everywhere(ValueError(
                f"rank {r} of {group.size}: X has {d} features but rank 0's X has {d0}; every process must pass the "
                "same columns"))
        if theirs != names0:
            raise group.everywhere(ValueError(
                f"rank {r} of {group.size}: the feature names {theirs} differ from rank 0's {names0}; every "
                "process must pass the same columns in the same order"))
    return names


def _everywhere(group: Any, fn: Callable[[], Any]) -> Any:
    """``fn()`` computed from gathered data: an error it raises is raised on every process alike."""
    try:
        return fn()
    except (ValueError, TypeError) as exc:
        raise group.everywhere(exc) from None


def check_same_setup(p: dict[str, Any], previous: TrainedModel) -> None:
    """``partial_fit`` continues a model: what the model is made of must not change."""
    net = previous.net
    now = {
        "hidden_layer_sizes": (p["hidden"], tuple(net.layer_sizes[1:-1])),
        "optimizer": (p["optimizer"], previous.optimizer_name),
        "dtype": (p["dtype"].name, net.dtype.name),
        "precision": (p["precision"], net.precision),
        "positive_class": (p["positive_class"], net.positive_class),
        "standardize": (p["standardize"], previous.scaler is not None),
    }
    if p["backend"] != "auto":
        now["backend"] = (p["backend"], net.backend)
    for name, (want, have) in now.items():
        if want != have:
            raise ValueError(f"{name} is {want!r} but the model was fitted with {have!r}; partial_fit cannot change it "
                             "(call fit to start over)")


def _continued_labels(inp: Any, classes: Any, previous: TrainedModel) -> tuple[str, np.ndarray]:
    """(kind, classes) of a continued model's targets: its own, which the labels must fit."""
    if classes is not None and not np.array_equal(np.unique(np.asarray(classes)), previous.classes):
        raise ValueError(f"classes {np.unique(classes).tolist()!r} differ from the fitted classes_ "
                         f"{previous.classes.tolist()!r}")
    local = inp.label_set(previous.classes, previous.label_kind)
    kind = MULTILABEL if local.indicator is not None else kind_of(previous.classes, False)
    if kind != previous.label_kind:
        raise ValueError(f"{inp.targets_are} {kind} but the model was fitted on {previous.label_kind} targets")
    return kind, previous.classes


def _local_labels(inp: Any, classes: Any, incremental: bool) -> tuple[LabelSet, np.ndarray | None]:
    """This process's label set for a new model, and a first ``partial_fit``'s classes (checked)."""
    given = None
    if incremental:
        inp.require_classes(classes)
        given = None if classes is None else given_classes(classes)
    return inp.label_set(given), given


def _joined(group: Any, local: Any, given: np.ndarray | None, need_two: bool) -> tuple[str, np.ndarray]:
    """Every process's label set joined; ``given`` (a first ``partial_fit``'s classes) must be the same
    everywhere and is then the model's classes."""
    kind, union = _everywhere(group, lambda: join_labels(group.allgather(local, "gathering the labels"),
                                                         need_two=need_two))
    if kind == MULTILABEL or given is None:
        return kind, union
    every = group.allgather(given, "comparing classes")
    for r, c in enumerate(every):
        if not np.array_equal(c, every[0]):
            raise group.everywhere(ValueError(
                f"rank {r} of {group.size}: classes {c.tolist()!r} differ from rank 0's {every[0].tolist()!r}; pass "
                "the same classes everywhere"))
    return kind_of(given, False), given


def _validation_score(group: Any, score: Callable[[], tuple[int, int]]) -> Callable[[], float]:
    """The accuracy on every process's held-out rows together."""
    def validate() -> float:
        counts = np.array(score(), dtype=np.float64)
        group.sum(counts, "the validation score")
        return float(counts[0] / counts[1])

    return validate


def run(
    params: dict[str, Any],
    X: Any,
    y: Any,
    *,
    group: Any,
    seed: Callable[[], np.random.SeedSequence],
    previous: TrainedModel | None = None,
    incremental: bool = False,
    classes: Any = None,
    epochs: Any = None,
    monitor: TrainingMonitor | None = None,
    view: Callable[[TrainedModel], Any] | None = None,
) -> TrainedModel:
    """Train on ``(X, y)`` (or a data set ``X``) and return the trained model.

    ``params`` are the estimator's ``get_params()``; ``seed()`` the root of a new model's randomness
    (called only for a new model); ``previous`` the fitted model that ``partial_fit`` continues (None
    for ``fit`` and a first ``partial_fit``); ``classes`` and ``epochs`` are ``partial_fit``'s;
    ``view(model)`` an estimator holding a model in progress (``EpochInfo.model()``)."""
    method = "partial_fit" if incremental else "fit"
    with group.guard():
        p = agreed_params(group, params)
        if incremental:
            epochs = group.agree(lambda: check_int("epochs", epochs, 1), "checking epochs")
            fitted = group.allgather(previous is not None, "checking which processes hold a fitted model")
            if len(set(fitted)) > 1:
                r = fitted.index(not fitted[0])
                raise group.everywhere(ValueError(
                    f"rank {r} of {group.size}: the model is {'' if fitted[r] else 'not '}fitted there but "
                    f"{'' if fitted[0] else 'not '}fitted on rank 0; every process must continue the same model"))
        else:
            epochs, previous = p["epochs"], None
        if previous is not None:
            group.agree(lambda: check_same_setup(p, previous), "checking the model to continue")
        else:
            group.agree(lambda: group.use_device(p["backend"]), "choosing this process's GPU")
            group.check_devices()

        # checked inputs
        def read() -> Any:
            inp = training_input(X, y, method, previous)
            return inp.in_memory() if group.holds_shards_in_memory and isinstance(inp, DatasetInput) else inp

        inp = group.agree(read, "reading and checking this process's X and y")
        names = _agreed_columns(group, inp.n_features, inp.names)
        if previous is not None:
            names = previous.feature_names

        # labels and targets
        if previous is not None:
            kind, classes_ = group.agree(lambda: _continued_labels(inp, classes, previous), "checking y")
        else:
            local, given = group.agree(lambda: _local_labels(inp, classes, incremental), "checking y")
            kind, classes_ = _joined(group, local, given, need_two=not incremental)
        encoder = LabelEncoder(kind, classes_, p["dtype"])

        # a fresh or continued model
        rollback = None
        if previous is None:
            net, state, split_rng = group.agree(lambda: fresh(p, seed(), inp.n_features, encoder.n_outputs),
                                                "building the network")
            split_rng = group.start(net, state, split_rng)
            opt = None
        else:
            group.adopt(previous, params)
            net, opt, state = previous.net, previous.optimizer, previous.state
            rollback = Snapshot(net._engine, opt)
            rollback.capture(state)
        try:
            group.agree(lambda: inp.to_model(net), "converting X to the model's dtype")
            inp.encode(encoder)

            # held-out split
            train_in, val_in = inp, None
            if not incremental and p["early_stopping"]:
                train_in, val_in = group.agree(lambda: inp.split(kind, p["validation_fraction"], split_rng),
                                               "holding out the validation rows")

            # standardisation
            scaler = previous.scaler if previous is not None else None
            if previous is None and p["standardize"]:
                scaler = standardizer(group, group.agree(lambda: train_in.moments(net.dtype),
                                                         "the feature statistics"), net.dtype)
            validate = None if val_in is None else _validation_score(group, val_in.scorer(net, kind, scaler))

            # a batch source, and the optimizer over its epochs
            source = group.batch_source(train_in.batches(net, p["batch_size"], scaler), net._engine)
            lr = learning_rate(p, source.steps_per_epoch)
            if opt is None:
                opt = make_optimizer(p["optimizer"], net, lr, p["momentum"], p["weight_decay"])
            else:
                opt.learning_rate, opt.weight_decay = lr, p["weight_decay"]
                if p["optimizer"] == "momentum":
                    opt.momentum = p["momentum"]

            def current() -> TrainedModel:
                group.after_training(state, source)
                return TrainedModel(net, opt, p["optimizer"], state, kind, classes_, scaler, names,
                                    early_stopping=val_in is not None, group=group)

            # the epoch loop
            train(net, opt, state, source, epochs=epochs, validate=validate, n_iter_no_change=p["n_iter_no_change"],
                  tol=p["tol"], monitor=monitor, make_view=None if view is None else lambda: view(current()),
                  verbose=p["verbose"] and group.rank == 0)
        except BaseException:
            if rollback is not None:
                rollback.restore(state)  # the model and its optimizer exactly as before the call
            raise
        return current()
