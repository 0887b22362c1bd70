"""MLPClassifier: accuracy on real data, agreement with scikit-learn, its estimator contract,
determinism, resuming, failure atomicity, divergence and Ctrl-C."""

import subprocess
import sys
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_breast_cancer, load_digits  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split  # noqa: E402
from sklearn.neural_network import MLPClassifier as SkMLP  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

import bp_gpu  # noqa: E402
from bp_gpu import MLPClassifier  # noqa: E402
from bp_gpu.optim import Adam  # noqa: E402
from bp_gpu.train import ArraySource, TrainingDivergedError, TrainState, train  # noqa: E402


def _split(loader):
    X, y = loader(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    sc = StandardScaler().fit(Xtr)
    return sc.transform(Xtr), sc.transform(Xte), ytr, yte


@pytest.fixture(scope="module")
def cancer():
    return _split(load_breast_cancer)


@pytest.fixture(scope="module")
def digits():
    return _split(load_digits)


def _small(rng, n=61, d=5, k=2):
    X = rng.normal(size=(n, d))
    y = (X[:, :k].argmax(axis=1) if k > 2 else (X[:, 0] + 0.5 * X[:, 1] > 0)).astype(int)
    return X, y


KW = dict(hidden_layer_sizes=(6,), batch_size=16, learning_rate=0.05, backend="cpu", random_state=0)


def _weights(clf):
    return [a for Wb in clf.net_.get_weights() for a in Wb]


def _assert_same_model(a, b):
    for x, y in zip(_weights(a), _weights(b)):
        np.testing.assert_array_equal(x, y)
    assert a.loss_curve_ == b.loss_curve_ and a.n_iter_ == b.n_iter_


# -- accuracy on real data, and agreement with scikit-learn ----------------------------------------
def test_breast_cancer_accuracy_close_to_sklearn(cancer):
    Xtr, Xte, ytr, yte = cancer
    ours = MLPClassifier(
        (16,), optimizer="adam", learning_rate=0.01, batch_size=32, epochs=40, backend="cpu", random_state=0
    ).fit(Xtr, ytr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: a fixed epoch budget on purpose
        sk = SkMLP(
            (16,),
            activation="logistic",
            solver="adam",
            learning_rate_init=0.01,
            batch_size=32,
            max_iter=40,
            alpha=0.0,
            random_state=0,
        ).fit(Xtr, ytr)
    acc, sk_acc = ours.score(Xte, yte), sk.score(Xte, yte)
    assert acc >= 0.95
    assert abs(acc - sk_acc) <= 0.03
    assert abs(ours.loss_curve_[-1] - sk.loss_curve_[-1]) < 0.05


def test_digits_accuracy(digits):
    Xtr, Xte, ytr, yte = digits
    clf = MLPClassifier(
        (32,), learning_rate=0.01, batch_size=64, epochs=25, backend="cpu", random_state=0
    ).fit(Xtr, ytr)
    assert clf.score(Xte, yte) >= 0.93
    P = clf.predict_proba(Xte)
    assert P.shape == (len(Xte), 10)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(clf.classes_[P.argmax(axis=1)], clf.predict(Xte))


def test_full_batch_sgd_matches_sklearn_step_for_step(cancer):
    # Same weights, same full-batch SGD with L2 (sklearn's alpha = weight_decay * batch size):
    # five steps agree to float64 rounding, and so do the losses (sklearn's includes the penalty).
    X, _, y, _ = cancer
    n, lr, alpha = len(X), 0.5, 0.3
    ours = MLPClassifier(
        (7,),
        optimizer="sgd",
        learning_rate=lr,
        batch_size=n,
        epochs=1,
        weight_decay=alpha / n,
        dtype="float64",
        backend="cpu",
        random_state=3,
    ).fit(X, y)
    sk = SkMLP(
        (7,),
        activation="logistic",
        solver="sgd",
        learning_rate_init=lr,
        momentum=0.0,
        batch_size=n,
        alpha=alpha,
        shuffle=False,
        random_state=0,
    )
    sk.partial_fit(X, y, classes=[0, 1])  # builds its network; then it gets ours
    for i, (W, b) in enumerate(ours.net_.get_weights()):
        sk.coefs_[i][...] = W.T
        sk.intercepts_[i][...] = b
    for _ in range(5):
        pen = 0.5 * alpha * sum((W**2).sum() for W in sk.coefs_) / n
        sk.partial_fit(X, y)
        sk.loss_curve_[-1] -= pen
    ours.partial_fit(X, y, epochs=5)
    for (W, b), Ws, bs in zip(ours.net_.get_weights(), sk.coefs_, sk.intercepts_):
        np.testing.assert_allclose(W, Ws.T, rtol=0, atol=1e-13)
        np.testing.assert_allclose(b, bs, rtol=0, atol=1e-13)
    np.testing.assert_allclose(ours.loss_curve_[1:], sk.loss_curve_[1:], rtol=1e-12)
    np.testing.assert_allclose(ours.predict_proba(X), sk.predict_proba(X), rtol=0, atol=1e-13)


# -- targets -----------------------------------------------------------------------------------------
def test_string_labels_binary(rng):
    X, y = _small(rng)
    labels = np.where(y == 1, "spam", "ham")
    clf = MLPClassifier(epochs=30, **KW).fit(X, labels)
    assert list(clf.classes_) == ["ham", "spam"] and clf.n_outputs_ == 1
    P = clf.predict_proba(X)
    assert P.shape == (len(X), 2)
    np.testing.assert_allclose(P.sum(axis=1), 1.0)
    assert set(clf.predict(X)) <= {"ham", "spam"}
    assert clf.score(X, labels) > 0.85


def test_positive_class_zero_learns_the_same_task(rng):
    X, y = _small(rng)
    a = MLPClassifier(epochs=30, positive_class=1, **KW).fit(X, y)
    b = MLPClassifier(epochs=30, positive_class=0, **KW).fit(X, y)
    assert b.net_.positive_class == 0
    # the notes' convention: the output models p(t = 0), so it is high where class 0 is
    y0 = b.net_.predict_proba(X)[:, 0]
    assert np.mean((y0 > 0.5) == (y == 0)) > 0.85
    assert abs(a.score(X, y) - b.score(X, y)) < 0.1


def test_multilabel_indicator(rng):
    X = rng.normal(size=(80, 4))
    Y = np.stack([X[:, 0] > 0, X[:, 1] > 0, X[:, 0] + X[:, 1] > 0], axis=1).astype(int)
    clf = MLPClassifier(epochs=60, **KW).fit(X, Y)
    assert clf.n_outputs_ == 3 and list(clf.classes_) == [0, 1, 2]
    assert clf.predict(X).shape == (80, 3) and clf.predict_proba(X).shape == (80, 3)
    assert clf.score(X, Y) > 0.7


@pytest.mark.parametrize(
    "y, match",
    [
        (np.zeros(61), "only one class"),
        (np.linspace(0, 1, 61), "Unknown label type: continuous"),
        (np.r_[np.nan, np.ones(60)], r"y\[0\] is nan"),
        (np.ones(60), "y has 60 rows but X has 61"),
        (np.full((61, 2), 2), r"y\[0, 0\] = 2.*only 0 and 1"),
        (None, "requires y to be passed"),
    ],
)
def test_bad_targets(rng, y, match):
    X, _ = _small(rng)
    with pytest.raises(ValueError, match=match):
        MLPClassifier(**KW).fit(X, y)


# -- parameters ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "param, value, exc, match",
    [
        ("hidden_layer_sizes", (4, 0), ValueError, r"hidden_layer_sizes\[1\] must be >= 1"),
        ("hidden_layer_sizes", "64", TypeError, "hidden_layer_sizes must be an int or a sequence"),
        ("optimizer", "rmsprop", ValueError, "optimizer must be one of"),
        ("learning_rate", 0.0, ValueError, r"learning_rate must be finite and in \(0, inf\)"),
        ("learning_rate", "fast", TypeError, "learning_rate must be a real number"),
        ("momentum", 1.0, ValueError, r"momentum must be finite and in \[0, 1\)"),
        ("batch_size", 0, ValueError, "batch_size must be >= 1"),
        ("batch_size", 2.5, TypeError, "batch_size must be an int"),
        ("epochs", 0, ValueError, "epochs must be >= 1"),
        ("weight_decay", -1e-3, ValueError, "weight_decay must be finite"),
        ("weight_decay", float("nan"), ValueError, "weight_decay must be finite"),
        ("positive_class", 2, ValueError, "positive_class must be 0 or 1"),
        ("dtype", "float16", ValueError, "dtype must be 'float32' or 'float64'"),
        ("backend", "tpu", ValueError, "backend must be one of"),
        ("random_state", -1, ValueError, "random_state must be None, an int >= 0"),
        ("random_state", 1.5, ValueError, "random_state must be None, an int >= 0, a numpy.random.Generator"),
        ("random_state", True, ValueError, "random_state must be None, an int >= 0"),
        ("seed", -1, ValueError, "seed must be >= 0"),
        (
            "validation_fraction",
            1.0,
            ValueError,
            r"validation_fraction must be finite and in \(0, 1\)",
        ),
        ("n_iter_no_change", 0, ValueError, "n_iter_no_change must be >= 1"),
        ("tol", -1.0, ValueError, "tol must be finite"),
        ("early_stopping", "yes", TypeError, "early_stopping must be a bool"),
    ],
)
def test_bad_parameters_are_named(rng, param, value, exc, match):
    X, y = _small(rng)
    kw = {**KW, param: value}
    if param == "seed":
        del kw["random_state"]
    with pytest.raises(exc, match=match):
        MLPClassifier(**kw).fit(X, y)


def test_bad_features(rng):
    X, y = _small(rng)
    X[3, 2] = np.inf
    with pytest.raises(ValueError, match=r"X\[3, 2\] is inf"):
        MLPClassifier(**KW).fit(X, y)
    clf = MLPClassifier(epochs=1, **KW).fit(*_small(rng))
    with pytest.raises(ValueError, match="X has 4 features, but MLPClassifier is expecting 5"):
        clf.predict(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="Reshape your data"):
        clf.predict(np.zeros(5))


# -- scikit-learn's estimator contract -----------------------------------------------------------
def test_sklearn_estimator_checks_with_default_parameters():
    from sklearn.utils.estimator_checks import check_estimator

    # Every check, nothing expected to fail; the suite seeds estimators through random_state.
    check_estimator(MLPClassifier())


def test_random_state_follows_scikit_learn(rng):
    X, y = _small(rng)
    kw = {k: v for k, v in KW.items() if k != "random_state"}

    def fit(random_state):
        return MLPClassifier(epochs=2, random_state=random_state, **kw).fit(X, y)

    _assert_same_model(fit(7), fit(7))
    _assert_same_model(fit(np.random.RandomState(7)), fit(np.random.RandomState(7)))
    _assert_same_model(fit(np.random.default_rng(7)), fit(np.random.default_rng(7)))
    # None draws from NumPy's global RandomState: a fresh model each fit, reproducible with np.random.seed
    assert not np.array_equal(_weights(fit(None))[0], _weights(fit(None))[0])
    np.random.seed(5)
    a = fit(None)
    np.random.seed(5)
    _assert_same_model(a, fit(None))
    # an instance is drawn from: its state advances, so a second fit with it differs
    for source in (np.random.RandomState(7), np.random.default_rng(7)):
        clf = MLPClassifier(epochs=2, random_state=source, **kw)
        first = _weights(clf.fit(X, y))[0].copy()
        assert not np.array_equal(first, _weights(clf.fit(X, y))[0])


def test_seed_is_a_deprecated_alias_of_random_state(rng):
    X, y = _small(rng)
    kw = {k: v for k, v in KW.items() if k != "random_state"}
    with pytest.warns(FutureWarning, match=r"seed=\.\.\.\) is deprecated.*use random_state"):
        old = MLPClassifier(epochs=2, seed=3, **kw).fit(X, y)
    _assert_same_model(old, MLPClassifier(epochs=2, random_state=3, **kw).fit(X, y))
    with pytest.raises(ValueError, match="seed is a deprecated alias of random_state; give random_state only"):
        MLPClassifier(seed=3, random_state=3, **kw).fit(X, y)


def test_a_random_state_set_later_replaces_the_deprecated_seed(rng):
    """scikit-learn's clone then set_random_state (what check_estimator does to every estimator) on a
    model built with seed=: the later random_state wins, with no error and no deprecation warning."""
    import warnings

    from sklearn.base import clone
    from sklearn.utils._testing import set_random_state

    X, y = _small(rng)
    kw = {k: v for k, v in KW.items() if k != "random_state"}
    est = clone(MLPClassifier(epochs=2, seed=0, **kw))
    set_random_state(est, random_state=11)
    assert est.get_params()["seed"] is None
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        est.fit(X, y)
    _assert_same_model(est, MLPClassifier(epochs=2, random_state=11, **kw).fit(X, y))
    with pytest.raises(ValueError, match="seed is a deprecated alias of random_state; give random_state only"):
        MLPClassifier(epochs=2, **kw).set_params(seed=3, random_state=3).fit(X, y)


def test_feature_names_follow_scikit_learn(cancer):
    pd = pytest.importorskip("pandas")
    from sklearn.utils.estimator_checks import check_dataframe_column_names_consistency

    # scikit-learn's own check (run on its estimators, not part of check_estimator)
    check_dataframe_column_names_consistency("MLPClassifier", MLPClassifier(epochs=5, random_state=0))

    Xtr, Xte, ytr, yte = cancer
    names = [f"f{i}" for i in range(Xtr.shape[1])]
    train, test = pd.DataFrame(Xtr, columns=names), pd.DataFrame(Xte, columns=names)
    clf = MLPClassifier((16,), learning_rate=0.01, batch_size=32, epochs=20, backend="cpu", random_state=0)
    clf.fit(train, ytr)
    assert clf.feature_names_in_.dtype == object and list(clf.feature_names_in_) == names
    assert clf.score(test, yte) > 0.95
    # the case: the same columns in another order scored 0.54 instead of 0.96, silently
    with pytest.raises(ValueError, match="Feature names must be in the same order as they were in fit"):
        clf.score(test[names[::-1]], yte)
    with pytest.raises(ValueError, match="Feature names unseen at fit time:\n- g0\n"):
        clf.predict(test.rename(columns={"f0": "g0"}))
    with pytest.raises(ValueError, match="Feature names unseen at fit time"):
        clf.partial_fit(test.rename(columns={"f0": "g0"}), yte)
    with pytest.warns(UserWarning, match="X does not have valid feature names, but MLPClassifier was fitted with"):
        clf.predict(Xte)
    with pytest.raises(TypeError, match="only supported if all input features have string names"):
        clf.fit(pd.DataFrame(Xtr, columns=[0, *names[1:]]), ytr)  # a failed fit changes nothing:
    assert list(clf.feature_names_in_) == names
    clf.fit(Xtr, ytr)  # refitted on an array: the names are gone
    assert not hasattr(clf, "feature_names_in_")
    with pytest.warns(UserWarning, match="X has feature names, but MLPClassifier was fitted without"):
        clf.predict(test)
    ints = MLPClassifier(epochs=1, random_state=0).fit(pd.DataFrame(Xtr), ytr)  # integer column labels
    assert not hasattr(ints, "feature_names_in_")


def test_clone_pipeline_gridsearch_cross_val(cancer):
    X, _, y, _ = cancer
    clf = MLPClassifier((8,), epochs=5, batch_size=64, learning_rate=0.01, backend="cpu", random_state=1)
    assert clone(clf).get_params() == clf.get_params()
    assert clf.set_params(epochs=6) is clf and clf.epochs == 6
    pipe = make_pipeline(StandardScaler(), clf)
    assert cross_val_score(pipe, X, y, cv=3).mean() > 0.85
    gs = GridSearchCV(clf, {"learning_rate": [0.001, 0.05]}, cv=2).fit(X, y)
    assert gs.best_params_["learning_rate"] == 0.05
    assert not hasattr(clf, "net_")  # GridSearchCV trained clones
    with pytest.raises(NotFittedError):
        clf.predict(X)


def test_pickle_roundtrip_goes_through_the_file_format(rng):
    import pickle

    X, y = _small(rng)
    clf = MLPClassifier(epochs=3, **KW).fit(X, y)
    back = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))
    _assert_same_model(back, clf)


def test_works_without_scikit_learn(tmp_path):
    # A process where `import sklearn` fails: the stand-in base class takes over.
    code = f"""
import sys
sys.modules["sklearn"] = None
import numpy as np, bp_gpu
from bp_gpu.classifier import MLPClassifier, NotFittedError, _EstimatorBase
assert MLPClassifier.__mro__[1] is _EstimatorBase
rng = np.random.default_rng(0)
X = rng.normal(size=(40, 3)); y = (X[:, 0] > 0).astype(int)
clf = MLPClassifier(hidden_layer_sizes=(4,), epochs=20, batch_size=8, learning_rate=0.05, backend="cpu", random_state=0)
try:
    clf.predict(X); raise SystemExit("no NotFittedError")
except NotFittedError:
    pass
assert clf.fit(X, y) is clf and clf.score(X, y) > 0.8
assert clf.get_params()["epochs"] == 20 and clf.set_params(epochs=3).epochs == 3
try:
    clf.set_params(epoch=3); raise SystemExit("no error")
except ValueError as e:
    assert "Invalid parameter 'epoch'" in str(e)
assert repr(clf).startswith("MLPClassifier(") and "epochs=3" in repr(clf)
clf.save({str(tmp_path / "m.npz")!r})
assert (bp_gpu.load({str(tmp_path / "m.npz")!r}).predict(X) == clf.predict(X)).all()
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# -- determinism, continuation ----------------------------------------------------------------------
def test_same_seed_same_model_different_seed_different(rng):
    X, y = _small(rng)
    a = MLPClassifier(epochs=4, **KW).fit(X, y)
    b = MLPClassifier(epochs=4, **KW).fit(X, y)
    _assert_same_model(a, b)
    c = MLPClassifier(epochs=4, **{**KW, "random_state": 1}).fit(X, y)
    assert not np.array_equal(_weights(a)[0], _weights(c)[0])


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_fit_then_partial_fit_equals_longer_fit(rng, optimizer):
    X, y = _small(rng, k=3)
    kw = {**KW, "optimizer": optimizer}
    full = MLPClassifier(epochs=5, **kw).fit(X, y)
    part = MLPClassifier(epochs=2, **kw).fit(X, y).partial_fit(X, y, epochs=2).partial_fit(X, y)
    _assert_same_model(full, part)


def test_partial_fit_from_scratch_needs_classes(rng):
    X, y = _small(rng, k=3)
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        MLPClassifier(**KW).partial_fit(X, y)
    clf = MLPClassifier(**KW).partial_fit(X[:20], y[:20], classes=[0, 1, 2, 3])
    assert list(clf.classes_) == [0, 1, 2, 3] and clf.n_outputs_ == 4 and clf.n_iter_ == 1
    clf.partial_fit(X[20:], y[20:])
    assert clf.n_iter_ == 2
    with pytest.raises(ValueError, match=r"y\[0\] = 7 is not one of the classes"):
        clf.partial_fit(X[:3], np.array([7, 0, 1]))
    clf.set_params(hidden_layer_sizes=(9,))
    with pytest.raises(ValueError, match="hidden_layer_sizes is .* but the model was fitted with"):
        clf.partial_fit(X, y)


def test_streamed_batches_equal_device_resident(rng):
    # The host-streaming path (used on a GPU when the data does not fit) gives the same steps.
    X = rng.normal(size=(50, 4))
    T = (X[:, :1] > 0).astype(np.float64)
    out = []
    for placement in ("device", "stream"):
        net = bp_gpu.MLP((4, 3, 1), dtype="float64", backend="cpu", seed=1)
        opt = Adam(net, 0.01)
        state = TrainState(rng=np.random.default_rng(2))
        train(net, opt, state, ArraySource(net._engine, X, T, 7, placement), epochs=3)
        out.append((net._engine.params.copy(), state.loss_curve))
    np.testing.assert_array_equal(out[0][0], out[1][0])
    assert out[0][1] == out[1][1]


# -- failure atomicity, divergence, Ctrl-C, early stopping -------------------------------------------
@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_failed_fit_leaves_fitted_model_unchanged(rng):
    X, y = _small(rng)
    clf = MLPClassifier(epochs=3, **KW).fit(X, y)
    before = [w.copy() for w in _weights(clf)]
    attrs = (clf.loss_curve_, clf.n_iter_, list(clf.classes_), clf.net_)
    with pytest.raises(ValueError, match="only one class"):
        clf.fit(X, np.zeros(len(X)))
    clf.set_params(learning_rate=1e308, dtype="float64", optimizer="sgd", batch_size=10)
    with pytest.raises(TrainingDivergedError, match=r"epoch 1 .*smaller learning_rate"):
        clf.fit(X, y)
    assert (clf.loss_curve_, clf.n_iter_, list(clf.classes_), clf.net_) == attrs
    for a, b in zip(before, _weights(clf)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_divergent_partial_fit_rolls_back(rng):
    X, y = _small(rng)
    clf = MLPClassifier(
        epochs=2, **{**KW, "optimizer": "sgd", "dtype": "float64", "batch_size": 10}
    ).fit(X, y)
    before = [w.copy() for w in _weights(clf)]
    clf.set_params(learning_rate=1e308)
    with pytest.raises(TrainingDivergedError, match="the mean loss of epoch 3"):
        clf.partial_fit(X, y)
    assert (
        clf.n_iter_ == 2
        and clf._optimizer.learning_rate == 0.05
        and clf._optimizer.step_count == 14
    )
    for a, b in zip(before, _weights(clf)):
        np.testing.assert_array_equal(a, b)
    # and it trains on from there exactly as if the failed call had never happened
    clf.set_params(learning_rate=0.05)
    clf.partial_fit(X, y)
    ref = MLPClassifier(
        epochs=3, **{**KW, "optimizer": "sgd", "dtype": "float64", "batch_size": 10}
    ).fit(X, y)
    _assert_same_model(clf, ref)


class _InterruptAt:
    """A monitor that presses Ctrl-C in the middle of epoch `epoch`."""

    def __init__(self, epoch):
        self.epoch, self.batches, self.done = epoch, 0, 0

    def on_batch(self, n):
        self.batches += 1
        if self.done == self.epoch - 1 and self.batches == 2:
            raise KeyboardInterrupt

    def on_epoch(self, info):
        self.done, self.batches = info.epoch, 0


def test_ctrl_c_keeps_last_completed_epoch(rng):
    X, y = _small(rng)
    with pytest.warns(RuntimeWarning, match="interrupted by the user after 2 completed epochs"):
        clf = MLPClassifier(epochs=10, **KW).fit(X, y, monitor=_InterruptAt(3))
    _assert_same_model(clf, MLPClassifier(epochs=2, **KW).fit(X, y))
    # consistent: training continues exactly like an uninterrupted run
    clf.partial_fit(X, y, epochs=2)
    _assert_same_model(clf, MLPClassifier(epochs=4, **KW).fit(X, y))


def test_ctrl_c_before_the_first_epoch_commits_nothing(rng):
    X, y = _small(rng)
    unfitted = MLPClassifier(epochs=10, **KW)
    with pytest.raises(KeyboardInterrupt):
        unfitted.fit(X, y, monitor=_InterruptAt(1))
    assert not hasattr(unfitted, "net_") and not hasattr(unfitted, "n_iter_")

    clf = MLPClassifier(epochs=2, **KW).fit(X, y)
    before, net = [w.copy() for w in _weights(clf)], clf.net_
    for call in (lambda: clf.fit(X, y, monitor=_InterruptAt(1)),
                 lambda: clf.partial_fit(X, y, monitor=_InterruptAt(1))):
        with pytest.raises(KeyboardInterrupt):
            call()
        assert clf.net_ is net and clf.n_iter_ == 2 and len(clf.loss_curve_) == 2
        for a, b in zip(before, _weights(clf)):
            np.testing.assert_array_equal(a, b)
    clf.partial_fit(X, y)  # and the model trains on as if nothing had happened
    _assert_same_model(clf, MLPClassifier(epochs=3, **KW).fit(X, y))


def test_early_stopping_keeps_the_best_epoch(rng):
    X, y = _small(rng, n=120, k=3)
    seen = []

    class Record:
        def on_epoch(self, info):
            seen.append((info.validation_score, [w.copy() for w in _weights(info.model())]))

    kw = {
        **KW,
        "early_stopping": True,
        "n_iter_no_change": 3,
        "validation_fraction": 0.25,
        "tol": 0.0,
    }
    clf = MLPClassifier(epochs=200, **kw).fit(X, y, monitor=Record())
    assert clf.n_iter_ < 200 and len(clf.validation_scores_) == clf.n_iter_ == len(seen)
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    best = int(np.argmax(clf.validation_scores_))  # the first epoch reaching the best score
    for a, b in zip(seen[best][1], _weights(clf)):
        np.testing.assert_array_equal(a, b)
    refit = clf.set_params(early_stopping=False, epochs=1).fit(X, y)
    assert not hasattr(refit, "validation_scores_")


def test_verbose_prints_each_epoch(rng, capsys):
    X, y = _small(rng)
    MLPClassifier(epochs=2, verbose=True, **KW).fit(X, y)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("Epoch 1, loss = ") and lines[1].startswith("Epoch 2, loss = ")


def test_exports():
    assert bp_gpu.MLPClassifier is MLPClassifier and callable(bp_gpu.load)


# -- the convention is invisible -------------------------------------------------------------------------
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam", "adamw", "lamb"])
def test_positive_class_does_not_change_predictions(optimizer, cancer):
    """Same seed, positive_class 0 or 1: mirror-image networks from the first step to the last,
    so predict_proba agrees (float64) after a few hundred steps, for every optimizer."""
    Xtr, Xte, ytr, _ = cancer
    kw = dict(hidden_layer_sizes=(8,), optimizer=optimizer, learning_rate=0.01, weight_decay=0.01,
              batch_size=32, epochs=25, dtype="float64", backend="cpu", random_state=3)  # 25 x 14 = 350 steps
    p0 = MLPClassifier(positive_class=0, **kw).fit(Xtr, ytr)
    p1 = MLPClassifier(positive_class=1, **kw).fit(Xtr, ytr)
    np.testing.assert_allclose(p0.predict_proba(Xte), p1.predict_proba(Xte), rtol=0, atol=1e-9)
    np.testing.assert_allclose(p0.loss_curve_, p1.loss_curve_, rtol=1e-9)
    W0, W1 = p0.net_.get_weights()[-1][0], p1.net_.get_weights()[-1][0]
    np.testing.assert_allclose(W0, -W1, rtol=1e-7, atol=1e-9)  # the output layer, mirrored


def test_lr_schedule_spans_the_fit(rng):
    X, y = _small(rng, n=64)
    clf = MLPClassifier(lr_schedule="warmup_cosine", warmup_epochs=1.5, final_learning_rate=1e-4, epochs=4,
                        **{**KW, "batch_size": 16}).fit(X, y)  # 4 steps per epoch
    s = clf._optimizer.schedule
    assert (s.name, s.peak, s.warmup_steps, s.total_steps, s.final) == ("warmup_cosine", 0.05, 6, 16, 1e-4)
    assert clf._optimizer.step_count == 16 and clf._optimizer.last_learning_rate == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        MLPClassifier(lr_schedule="cosine").fit(X, y)
    with pytest.raises(ValueError, match="warmup_epochs must be finite and in"):
        MLPClassifier(warmup_epochs=-1).fit(X, y)


@pytest.mark.parametrize("optimizer", ["adamw", "lamb"])
def test_new_optimizers_learn(optimizer, cancer):
    Xtr, Xte, ytr, yte = cancer
    clf = MLPClassifier((16,), optimizer=optimizer, learning_rate=0.01, weight_decay=0.01, batch_size=32, epochs=30,
                        backend="cpu", random_state=0).fit(Xtr, ytr)
    assert clf.score(Xte, yte) >= 0.95


def test_text_and_objects_in_X_follow_one_rule_with_the_first_bad_entry(rng):
    """One rule for every input, as the .npy reader and scikit-learn's check_array: numbers only. Text
    is refused even when it spells numbers; an object array of numbers is taken as float64; the first
    entry that is not a number is named by its position."""
    X, y = _small(rng)
    clf = MLPClassifier(epochs=1, **KW)
    with pytest.raises(TypeError, match=r"X must be numeric; got an array of dtype <U\d+ \(text\)"):
        clf.fit(X.astype(str), y)
    objects = X.astype(object)
    objects[4, 2] = "a"
    with pytest.raises(TypeError, match=r"X\[4, 2\] = 'a' is text, not a number"):
        clf.fit(objects, y)
    objects[4, 2] = None
    with pytest.raises(TypeError, match=r"X\[4, 2\] = None: float\(\) argument must be"):
        clf.fit(objects, y)
    _assert_same_model(MLPClassifier(epochs=1, **KW).fit(X.astype(object), y), MLPClassifier(epochs=1, **KW).fit(X, y))
    with pytest.raises(TypeError, match=r"t\[0\] = '1' is text"):
        bp_gpu.MLP([X.shape[1], 1], backend="cpu").loss(X, np.array(["1"] * len(X), dtype=object))
