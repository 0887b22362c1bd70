"""bp_gpu.onnx_export.export_onnx run by ONNX Runtime on the CPU, against a NumPy transcription of
MLPClassifier.predict_proba / predict on the same weights."""

import os

import numpy as np
import pytest

import bp_gpu
from bp_gpu.onnx_export import export_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _predict_proba(net, X, kind, mean=None, std=None):
    """MLPClassifier.predict_proba on the network ``net``: standardise, y = sigma(a_out) in the
    network's dtype, p(t = 1 | x) = y or 1 - y (positive_class), then the label kind's shape."""
    if mean is not None:
        X = (X.astype(np.float64) - mean) / std
    y = net.predict_proba(X.astype(net.dtype)).astype(np.float64)
    P = y if net.positive_class == 1 else 1.0 - y
    if kind == "binary":
        return np.hstack([1.0 - P, P])
    if kind == "multiclass":
        s = P.sum(axis=1, keepdims=True)
        return np.where(s > 0, P / np.where(s > 0, s, 1.0), 1.0 / P.shape[1])
    return P


def _predict(P, kind, classes):
    return (P > 0.5).astype(np.int64) if kind == "multilabel" else classes[P.argmax(axis=1)]


CASES = {
    "binary": (1, np.array(["no", "yes"])),
    "multiclass": (4, np.array([3, 5, 7, 11])),
    "multilabel": (3, np.arange(3)),
}


@pytest.mark.parametrize("kind", list(CASES))
@pytest.mark.parametrize("positive_class", [0, 1])
@pytest.mark.parametrize("standardise", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_onnx_runtime_matches_predict_proba(tmp_path, kind, positive_class, standardise, dtype):
    n_out, classes = CASES[kind]
    net = bp_gpu.MLP([6, 9, 5, n_out], positive_class=positive_class, dtype=dtype, backend="cpu", seed=3)
    rng = np.random.default_rng(4)
    # larger weights than the initialisation, so the probabilities spread over (0, 1)
    net.set_weights([(W * 4, rng.normal(size=b.shape).astype(dtype)) for W, b in net.get_weights()])
    mean = rng.normal(size=6) * 100 if standardise else None
    std = rng.uniform(0.1, 10, size=6) if standardise else None
    X = rng.normal(size=(300, 6)) * (1 if std is None else std) + (0 if mean is None else mean)
    X = X.astype(np.float32)
    path = tmp_path / "m.onnx"
    export_onnx(net.get_weights(), positive_class=positive_class, label_kind=kind, classes=classes,
                mean=mean, std=std, path=path)
    onnx.checker.check_model(onnx.load(path), full_check=True)
    label, proba = _session(path).run(["label", "probabilities"], {"X": X})
    want = _predict_proba(net, X, kind, mean, std)
    assert proba.shape == want.shape and proba.dtype == np.dtype(dtype)
    np.testing.assert_allclose(proba, want, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(label, _predict(want, kind, classes))
    assert 0.05 < want[:, -1].mean() < 0.95  # the case is not degenerate


def test_the_model_declares_its_inputs_and_outputs(tmp_path):
    net = bp_gpu.MLP([3, 2], dtype="float32", seed=0)
    export_onnx(net.get_weights(), positive_class=1, label_kind="multiclass", classes=[0.5, 1.5], path=tmp_path / "m")
    m = onnx.load(tmp_path / "m")
    (x,) = m.graph.input
    assert x.name == "X" and x.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_param or d.dim_value for d in x.type.tensor_type.shape.dim] == ["N", 3]
    assert [o.name for o in m.graph.output] == ["label", "probabilities"]
    assert m.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE  # float classes
    ops = {n.op_type for n in m.graph.node}
    assert ops <= {"Gemm", "Sigmoid", "Abs", "Neg", "Exp", "GreaterOrEqual", "Where", "Add", "Div", "ReduceSum",
                   "Greater", "ArgMax", "Gather", "Sub", "Concat", "Cast", "Identity"}
    label, _ = _session(tmp_path / "m").run(None, {"X": np.zeros((2, 3), np.float32)})
    assert label.dtype == np.float64 and set(label) <= {0.5, 1.5}


def test_small_sigmoids_are_normalised_not_flushed_and_underflow_gives_a_uniform_row(tmp_path):
    # All four output logits near -30: ONNX Runtime's Sigmoid node would return 0 for each (a
    # uniform row); predict_proba normalises exp(-30 + k) into a real distribution.
    net = bp_gpu.MLP([2, 4], dtype="float32", backend="cpu", seed=0)
    W = np.zeros((4, 2), np.float32)
    W[:, 0] = 1.0
    b = np.array([-30, -31, -33, -36], np.float32)
    net.set_weights([(W, b)])
    X = np.array([[0.0, 0.0], [-2.0, 0.0], [-1000.0, 0.0]], np.float32)
    export_onnx(net.get_weights(), positive_class=1, label_kind="multiclass", classes=["a", "b", "c", "d"],
                path=tmp_path / "m.onnx")
    label, proba = _session(tmp_path / "m.onnx").run(None, {"X": X})
    want = _predict_proba(net, X, "multiclass")
    np.testing.assert_allclose(proba, want, atol=1e-5)
    assert proba[0, 0] > 0.6 and list(label[:2]) == ["a", "a"]
    np.testing.assert_allclose(proba[2], 0.25)  # every sigmoid is 0 (or equal): uniform


def test_positive_class_zero_is_the_mirror_image(tmp_path):
    rng = np.random.default_rng(0)
    layers = [(rng.normal(size=(4, 3)), rng.normal(size=4)), (rng.normal(size=(1, 4)), rng.normal(size=1))]
    mirrored = layers[:-1] + [(-layers[-1][0], -layers[-1][1])]
    X = rng.normal(size=(20, 3)).astype(np.float32)
    out = []
    for pc, ls in ((1, layers), (0, mirrored)):
        export_onnx(ls, positive_class=pc, label_kind="binary", classes=[0, 1], path=tmp_path / f"{pc}.onnx")
        out.append(_session(tmp_path / f"{pc}.onnx").run(None, {"X": X}))
    np.testing.assert_array_equal(out[0][0], out[1][0])
    np.testing.assert_allclose(out[0][1], out[1][1], rtol=0, atol=1e-15)


def test_bad_arguments_are_refused(tmp_path):
    W = np.ones((1, 2))
    ok = dict(positive_class=1, label_kind="binary", classes=[0, 1], path=tmp_path / "m.onnx")
    for change, message in [
        (dict(label_kind="ordinal"), "label_kind must be one of"),
        (dict(positive_class=True), "positive_class must be 0 or 1"),
        (dict(classes=[0, 1, 2]), "a binary model has 2 classes"),
        (dict(label_kind="multiclass", classes=[0, 1, 2]), "the last layer has 1 outputs"),
        (dict(mean=np.zeros(2)), "both mean and std"),
        (dict(mean=np.zeros(3), std=np.ones(3)), r"shape \(2,\)"),
        (dict(mean=np.zeros(2), std=np.array([1.0, 0.0])), "std finite and > 0"),
    ]:
        with pytest.raises(ValueError, match=message):
            export_onnx([(W, np.zeros(1))], **{**ok, **change})
    with pytest.raises(ValueError, match="layer 2: W has 3 inputs but layer 1 has 1 outputs"):
        export_onnx([(W, np.zeros(1)), (np.ones((1, 3)), np.zeros(1))], **ok)
    with pytest.raises(ValueError, match="finite"):
        export_onnx([(W * np.nan, np.zeros(1))], **ok)
    assert not os.path.exists(tmp_path / "m.onnx")


def test_written_atomically_and_errors_name_the_target(tmp_path):
    layers = [(np.ones((1, 2), np.float32), np.zeros(1, np.float32))]
    kw = dict(positive_class=1, label_kind="binary", classes=[0, 1])
    path = tmp_path / "m.onnx"
    path.write_bytes(b"old")
    export_onnx(layers, path=path, **kw)
    assert onnx.load(path).graph.name == "bp_gpu_mlp"
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]  # no temporary left beside it
    with pytest.raises(IsADirectoryError, match=str(tmp_path)):
        export_onnx(layers, path=tmp_path, **kw)
    with pytest.raises(OSError, match=r"^cannot write .*nowhere/m\.onnx: the directory .*nowhere does not exist$"):
        export_onnx(layers, path=tmp_path / "nowhere" / "m.onnx", **kw)  # the one wording, no [Errno 2]


# -- MLPClassifier.to_onnx ---------------------------------------------------------------------------
def _classifier_data(kind, rng):
    X = rng.normal(size=(400, 5)) * [1, 30, 0.1, 2, 5] + [0, 200, 1, -4, 0]  # raw: offsets and spreads
    z = (X - [0, 200, 1, -4, 0]) / [1, 30, 0.1, 2, 5]
    if kind == "binary":
        return X, np.where(z[:, 0] + z[:, 1] > 0, "spam", "ham")
    if kind == "multiclass":
        return X, z[:, :4].argmax(axis=1) * 2 + 1  # 1, 3, 5, 7
    return X, np.column_stack([z[:, 0] > 0, z[:, 2] + z[:, 3] > 0, z[:, 4] > 0.5]).astype(int)


@pytest.mark.parametrize("kind", ["binary", "multiclass", "multilabel"])
@pytest.mark.parametrize("standardize", [False, True])
def test_classifier_to_onnx_gives_predict_proba_and_predict(tmp_path, kind, standardize):
    rng = np.random.default_rng(11)
    X, y = _classifier_data(kind, rng)
    clf = bp_gpu.MLPClassifier((8,), epochs=15, batch_size=32, learning_rate=0.02, random_state=0, backend="cpu",
                               standardize=standardize).fit(X, y)
    clf.to_onnx(tmp_path / "m.onnx")
    onnx.checker.check_model(onnx.load(tmp_path / "m.onnx"), full_check=True)
    X32 = X.astype(np.float32)
    label, proba = _session(tmp_path / "m.onnx").run(["label", "probabilities"], {"X": X32})
    np.testing.assert_allclose(proba, clf.predict_proba(X32), atol=1e-5, rtol=0)
    np.testing.assert_array_equal(label, clf.predict(X32))
    if standardize:
        assert clf.score(X, y) > 0.85  # the raw features went through the graph's standardisation
