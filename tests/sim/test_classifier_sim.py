"""MLPClassifier on the CUDA backend (kernels in Numba's simulator) vs the CPU backend: tiny data.

Shuffle order and initial weights are drawn on the host, so the two backends take the same steps
and agree to rounding in float64, through fit, partial_fit, save/load and across backends.
"""

import numpy as np
import pytest

import bp_gpu
from bp_gpu import MLPClassifier


def _data(rng, k):
    X = rng.normal(size=(19, 4))  # 19 rows in batches of 8: a ragged last batch
    y = X[:, :k].argmax(axis=1) if k > 2 else (X[:, 0] > 0).astype(int)
    return X, y


def _pair(**kw):
    base = dict(hidden_layer_sizes=(5,), batch_size=8, epochs=1, learning_rate=0.05, random_state=3, **kw)
    return MLPClassifier(backend="cuda", **base), MLPClassifier(backend="cpu", **base)


def _close(a, b, rtol):
    for (Wa, ba), (Wb, bb) in zip(a.net_.get_weights(), b.net_.get_weights()):
        np.testing.assert_allclose(Wa, Wb, rtol=rtol, atol=rtol)
        np.testing.assert_allclose(ba, bb, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(a.loss_curve_, b.loss_curve_, rtol=rtol)


@pytest.mark.sim
@pytest.mark.parametrize(
    "optimizer, k, positive_class", [("sgd", 2, 1), ("momentum", 3, 0), ("adam", 3, 1)]
)
def test_cuda_and_cpu_fits_agree(rng, optimizer, k, positive_class):
    X, y = _data(rng, k)
    gpu, cpu = _pair(optimizer=optimizer, dtype="float64", positive_class=positive_class)
    gpu.fit(X, y)
    cpu.fit(X, y)
    assert gpu.net_.backend == "cuda" and cpu.net_.backend == "cpu"
    _close(gpu, cpu, 1e-12)
    np.testing.assert_allclose(gpu.predict_proba(X), cpu.predict_proba(X), rtol=1e-12, atol=1e-14)
    gpu.partial_fit(X, y)
    cpu.partial_fit(X, y)
    _close(gpu, cpu, 1e-12)


@pytest.mark.sim
def test_float32_agrees_to_float32_rounding(rng):
    X, y = _data(rng, 3)
    gpu, cpu = _pair(optimizer="adam", dtype="float32")
    _close(gpu.fit(X, y), cpu.fit(X, y), 1e-4)


@pytest.mark.sim
def test_checkpoint_from_cuda_resumes_on_cpu(rng, tmp_path):
    X, y = _data(rng, 2)
    gpu, cpu = _pair(optimizer="adam", dtype="float64")
    gpu.fit(X, y).save(tmp_path / "m.npz")
    moved = bp_gpu.load(tmp_path / "m.npz", backend="cpu")
    assert moved.net_.backend == "cpu"
    np.testing.assert_allclose(moved.predict_proba(X), gpu.predict_proba(X), rtol=1e-15)
    moved.partial_fit(X, y)
    cpu.fit(X, y).partial_fit(X, y)
    _close(moved, cpu, 1e-12)
