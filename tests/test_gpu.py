"""The CUDA backend on a real device: kernels vs the NumPy reference at device-sized shapes,
cuda vs cpu on random problems, determinism. Skipped when no device is usable."""

import numpy as np
import pytest

from bp_gpu import MLP
from bp_gpu import steps_numpy as ref
from bp_gpu.backends import cuda_status, simulator_enabled

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        simulator_enabled() or not cuda_status()[0],
        reason=f"needs a CUDA device: {cuda_status()[1] if not simulator_enabled() else 'simulator on'}",
    ),
]

# Ragged, larger than one block in both directions, and larger than one wave of blocks.
SHAPES = [(1, 1), (4099, 1), (1027, 1031), (65537, 3)]
TOL = {np.float32: dict(rtol=2e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-14)}


def _assert_column_sums(db, M, dtype):
    """db is the column sum of the kernel's own output M: float64 accumulation, per-block partials
    rounded to dtype once, so |error| <= 2 eps (|sum| + sum |M|); compared to an exact float64 sum,
    not to NumPy's float32 pairwise sum, which is less exact."""
    exact = M.sum(axis=0, dtype=np.float64)
    bound = 2 * np.finfo(dtype).eps * (np.abs(exact) + np.abs(M).sum(axis=0, dtype=np.float64))
    np.testing.assert_array_less(np.abs(db - exact), bound + 1e-300)


@pytest.fixture
def cp():
    import cupy

    return cupy


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_fused_steps_match_reference(cp, shape, dtype, rng):
    from bp_gpu.cuda_host import CUDA_STEPS as K

    A = (rng.standard_normal(shape) * 3).astype(dtype)
    b = rng.standard_normal(shape[1]).astype(dtype)
    T = (rng.random(shape) < 0.5).astype(dtype)
    Z = rng.random(shape).astype(dtype)
    scale = 1.0 / shape[0]

    want = A.copy()
    ref.bias_sigmoid_forward(want, b)
    got = cp.asarray(A)
    K.bias_sigmoid_forward(got, cp.asarray(b))
    np.testing.assert_allclose(got.get(), want, **TOL[dtype])

    D0, db0, l0 = np.empty_like(A), np.empty(shape[1], dtype), np.zeros(2)
    ref.output_loss_delta(A, b, T, 0, scale, D0, db0, l0)
    D1, db1, l1 = cp.empty(shape, dtype), cp.empty(shape[1], dtype), cp.zeros(2)
    K.output_loss_delta(cp.asarray(A), cp.asarray(b), cp.asarray(T), 0, scale, D1, db1, l1)
    np.testing.assert_allclose(D1.get(), D0, **TOL[dtype])
    _assert_column_sums(db1.get(), D1.get(), dtype)
    np.testing.assert_allclose(l1.get(), l0, rtol=1e-5 if dtype == np.float32 else 1e-11)

    G0, dbz0 = A.copy(), np.empty(shape[1], dtype)
    ref.sigmoid_delta_backward(G0, Z, dbz0)
    G1, dbz1 = cp.asarray(A), cp.empty(shape[1], dtype)
    K.sigmoid_delta_backward(G1, cp.asarray(Z), dbz1)
    np.testing.assert_allclose(G1.get(), G0, **TOL[dtype])
    _assert_column_sums(dbz1.get(), G1.get(), dtype)


@pytest.mark.parametrize("kind", [ref.SGD, ref.MOMENTUM, ref.ADAM])
def test_optimizer_update_matches_reference(cp, kind, rng):
    from bp_gpu.cuda_host import CUDA_STEPS as K

    n, n_w = 1_000_003, 999_000
    p, g = rng.standard_normal(n), rng.standard_normal(n)
    m, v = rng.standard_normal(n) * 0.1, rng.random(n) * 0.1
    args = (n_w, 0.01, 0.9, 1e-3, 0.9, 0.999, 1e-8, 0.271, 0.00299)
    host = [p.copy(), g, m.copy(), v.copy()]
    ref.optimizer_update(kind, *host, *args)
    dev = [cp.asarray(x) for x in (p, g, m, v)]
    K.optimizer_update(kind, *dev, *args)
    for x, y in zip(dev, host):
        np.testing.assert_allclose(x.get(), y, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("sizes", [[13, 1], [31, 64, 1], [130, 257, 33, 5]])
@pytest.mark.parametrize("positive_class", [0, 1])
def test_mlp_cuda_matches_cpu(cp, sizes, positive_class, rng):
    kw = dict(positive_class=positive_class, dtype="float64", seed=3)
    gpu, cpu = MLP(sizes, backend="cuda", **kw), MLP(sizes, backend="cpu", **kw)
    X = rng.standard_normal((3001, sizes[0]))
    t = (rng.random((3001, sizes[-1])) < 0.5).astype(float)
    for reduction in ("mean", "sum"):
        l1, g1 = gpu.loss_and_grad(cp.asarray(X), cp.asarray(t), reduction)
        l0, g0 = cpu.loss_and_grad(X, t, reduction)
        assert l1 == pytest.approx(l0, rel=1e-9)
        for (dW1, db1), (dW0, db0) in zip(g1, g0):
            np.testing.assert_allclose(dW1, dW0, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(db1, db0, rtol=1e-9, atol=1e-12)
    y = gpu.predict_proba(cp.asarray(X))
    assert isinstance(y, cp.ndarray)  # CuPy in, CuPy out: no trip through the host
    np.testing.assert_allclose(y.get(), cpu.predict_proba(X), rtol=1e-9, atol=1e-15)


def test_gradients_bit_identical_run_to_run(cp, rng):
    model = MLP([64, 300, 300, 1], backend="cuda", dtype="float32", seed=0)
    X = cp.asarray(rng.standard_normal((20000, 64)), dtype=cp.float32)
    t = cp.asarray(rng.random((20000, 1)) < 0.5, dtype=cp.float32)
    first = model.loss_and_grad(X, t)
    for _ in range(3):
        again = model.loss_and_grad(X, t)
        assert again[0] == first[0]
        for (dW1, db1), (dW2, db2) in zip(first[1], again[1]):
            np.testing.assert_array_equal(dW1, dW2)
            np.testing.assert_array_equal(db1, db2)


@pytest.mark.parametrize("placement", ["device", "stream"])
def test_training_placements_match_cpu(cp, placement, rng):
    """The epoch loop's CuPy-only paths (never run in the simulator, where xp is NumPy): batches
    gathered on the device with ``cupy.take(..., out=)``, or gathered on the host into pinned
    buffers and copied with ``ndarray.set(stream=)`` behind events; the device loss accumulator;
    snapshots. Same shuffles and weights as the CPU backend, so float64 agrees to rounding."""
    from bp_gpu.optim import Optimizer
    from bp_gpu.train import ResidentBatches, StreamedBatches, TrainState, make_batches, train

    X = rng.standard_normal((1001, 7))  # batches of 96: a ragged last one
    T = (rng.random((1001, 2)) < 0.5).astype(float)
    runs = []
    for backend, where in (("cpu", "device"), ("cuda", placement)):
        net = MLP([7, 16, 2], backend=backend, dtype="float64", seed=5)
        opt = Optimizer(net._engine, "adam", 0.01, weight_decay=1e-3)
        state = TrainState(rng=np.random.default_rng(9))
        if backend == "cuda":
            want = StreamedBatches if placement == "stream" else ResidentBatches
            assert type(make_batches(net._engine, X, T, 96, placement)) is want
        interrupted = train(net._engine, opt, state, X, T, positive_class=1, batch_size=96,
                            epochs=3, placement=where)
        assert not interrupted
        runs.append((net.get_weights(), state.loss_curve, opt.state_arrays()))
    (w_gpu, curve_gpu, mv_gpu), (w_cpu, curve_cpu, mv_cpu) = runs[1], runs[0]
    np.testing.assert_allclose(curve_gpu, curve_cpu, rtol=1e-10)
    for (W1, b1), (W0, b0) in zip(w_gpu, w_cpu):
        np.testing.assert_allclose(W1, W0, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(b1, b0, rtol=1e-9, atol=1e-12)
    for a, b in zip(mv_gpu, mv_cpu):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-15)


def test_classifier_early_stopping_matches_cpu(cp, rng):
    """MLPClassifier end to end on the device: validation scoring on device arrays, the best
    epoch's snapshot restored, prediction in chunks, CuPy input accepted."""
    from bp_gpu import MLPClassifier

    X = rng.standard_normal((600, 5))
    y = X[:, :3].argmax(axis=1)
    kw = dict(hidden_layer_sizes=(12,), batch_size=64, epochs=8, learning_rate=0.01, seed=2,
              dtype="float64", early_stopping=True, n_iter_no_change=3)
    gpu = MLPClassifier(backend="cuda", **kw).fit(X, y)
    cpu = MLPClassifier(backend="cpu", **kw).fit(X, y)
    assert gpu.n_iter_ == cpu.n_iter_
    np.testing.assert_allclose(gpu.loss_curve_, cpu.loss_curve_, rtol=1e-10)
    assert gpu.validation_scores_ == cpu.validation_scores_
    np.testing.assert_allclose(gpu.predict_proba(X), cpu.predict_proba(X), rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(gpu.predict_proba(cp.asarray(X)), cpu.predict_proba(X), rtol=1e-9,
                               atol=1e-14)
