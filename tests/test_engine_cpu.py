"""The engine's cached per-batch-size views and its single-unit backward, on the CPU backend.

Each case runs the engine with the Numba steps (``cpu_steps``, which fuse the product with a
single-unit layer's weights into the backward step) and with the NumPy spec (``steps_numpy``, for
which the engine does the broadcast multiply itself) against the reference, float32 and float64.
"""

import numpy as np
import pytest

from bp_gpu import cpu_steps, steps_numpy
from bp_gpu import reference as R
from bp_gpu.engine import _PLAN_CACHE, Engine

STEPS = {"numba": cpu_steps, "spec": steps_numpy}
TOL = {np.float32: {"rtol": 2e-4, "atol": 2e-6}, np.float64: {"rtol": 1e-10, "atol": 1e-13}}


def _engine(steps, sizes, dtype, rng):
    e = Engine(np, STEPS[steps], sizes, np.dtype(dtype), "cpu")
    layers = [
        (rng.standard_normal((o, i)).astype(dtype), rng.standard_normal(o).astype(dtype))
        for i, o in zip(sizes[:-1], sizes[1:])
    ]
    for (W, b), (W_src, b_src) in zip(e.layers, layers):
        W[...], b[...] = W_src, b_src
    return e, layers


def _check(e, layers, X, T, pc, dtype):
    loss = float(e.loss_and_grad(X, T, pc, 1.0 / X.shape[0])[0])
    ref_loss, ref_grads = R.loss_and_grad(
        [(W.astype(np.float64), b.astype(np.float64)) for W, b in layers],
        X.astype(np.float64), T.astype(np.float64), pc)
    np.testing.assert_allclose(loss, ref_loss, rtol=TOL[dtype]["rtol"])
    for (dW, db), (rdW, rdb) in zip(e.grad_layers, ref_grads):
        np.testing.assert_allclose(dW, rdW, **TOL[dtype])
        np.testing.assert_allclose(db, rdb, **TOL[dtype])


@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "sizes",
    [(3, 1), (5, 1, 1), (5, 1, 3, 1), (7, 33, 1), (4, 6, 5, 3), (28, 64, 64, 1)],
)
def test_loss_and_grad_matches_reference_over_many_batch_sizes(rng, steps, dtype, sizes):
    # More batch sizes than the view cache holds, revisited after eviction, and a capacity
    # growth after views were cached (it reallocates the buffers the views pointed into).
    e, layers = _engine(steps, sizes, dtype, rng)
    for B in [5, 1, 17, 5, 2, 9, 3, 17, 40, 1, 5]:
        X = rng.standard_normal((B, sizes[0])).astype(dtype)
        T = (rng.random((B, sizes[-1])) < 0.5).astype(dtype)
        _check(e, layers, X, T, int(rng.integers(0, 2)), dtype)
        assert len(e._plans) <= _PLAN_CACHE


@pytest.mark.parametrize("steps", STEPS)
def test_loss_and_predict_share_the_cache_without_touching_gradients(rng, steps):
    sizes = (6, 4, 1)
    e, layers = _engine(steps, sizes, np.float64, rng)
    X = rng.standard_normal((11, 6))
    T = (rng.random((11, 1)) < 0.5).astype(np.float64)
    _check(e, layers, X, T, 1, np.float64)
    grads = e.grads.copy()
    loss = float(e.loss(X[:7], T[:7], 0, 1.0)[0])
    A, _ = R.forward(layers, X[:7])
    np.testing.assert_allclose(loss, R.per_sample_loss(A[-1], 1 - T[:7]).sum(), rtol=1e-12)
    np.testing.assert_allclose(e.predict_proba(X[:3]), R.sigmoid(R.forward(layers, X[:3])[0][-1]),
                               rtol=1e-12)
    np.testing.assert_array_equal(e.grads, grads)


def test_numba_and_spec_engines_agree_on_a_single_unit_hidden_layer(rng):
    # [5, 1, 3, 1]: two single-unit layers above a backward step, one with the fused step.
    sizes = (5, 1, 3, 1)
    X = rng.standard_normal((33, 5))
    T = (rng.random((33, 1)) < 0.5).astype(np.float64)
    outs = []
    for steps in STEPS:
        e, _ = _engine(steps, sizes, np.float64, np.random.default_rng(7))
        outs.append((float(e.loss_and_grad(X, T, 1, 1 / 33)[0]), e.grads.copy()))
    np.testing.assert_allclose(outs[0][0], outs[1][0], rtol=1e-13)
    np.testing.assert_allclose(outs[0][1], outs[1][1], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("source", ["ResidentBatches", "StreamedBatches"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_host_batch_sources_gather_the_order_with_a_ragged_last_batch(rng, source, dtype):
    from bp_gpu import train

    n, batch = 23, 8
    X = rng.standard_normal((n, 5)).astype(dtype)
    T = (rng.random((n, 2)) < 0.5).astype(dtype)
    batches = getattr(train, source)(np, X, T, batch)
    for _ in range(2):  # two epochs, two orders: reused buffers and views
        order = rng.permutation(n)
        batches.start_epoch(order)
        for start in range(0, n, batch):
            stop = min(start + batch, n)
            Xb, Tb = batches.batch(start, stop)
            np.testing.assert_array_equal(Xb, X[order[start:stop]])
            np.testing.assert_array_equal(Tb, T[order[start:stop]])
    batches.start_epoch(np.array([0, n]))
    with pytest.raises(IndexError, match="outside"):
        batches.batch(0, 2)
