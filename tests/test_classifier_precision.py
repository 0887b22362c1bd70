"""MLPClassifier(precision=...): the estimator, its model file and ONNX export, and bp-gpu train's
--precision, on the CPU backend's exact emulation of the GPU's roundings (bp_gpu.precision)."""

import numpy as np
import pytest

import bp_gpu
from bp_gpu import MLPClassifier

sklearn = pytest.importorskip("sklearn")

KW = dict(hidden_layer_sizes=(16,), batch_size=32, learning_rate=0.01, backend="cpu", random_state=0, standardize=True)


def _weights(clf):
    return [a for pair in clf.net_.get_weights() for a in pair]


def test_precision_is_a_parameter_checked_with_dtype():
    from sklearn.base import clone

    clf = MLPClassifier(precision="bf16")
    assert clf.get_params()["precision"] == "bf16" and clone(clf).precision == "bf16"
    X, y = np.zeros((4, 2)), np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="precision must be one of 'highest', 'tf32', 'bf16'; got 'fp16'"):
        MLPClassifier(precision="fp16").fit(X, y)
    with pytest.raises(ValueError, match="precision='tf32' needs dtype='float32'"):
        MLPClassifier(precision="tf32", dtype="float64").fit(X, y)


@pytest.mark.parametrize("name", ["breast_cancer", "digits"])
def test_bf16_trains_as_well_as_highest(name):
    """Training quality: bf16 test accuracy within 0.02 of highest (and tf32's)."""
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    data = getattr(datasets, f"load_{name}")()
    Xtr, Xte, ytr, yte = train_test_split(data.data, data.target, test_size=0.3, random_state=0, stratify=data.target)
    acc = {p: MLPClassifier(**KW, epochs=25, precision=p).fit(Xtr, ytr).score(Xte, yte)
           for p in ("highest", "tf32", "bf16")}
    assert acc["highest"] > 0.9, acc
    assert abs(acc["bf16"] - acc["highest"]) <= 0.02 and abs(acc["tf32"] - acc["highest"]) <= 0.02, acc


def test_a_saved_bf16_model_holds_float32_weights_and_resumes_bit_for_bit(tmp_path, rng):
    X = rng.normal(size=(150, 6))
    y = (X[:, 0] - X[:, 3] > 0).astype(int)
    whole = MLPClassifier(**KW, epochs=4, precision="bf16", optimizer="lamb").fit(X, y)
    half = MLPClassifier(**KW, epochs=2, precision="bf16", optimizer="lamb").fit(X, y)
    half.save(tmp_path / "m.npz")
    stored = np.load(tmp_path / "m.npz")
    assert stored["W_1"].dtype == np.float32 and (stored["W_1"] == half.net_.get_weights()[0][0]).all()
    loaded = bp_gpu.load(tmp_path / "m.npz")
    assert loaded.precision == "bf16" and loaded.net_.precision == "bf16"
    np.testing.assert_array_equal(loaded.predict_proba(X), half.predict_proba(X))
    loaded.partial_fit(X, y, epochs=2)
    assert loaded.loss_curve_ == whole.loss_curve_
    for a, b in zip(_weights(loaded), _weights(whole)):
        assert (a == b).all()
    with pytest.raises(ValueError, match="precision is 'highest' but the model was fitted with 'bf16'"):
        loaded.set_params(precision="highest").partial_fit(X, y)


def test_onnx_export_of_a_bf16_model_runs_its_float32_weights(tmp_path, rng):
    """The export holds the float32 master weights: it computes what a "highest" network with those
    weights computes, which differs from the bf16 model's own outputs by the operands' rounding."""
    ort = pytest.importorskip("onnxruntime")
    X = rng.normal(size=(80, 5)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    bf16 = MLPClassifier(**KW, epochs=3, precision="bf16").fit(X, y)
    bf16.to_onnx(tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    onnx_proba = sess.run(["probabilities"], {"X": X})[0]
    twin = bp_gpu.MLP(bf16.net_.layer_sizes, backend="cpu", seed=0)  # "highest", the same weights
    twin.set_weights(bf16.net_.get_weights())
    raw = twin.predict_proba((X - bf16.feature_mean_.astype(np.float32)) / bf16.feature_std_.astype(np.float32))
    np.testing.assert_allclose(onnx_proba[:, 1], raw[:, 0], atol=1e-6)
    np.testing.assert_allclose(onnx_proba, bf16.predict_proba(X), atol=2e-2)


def test_cli_trains_with_precision_and_resume_keeps_it(tmp_path, rng):
    from bp_gpu.cli import main

    X = rng.normal(size=(120, 3))
    np.save(tmp_path / "d.npy", np.column_stack([X, X[:, 0] > 0]))
    common = ["train", str(tmp_path / "d.npy"), "--target", "3", "--hidden", "4", "--backend", "cpu", "--quiet"]
    assert main([*common, "--epochs", "2", "--precision", "tf32", "--out", str(tmp_path / "m.npz")]) == 0
    assert bp_gpu.load(tmp_path / "m.npz").net_.precision == "tf32"
    assert main([*common, "--epochs", "3", "--resume", str(tmp_path / "m.npz"), "--precision", "bf16",
                 "--out", str(tmp_path / "r.npz")]) == 2
    assert main([*common, "--epochs", "3", "--resume", str(tmp_path / "m.npz"), "--out", str(tmp_path / "r.npz")]) == 0
    assert bp_gpu.load(tmp_path / "r.npz").precision == "tf32"
