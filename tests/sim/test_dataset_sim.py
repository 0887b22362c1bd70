"""Training from a bp_gpu.data data set on the CUDA backend (kernels in Numba's simulator) vs the
CPU backend: the same batches (drawn on the host from the seed), so the same model to rounding,
and the same ONNX export."""

import numpy as np
import pytest

import bp_gpu.data as bd
from bp_gpu import MLPClassifier

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


@pytest.mark.sim
@pytest.mark.parametrize("kind", ["binary", "multiclass"])
def test_cuda_and_cpu_train_the_same_from_a_data_set_and_export_the_same(rng, tmp_path, kind):
    X = rng.normal(size=(45, 3)) * [1, 10, 0.1] + [0, 50, 2]
    y = np.where(X[:, 0] > 0, "a", "b") if kind == "binary" else (X[:, 0] > 0).astype(int) + (X[:, 2] > 2)
    ds = bd.from_arrays(X, y, chunk_rows=10)  # 5 chunks, a ragged one; batches of 8: a ragged last batch
    kw = dict(hidden_layer_sizes=(4,), batch_size=8, epochs=2, learning_rate=0.05, random_state=3, dtype="float64",
              optimizer="adam", standardize=True)
    gpu, cpu = MLPClassifier(backend="cuda", **kw).fit(ds), MLPClassifier(backend="cpu", **kw).fit(ds)
    assert gpu.net_.backend == "cuda" and cpu.net_.backend == "cpu"
    for (Wg, bg), (Wc, bc) in zip(gpu.net_.get_weights(), cpu.net_.get_weights()):
        np.testing.assert_allclose(Wg, Wc, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(bg, bc, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(gpu.loss_curve_, cpu.loss_curve_, rtol=1e-12)
    np.testing.assert_allclose(gpu.predict_proba(ds), cpu.predict_proba(ds), rtol=1e-12, atol=1e-14)
    outputs = []
    for clf, name in ((gpu, "gpu.onnx"), (cpu, "cpu.onnx")):
        clf.to_onnx(tmp_path / name)
        sess = ort.InferenceSession(str(tmp_path / name), providers=["CPUExecutionProvider"])
        outputs.append(sess.run(["label", "probabilities"], {"X": X.astype(np.float32)}))
    np.testing.assert_array_equal(outputs[0][0], outputs[1][0])
    np.testing.assert_allclose(outputs[0][1], outputs[1][1], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(outputs[1][1], cpu.predict_proba(X.astype(np.float32)), atol=1e-5)
