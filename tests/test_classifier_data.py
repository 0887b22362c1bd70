"""MLPClassifier on bp_gpu.data data sets (fit, partial_fit, predict, score, early stopping), the
standardize parameter, and features too large for float32. Small files made in tmp_path."""

import threading

import numpy as np
import pytest

import bp_gpu
import bp_gpu.data as bd
from bp_gpu import MLPClassifier
from bp_gpu.data.batches import THREAD_NAME

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def _problem(rng, n=600, k=2):
    X = rng.normal(size=(n, 4)) * [1.0, 50.0, 0.02, 3.0] + [0.0, 400.0, 0.0, -7.0]
    score = X[:, 0] + (X[:, 1] - 400) / 50 - (X[:, 3] + 7) / 3
    if k == 2:
        y = np.where(score > 0, "yes", "no")
    else:
        y = np.digitize(score, np.quantile(score, np.linspace(0, 1, k + 1)[1:-1])) * 10 + 5  # 5, 15, 25, ...
    return X, y


def _parquet(path, X, y, row_group=100):
    cols = {f"x{k}": X[:, k] for k in range(X.shape[1])}
    pq.write_table(pa.table({**cols, "label": y}), path, row_group_size=row_group)
    return bd.open(path, target="label")


KW = dict(hidden_layer_sizes=(6,), batch_size=32, epochs=3, learning_rate=0.02, random_state=4, backend="cpu",
          dtype="float64")


def _same_model(a, b, rtol=0.0):
    for (Wa, ba), (Wb, bb) in zip(a.net_.get_weights(), b.net_.get_weights()):
        np.testing.assert_allclose(Wa, Wb, rtol=rtol, atol=0)
        np.testing.assert_allclose(ba, bb, rtol=rtol, atol=0)
    assert a.loss_curve_ == b.loss_curve_ if rtol == 0 else np.allclose(a.loss_curve_, b.loss_curve_, rtol=rtol)


NO_NAMES = "ignore:X does not have valid feature names:UserWarning"  # a file's names, then arrays


@pytest.mark.filterwarnings(NO_NAMES)
def test_fit_on_a_parquet_file_trains_reproducibly_and_predicts_like_the_arrays(tmp_path, rng):
    X, y = _problem(rng)
    ds = _parquet(tmp_path / "d.parquet", X, y)
    a = MLPClassifier(**KW, standardize=True).fit(ds)
    # the reader read the epoch after the last one ahead; fit stopped it on its way out
    assert [t for t in threading.enumerate() if t.name == THREAD_NAME] == []
    b = MLPClassifier(**KW, standardize=True).fit(bd.open(tmp_path / "d.parquet", target="label"))
    _same_model(a, b)  # the same seed gives the same model, run to run
    assert list(a.classes_) == ["no", "yes"] and a.n_features_in_ == 4 and a.n_iter_ == 3
    assert a.score(ds) > 0.9
    np.testing.assert_array_equal(a.predict_proba(ds), a.predict_proba(X))
    np.testing.assert_array_equal(a.predict(ds), a.predict(X))
    assert a.score(ds) == a.score(X, y)
    assert list(a.feature_names_in_) == ["x0", "x1", "x2", "x3"]  # the file's names, as for a DataFrame
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        a.predict(X)
    reordered = tmp_path / "r.parquet"
    pq.write_table(pa.table({"x1": X[:, 1], "x0": X[:, 0], "x2": X[:, 2], "x3": X[:, 3], "label": y}), reordered)
    with pytest.raises(ValueError, match=r"the feature columns \['x1', 'x0', 'x2', 'x3'\] are not those"):
        a.predict(bd.open(reordered, target="label"))
    ordered = bd.open(reordered, target="label", features=list(a.feature_names_in_))
    np.testing.assert_array_equal(a.predict_proba(ordered), a.predict_proba(ds))
    np.testing.assert_allclose(a.feature_mean_, X.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(a.feature_std_, X.std(axis=0), rtol=1e-12)


def test_multiclass_and_multilabel_data_sets(rng, tmp_path):
    X, y = _problem(rng, k=4)
    clf = MLPClassifier(**{**KW, "epochs": 10}).fit(bd.from_arrays(X, y, chunk_rows=64))
    assert list(clf.classes_) == [5, 15, 25, 35] and clf.n_outputs_ == 4
    Y = np.column_stack([X[:, 0] > 0, X[:, 3] > -7, X[:, 1] > 400]).astype(int)
    ml = MLPClassifier(**KW).fit(bd.from_arrays(X, Y, chunk_rows=64))
    assert ml._label_kind == "multilabel" and list(ml.classes_) == [0, 1, 2]
    assert ml.predict(bd.from_arrays(X)).shape == (len(X), 3)
    assert 0 <= ml.score(bd.from_arrays(X, Y)) <= 1
    with pytest.raises(ValueError, match="multi-label indicator matrix and must hold only 0 and 1"):
        MLPClassifier(**KW).fit(bd.from_arrays(X, Y * 2))


def test_partial_fit_on_a_data_set_continues_exactly(tmp_path, rng):
    X, y = _problem(rng)
    ds = _parquet(tmp_path / "d.parquet", X, y)
    full = MLPClassifier(**{**KW, "epochs": 5}).fit(ds)
    part = MLPClassifier(**{**KW, "epochs": 2}).fit(ds).partial_fit(ds, epochs=3)
    _same_model(full, part)
    first = MLPClassifier(**KW).partial_fit(ds, epochs=2)  # no classes needed: the data set's labels
    assert list(first.classes_) == ["no", "yes"] and first.n_iter_ == 2
    with pytest.raises(ValueError, match=r"not among the classes \['no', 'yes'\]: \['maybe'\]"):
        first.partial_fit(bd.from_arrays(X[:5], np.array(["no", "yes", "maybe", "no", "no"])))
    with pytest.raises(ValueError, match="are numbers .* but the model's classes are text"):
        first.partial_fit(bd.from_arrays(X[:4], np.array([0, 1, 0, 1])))
    with pytest.raises(TypeError, match="do not pass y"):
        first.partial_fit(ds, y)
    with pytest.raises(ValueError, match="has 3 feature columns, but MLPClassifier is expecting 4"):
        first.partial_fit(bd.from_arrays(X[:, :3], y))


def test_early_stopping_holds_out_whole_chunks(tmp_path, rng):
    X, y = _problem(rng)
    ds = _parquet(tmp_path / "d.parquet", X, y, row_group=60)  # 10 chunks: 1 held out
    seen = []

    class Rows:
        def on_batch(self, n):
            seen.append(n)

    clf = MLPClassifier(**{**KW, "epochs": 30}, standardize=True, early_stopping=True, n_iter_no_change=2)
    clf.fit(ds, monitor=Rows())
    assert sum(seen) == clf.n_iter_ * 540 and 1 <= len(clf.validation_scores_) == clf.n_iter_ < 30
    assert clf.best_validation_score_ == max(clf.validation_scores_) > 0.8


def test_a_bad_row_surfaces_as_the_readers_error_and_leaves_the_model_as_it_was(tmp_path, rng):
    X, y = _problem(rng)
    clf = MLPClassifier(**KW).fit(X, y)
    before = (clf.net_.get_weights(), list(clf.loss_curve_), clf._optimizer.state_arrays())
    X[431, 2] = np.nan
    ds = _parquet(tmp_path / "bad.parquet", X, y)
    with pytest.raises(bd.DataError, match=r"bad\.parquet: row 431 \(row group 4\), column 'x2': NaN"):
        clf.fit(ds)
    with pytest.raises(bd.DataError, match="row 431"):
        clf.partial_fit(ds, epochs=2)
    after = (clf.net_.get_weights(), list(clf.loss_curve_), clf._optimizer.state_arrays())
    for (W0, b0), (W1, b1) in zip(before[0], after[0]):
        np.testing.assert_array_equal(W0, W1)
        np.testing.assert_array_equal(b0, b1)
    assert before[1] == after[1] and all(np.array_equal(u, v) for u, v in zip(before[2], after[2]))


def test_data_set_argument_errors(rng):
    X, y = _problem(rng, n=50)
    with pytest.raises(TypeError, match=r"fit\(dataset\) takes the labels from the data set's target column"):
        MLPClassifier(**KW).fit(bd.from_arrays(X, y), y)
    with pytest.raises(ValueError, match="no target column"):
        MLPClassifier(**KW).fit(bd.from_arrays(X))
    with pytest.raises(ValueError, match="the data set has no rows"):
        MLPClassifier(**KW).fit(bd.from_arrays(X[:0], y[:0]))
    with pytest.raises(ValueError, match="only one class"):
        MLPClassifier(**KW).fit(bd.from_arrays(X, np.zeros(50)))
    clf = MLPClassifier(**KW).fit(X, y)
    with pytest.raises(ValueError, match="no target column to score against"):
        clf.score(bd.from_arrays(X))
    with pytest.raises(ValueError, match="are numbers .* but the model's classes are text"):
        clf.score(bd.from_arrays(X, np.zeros(50)))


# -- standardize -------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_standardize_trains_as_on_data_standardised_beforehand(rng, dtype):
    """Standardising the data (not folding it into the first layer) leaves the optimizer's steps
    those on standardised data: the same weights, bit for bit."""
    X, y = _problem(rng)
    kw = {**KW, "dtype": dtype}
    clf = MLPClassifier(**kw, standardize=True).fit(X, y)
    mean, std = clf.feature_mean_, clf.feature_std_
    np.testing.assert_allclose(mean, X.astype(dtype).astype(np.float64).mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(std, X.astype(dtype).astype(np.float64).std(axis=0), rtol=1e-10)
    Xs = (X.astype(dtype) - mean.astype(dtype)) / std.astype(dtype)
    plain = MLPClassifier(**kw).fit(Xs, y)
    _same_model(clf, plain)
    np.testing.assert_array_equal(clf.predict_proba(X), plain.predict_proba(Xs))
    assert clf.score(X, y) > 0.9 > MLPClassifier(**kw).fit(X, y).score(X, y)  # raw features train poorly


def test_standardize_is_saved_kept_by_partial_fit_and_fixed(tmp_path, rng):
    X, y = _problem(rng)
    clf = MLPClassifier(**KW, standardize=True).fit(X, y)
    clf.save(tmp_path / "m.npz")
    back = bp_gpu.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(back.feature_mean_, clf.feature_mean_)
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))
    with np.load(tmp_path / "m.npz") as f:
        assert f["feature_mean"].dtype == np.float64 and f["feature_std"].shape == (4,)
    mean = clf.feature_mean_.copy()
    clf.partial_fit(X[:100] + 1000, y[:100])  # other data: the statistics of the first fit stay
    np.testing.assert_array_equal(clf.feature_mean_, mean)
    clf.set_params(standardize=False)
    with pytest.raises(ValueError, match="standardize is False but the model was fitted with True"):
        clf.partial_fit(X, y)
    plain = MLPClassifier(**KW).fit(X, y)
    assert plain.feature_mean_ is None and plain.feature_std_ is None
    plain.save(tmp_path / "p.npz")
    with np.load(tmp_path / "p.npz") as f:
        assert "feature_mean" not in f.files


# -- features too large for float32 ------------------------------------------------------------------
def test_features_that_overflow_float32_are_refused_before_training(rng):
    X, y = _problem(rng, n=80)
    X[12, 3] = 1e300
    clf = MLPClassifier(**{**KW, "dtype": "float32"})
    with pytest.raises(ValueError, match=r"X\[12, 3\] = 1e\+300 does not fit in float32; use dtype='float64' or "
                                         "scale your features"):
        clf.fit(X, y)
    assert not hasattr(clf, "net_")
    with pytest.raises(bd.DataError, match=r"X\[12, 3\]: 1e\+300 does not fit in float32; use dtype='float64'"):
        clf.fit(bd.from_arrays(X, y))
    with pytest.raises(bd.DataError, match=r"X\[12, 3\]: 1e\+300 does not fit in float32"):  # the stats pass
        MLPClassifier(**{**KW, "dtype": "float32"}, standardize=True).fit(bd.from_arrays(X, y))
    assert not hasattr(clf, "net_")
    MLPClassifier(**KW).fit(X / 1e300 * 1e300, y)  # float64 holds it
    fitted = MLPClassifier(**{**KW, "dtype": "float32"}).fit(X[:10] * 0, y[:10])
    with pytest.raises(ValueError, match="does not fit in float32"):
        fitted.predict(X)


@pytest.mark.filterwarnings(NO_NAMES)
@pytest.mark.parametrize("early", [False, True])
def test_arrays_from_arrays_and_parquet_train_through_one_pipeline(tmp_path, rng, early):
    """One training path whatever the input: a Parquet file and ``from_arrays`` with the same chunks
    read the same batches (the order bp_gpu.data.batches documents) and train to the same weights bit
    for bit, standardisation and early stopping's held-out chunks included; the arrays themselves
    (another documented order, a permutation of rows) give the same model as the data sets wherever
    the order cannot matter: one batch per epoch, whose rows are summed (to rounding)."""
    X, y = _problem(rng, n=300)
    kw = dict(KW, standardize=True, early_stopping=early, n_iter_no_change=50, epochs=4)
    pq_model = MLPClassifier(**kw).fit(_parquet(tmp_path / "d.parquet", X, y, row_group=60))
    mem_model = MLPClassifier(**kw).fit(bd.from_arrays(X, y, chunk_rows=60))
    for (Wa, ba), (Wb, bb) in zip(pq_model.net_.get_weights(), mem_model.net_.get_weights()):
        assert (Wa == Wb).all() and (ba == bb).all()
    assert pq_model.loss_curve_ == mem_model.loss_curve_
    assert getattr(pq_model, "validation_scores_", None) == getattr(mem_model, "validation_scores_", None)

    whole = dict(KW, standardize=True, batch_size=len(X), epochs=4)
    arrays = MLPClassifier(**whole).fit(X, y)
    for data in (bd.from_arrays(X, y, chunk_rows=60), _parquet(tmp_path / "d.parquet", X, y, row_group=60)):
        _same_model(MLPClassifier(**whole).fit(data), arrays, rtol=1e-11)


def test_early_stopping_on_a_data_set_of_one_chunk_holds_out_rows(tmp_path, rng):
    """A small file is one chunk: early stopping reads it and holds out a stratified sample of its
    rows, as for arrays, and trains the model fit gives on its arrays (a CSV written by pandas, too)."""
    X, y = _problem(rng, n=200)
    kw = dict(KW, early_stopping=True, validation_fraction=0.2, n_iter_no_change=2, epochs=30)
    arrays = MLPClassifier(**kw).fit(X, y)
    one_chunk = bd.from_arrays(X, y)
    assert one_chunk.n_chunks == 1
    _same_model(MLPClassifier(**kw).fit(one_chunk), arrays)
    assert MLPClassifier(**kw).fit(one_chunk).validation_scores_ == arrays.validation_scores_
    pd = pytest.importorskip("pandas")
    pd.DataFrame({**{f"x{k}": X[:, k] for k in range(4)}, "label": y}).to_csv(tmp_path / "d.csv", index=False)
    csv = bd.open(tmp_path / "d.csv", target="label")
    assert csv.n_chunks == 1
    from_csv = MLPClassifier(**kw).fit(csv)
    np.testing.assert_allclose(from_csv.net_.get_weights()[0][0], arrays.net_.get_weights()[0][0], rtol=1e-12)
