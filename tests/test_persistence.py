"""save/load: exact round trips, exact resumption, atomic writes, and rejection of bad files."""

import json
import os
import zipfile

import numpy as np
import pytest

import bp_gpu
from bp_gpu import MLPClassifier
from bp_gpu.persistence import FORMAT_NAME, ModelFileError, to_arrays

KW = dict(hidden_layer_sizes=(6, 4), batch_size=16, learning_rate=0.05, backend="cpu", random_state=0)


def _data(rng, k=2, n=53):
    X = rng.normal(size=(n, 5))
    y = X[:, :k].argmax(axis=1) if k > 2 else (X[:, 0] > 0).astype(int)
    return X, y


def _weights(clf):
    return [a for Wb in clf.net_.get_weights() for a in Wb]


def _assert_same(a, b):
    for x, y in zip(_weights(a), _weights(b)):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)
    for x, y in zip(a._optimizer.state_arrays(), b._optimizer.state_arrays()):
        np.testing.assert_array_equal(x, y)
    assert a._optimizer.step_count == b._optimizer.step_count
    assert a.loss_curve_ == b.loss_curve_ and a.n_iter_ == b.n_iter_
    np.testing.assert_array_equal(a.classes_, b.classes_)
    assert a.get_params() == b.get_params()


@pytest.fixture
def fitted(rng):
    X, y = _data(rng)
    return MLPClassifier(epochs=3, **KW).fit(X, y), X, y


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_roundtrip_is_exact(tmp_path, rng, optimizer, dtype):
    X, y = _data(rng, k=3)
    labels = np.array(["a", "bb", "c"])[y]
    clf = MLPClassifier(epochs=2, optimizer=optimizer, dtype=dtype, **KW).fit(X, labels)
    clf.save(tmp_path / "m.npz")
    back = bp_gpu.load(tmp_path / "m.npz")
    _assert_same(clf, back)
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))
    assert list(back.predict(X)) == list(clf.predict(X))


def test_roundtrip_multilabel_and_early_stopping(tmp_path, rng):
    X = rng.normal(size=(60, 5))
    Y = (X[:, :3] > 0).astype(int)
    clf = MLPClassifier(epochs=3, early_stopping=True, **KW).fit(X, Y)
    clf.save(tmp_path / "m.npz")
    back = bp_gpu.load(tmp_path / "m.npz")
    _assert_same(clf, back)
    assert back.validation_scores_ == clf.validation_scores_
    assert back.best_validation_score_ == clf.best_validation_score_
    np.testing.assert_array_equal(back.predict(X), clf.predict(X))


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_resume_after_load_continues_exactly(tmp_path, rng, optimizer):
    X, y = _data(rng, k=3)
    straight = MLPClassifier(epochs=5, optimizer=optimizer, **KW).fit(X, y)
    MLPClassifier(epochs=3, optimizer=optimizer, **KW).fit(X, y).save(tmp_path / "ckpt.npz")
    resumed = bp_gpu.load(tmp_path / "ckpt.npz").partial_fit(X, y, epochs=2)
    _assert_same(straight, resumed.set_params(epochs=5))


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path, fitted):
    clf, X, _ = fitted
    path = tmp_path / "m.npz"
    clf.save(path)
    first = path.read_bytes()
    clf.classes_ = np.array([1, "x"], dtype=object)  # cannot be stored without pickle
    with pytest.raises(ValueError, match="mix Python types"):
        clf.save(path)
    assert path.read_bytes() == first  # the old file is intact
    assert os.listdir(tmp_path) == ["m.npz"]
    assert oct(path.stat().st_mode & 0o777) == "0o644"


def test_saving_unfitted_model_fails():
    from bp_gpu.classifier import NotFittedError

    with pytest.raises(NotFittedError):
        MLPClassifier().save("never.npz")


def test_documented_keys(tmp_path, fitted):
    clf = fitted[0]
    clf.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz", allow_pickle=False) as f:
        keys = set(f.files)
        meta = json.loads(str(f["meta"]))
        assert str(f["format"]) == FORMAT_NAME and int(f["format_version"]) == 2
    assert keys == {
        "format",
        "format_version",
        "meta",
        "classes",
        "W_1",
        "b_1",
        "W_2",
        "b_2",
        "W_3",
        "b_3",
        "optimizer_m",
        "optimizer_v",
    }
    assert (
        meta["layer_sizes"] == [5, 6, 4, 1]
        and meta["positive_class"] == 1
        and meta["dtype"] == "float32"
    )
    assert meta["label_kind"] == "binary" and meta["optimizer"]["kind"] == "adam"
    assert meta["optimizer"]["schedule"] == {"kind": "constant", "peak": clf.learning_rate, "warmup_steps": 0,
                                             "total_steps": 0, "final": 0.0}
    assert meta["hyperparameters"]["hidden_layer_sizes"] == [6, 4]


def test_version_1_files_still_load(tmp_path, fitted, rng):
    """bp_gpu 0.1 wrote version 1: a float learning rate, fewer hyperparameters."""
    clf = fitted[0]
    clf.save(tmp_path / "m.npz")

    def to_v1(a):
        meta = json.loads(str(a["meta"]))
        o = meta["optimizer"]
        o["learning_rate"] = o.pop("schedule")["peak"]
        for k in ("lr_schedule", "warmup_epochs", "final_learning_rate", "random_state"):
            del meta["hyperparameters"][k]
        meta["hyperparameters"]["seed"] = 0  # version 1 named random_state `seed`
        a.update(format_version=np.array(1), meta=np.array(json.dumps(meta)))

    old = bp_gpu.load(_rewrite(tmp_path / "m.npz", tmp_path / "v1.npz", to_v1))
    assert old.lr_schedule == "constant" and old._optimizer.learning_rate == clf.learning_rate
    assert old.random_state == 0 and old.seed is None
    X = rng.normal(size=(20, 5))
    np.testing.assert_array_equal(old.predict_proba(X), clf.predict_proba(X))


def test_random_state_is_stored_as_an_int_or_none(tmp_path, rng):
    X, y = _data(rng)
    kw = {k: v for k, v in KW.items() if k != "random_state"}
    for source, stored in ((5, 5), (np.random.default_rng(5), None), (np.random.RandomState(5), None), (None, None)):
        clf = MLPClassifier(epochs=1, random_state=source, **kw).fit(X, y)
        clf.save(tmp_path / "m.npz")
        with np.load(tmp_path / "m.npz", allow_pickle=False) as f:
            assert json.loads(str(f["meta"]))["hyperparameters"]["random_state"] == stored
        back = bp_gpu.load(tmp_path / "m.npz")
        assert back.random_state == stored
        np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))


def test_feature_names_are_saved_and_restored(tmp_path, rng):
    import pickle

    pd = pytest.importorskip("pandas")
    X, y = _data(rng)
    df = pd.DataFrame(X, columns=["age", "height", "weight", "x_4", "z"])
    clf = MLPClassifier(epochs=1, **KW).fit(df, y)
    clf.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz", allow_pickle=False) as f:
        assert json.loads(str(f["meta"]))["feature_names"] == ["age", "height", "weight", "x_4", "z"]
    for back in (bp_gpu.load(tmp_path / "m.npz"), pickle.loads(pickle.dumps(clf))):
        assert back.feature_names_in_.dtype == object
        np.testing.assert_array_equal(back.feature_names_in_, clf.feature_names_in_)
        with pytest.raises(ValueError, match="Feature names must be in the same order"):
            back.predict(df[df.columns[::-1]])
    MLPClassifier(epochs=1, **KW).fit(X, y).save(tmp_path / "plain.npz")
    assert not hasattr(bp_gpu.load(tmp_path / "plain.npz"), "feature_names_in_")


# -- bad files ----------------------------------------------------------------------------------------
def _rewrite(path, out, change):
    """Copy the model's arrays with `change(dict)` applied, written as a plain npz."""
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    change(arrays)
    np.savez(out, **arrays)
    return out


@pytest.fixture
def saved(tmp_path, fitted):
    fitted[0].save(tmp_path / "m.npz")
    return tmp_path / "m.npz"


def test_truncated_file(tmp_path, saved):
    data = saved.read_bytes()
    for cut in (len(data) // 2, 100, 0):
        bad = tmp_path / f"cut{cut}.npz"
        bad.write_bytes(data[:cut])
        with pytest.raises(ModelFileError, match="truncated/corrupt"):
            bp_gpu.load(bad)


def test_flipped_byte_in_weights(tmp_path, saved):
    data = bytearray(saved.read_bytes())
    with zipfile.ZipFile(saved) as z:
        info = z.getinfo("W_1.npy")
    pos = info.header_offset + 30 + len(info.filename) + info.file_size - 3  # inside the array data
    data[pos] ^= 0xFF
    bad = tmp_path / "flip.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="CRC|corrupt"):
        bp_gpu.load(bad)


def test_foreign_files(tmp_path):
    np.savez(tmp_path / "other.npz", X=np.zeros((3, 2)))
    with pytest.raises(ModelFileError, match="the array 'format' is missing"):
        bp_gpu.load(tmp_path / "other.npz")
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(ModelFileError, match="single .npy array"):
        bp_gpu.load(tmp_path / "one.npy")
    (tmp_path / "text.npz").write_text("hello, I am not a model\n")
    with pytest.raises(ModelFileError, match="not a bp_gpu model file"):
        bp_gpu.load(tmp_path / "text.npz")
    with pytest.raises(FileNotFoundError):
        bp_gpu.load(tmp_path / "missing.npz")


def test_pickled_content_is_refused_without_running_it(tmp_path):
    # An object array needs pickle to load; with allow_pickle=False it is never unpickled.
    np.savez(
        tmp_path / "evil.npz", format=np.array(FORMAT_NAME), meta=np.array([{"x": 1}], dtype=object)
    )
    with pytest.raises(ModelFileError, match="not a bp_gpu model file"):
        bp_gpu.load(tmp_path / "evil.npz")


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda a: a.update(format=np.array("something.else")), "not a bp_gpu model file"),
        (
            lambda a: a.update(format_version=np.array(3)),
            "format version 3 is not supported.*newer",
        ),
        (lambda a: a.pop("W_2"), "the array 'W_2' is missing"),
        (
            lambda a: a.update(W_2=a["W_2"][:, :-1]),
            r"weights\[1\]\[0\] \(W\) must have shape \(4, 6\)",
        ),
        (lambda a: a.update(W_1=a["W_1"].astype(np.float64)), "W_1/b_1 have dtype float64/float32"),
        (lambda a: a["b_3"].__setitem__(0, np.nan), r"weights\[2\]\[1\]\[0\] is NaN"),
        (lambda a: a.update(meta=np.array("{not json")), "the 'meta' record is malformed"),
        (
            lambda a: a.update(optimizer_v=a["optimizer_v"][:5]),
            r"optimizer state v has shape \(5,\)",
        ),
        (
            lambda a: a.update(classes=np.array([0, 1, 2])),
            r"classes has shape \(3,\) but a binary model",
        ),
        (
            lambda a: a.update(
                meta=np.array(json.dumps({**json.loads(str(a["meta"])), "label_kind": "ranking"}))
            ),
            "label_kind 'ranking'",
        ),
        (
            lambda a: a.update(
                meta=np.array(json.dumps({**json.loads(str(a["meta"])), "feature_names": ["a", "b"]}))
            ),
            "feature_names has 2 names but the model has 5 inputs",
        ),
    ],
)
def test_damaged_contents_are_named(tmp_path, saved, change, match):
    bad = _rewrite(saved, tmp_path / "bad.npz", change)
    with pytest.raises(ModelFileError, match=match):
        bp_gpu.load(bad)


def test_backend_override(tmp_path, saved):
    clf = bp_gpu.load(saved, backend="cpu")
    assert clf.net_.backend == "cpu" and clf.backend == "cpu"
    with pytest.raises(ModelFileError, match="backend must be one of"):
        bp_gpu.load(saved, backend="tpu")


def test_to_arrays_has_no_object_arrays(fitted):
    clf = fitted[0]
    assert all(a.dtype.kind != "O" for a in to_arrays(clf.get_params(), clf._trained).values())
