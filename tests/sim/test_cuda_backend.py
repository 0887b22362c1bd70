"""MLP(backend="cuda") vs MLP(backend="cpu"): the same host engine, kernels in the simulator."""

import numpy as np
import pytest

from bp_gpu import MLP

ARCHS = [[7, 2], [7, 5, 1], [4, 9, 3, 2]]  # depth 1 to 3, ragged widths


def _pair(sizes, positive_class=1, dtype="float64"):
    kw = dict(positive_class=positive_class, dtype=dtype, seed=7)
    return MLP(sizes, backend="cuda", **kw), MLP(sizes, backend="cpu", **kw)


def _data(rng, n, sizes):
    X = rng.standard_normal((n, sizes[0]))
    t = (rng.random((n, sizes[-1])) < 0.5).astype(float)
    return X, t


@pytest.mark.sim
@pytest.mark.parametrize("sizes", ARCHS)
@pytest.mark.parametrize("positive_class", [0, 1])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_loss_and_grad_match_cpu(sizes, positive_class, reduction, rng):
    gpu, cpu = _pair(sizes, positive_class)
    X, t = _data(rng, 33, sizes)
    l_gpu, g_gpu = gpu.loss_and_grad(X, t, reduction)
    l_cpu, g_cpu = cpu.loss_and_grad(X, t, reduction)
    assert l_gpu == pytest.approx(l_cpu, rel=1e-9)
    for (dW1, db1), (dW0, db0) in zip(g_gpu, g_cpu):
        np.testing.assert_allclose(dW1, dW0, rtol=1e-9, atol=1e-13)
        np.testing.assert_allclose(db1, db0, rtol=1e-9, atol=1e-13)
    assert gpu.loss(X, t, reduction) == pytest.approx(l_cpu, rel=1e-9)
    np.testing.assert_allclose(gpu.predict_proba(X), cpu.predict_proba(X), rtol=1e-9, atol=1e-15)


@pytest.mark.sim
def test_batches_of_different_sizes_reuse_buffers(rng):
    sizes = [4, 9, 3, 2]
    gpu, cpu = _pair(sizes)
    for n in (65, 1, 17):  # grows, then shrinks within capacity
        X, t = _data(rng, n, sizes)
        l_gpu, g_gpu = gpu.loss_and_grad(X, t)
        l_cpu, g_cpu = cpu.loss_and_grad(X, t)
        assert l_gpu == pytest.approx(l_cpu, rel=1e-9)
        for (dW1, db1), (dW0, db0) in zip(g_gpu, g_cpu):
            np.testing.assert_allclose(dW1, dW0, rtol=1e-9, atol=1e-13)
            np.testing.assert_allclose(db1, db0, rtol=1e-9, atol=1e-13)


@pytest.mark.sim
def test_float32_matches_cpu(rng):
    gpu, cpu = _pair([7, 5, 1], dtype="float32")
    X, t = _data(rng, 33, [7, 5, 1])
    l_gpu, g_gpu = gpu.loss_and_grad(X, t)
    l_cpu, g_cpu = cpu.loss_and_grad(X, t)
    assert l_gpu == pytest.approx(l_cpu, rel=1e-5)
    for (dW1, db1), (dW0, db0) in zip(g_gpu, g_cpu):
        np.testing.assert_allclose(dW1, dW0, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(db1, db0, rtol=1e-4, atol=1e-6)


@pytest.mark.sim
def test_gradients_bit_identical_on_repeat(rng):
    gpu, _ = _pair([4, 9, 3, 2])
    X, t = _data(rng, 65, [4, 9, 3, 2])
    l1, g1 = gpu.loss_and_grad(X, t)
    l2, g2 = gpu.loss_and_grad(X, t)
    assert l1 == l2
    for (dW1, db1), (dW2, db2) in zip(g1, g2):
        np.testing.assert_array_equal(dW1, dW2)
        np.testing.assert_array_equal(db1, db2)


@pytest.mark.sim
def test_loss_leaves_gradients_alone(rng):
    gpu, _ = _pair([7, 5, 1])
    X, t = _data(rng, 9, [7, 5, 1])
    _, grads = gpu.loss_and_grad(X, t)
    gpu.loss(X[:4], 1 - t[:4])
    _, again = gpu.loss_and_grad(X, t)
    for (dW1, db1), (dW2, db2) in zip(grads, again):
        np.testing.assert_array_equal(dW1, dW2)
        np.testing.assert_array_equal(db1, db2)
    assert gpu.backend == "cuda" and gpu._engine.steps.__class__.__name__ == "CudaSteps"


@pytest.mark.sim
def test_engine_optimizer_step_matches_cpu(rng):
    """The training loop's call: engine.steps.optimizer_update on the flat buffers, Adam."""
    from bp_gpu.optim import hyper as H

    gpu, cpu = _pair([4, 9, 3, 2])
    X, t = _data(rng, 17, [4, 9, 3, 2])
    for model in (gpu, cpu):
        e = model._engine
        state = e.xp.zeros((2, e.n_params), dtype=e.dtype)
        hyper = e.xp.zeros(H.N_HYPER)
        hyper[[H.LR, H.BETA1, H.BETA2, H.EPS, H.WEIGHT_DECAY]] = 0.01, 0.9, 0.999, 1e-8, 1e-3
        for _ in (1, 2):
            e.loss_and_grad(X, t, 1, 1.0 / len(X))
            e.steps.optimizer_update(H.ADAM, e.params, e.grads, state, hyper, e.n_weights)
    for (W1, b1), (W0, b0) in zip(gpu.get_weights(), cpu.get_weights()):
        np.testing.assert_allclose(W1, W0, rtol=1e-9, atol=1e-13)
        np.testing.assert_allclose(b1, b0, rtol=1e-9, atol=1e-13)


@pytest.mark.sim
def test_engine_runs_the_fused_outer_step_below_a_single_unit_layer(monkeypatch):
    gpu, _ = _pair([7, 5, 1])
    from bp_gpu.cuda_host import CUDA_STEPS

    names = []
    bind = CUDA_STEPS.bind
    monkeypatch.setattr(CUDA_STEPS, "bind", lambda name, *a: names.append(name) or bind(name, *a))
    gpu._engine.ensure_capacity(4)
    gpu._engine.grad_plan(4, 0.25, 1)
    assert "outer_sigmoid_delta_backward" in names and "sigmoid_delta_backward" not in names


@pytest.mark.sim
def test_bind_prepares_a_launch_of_each_step(rng):
    from bp_gpu import steps_numpy as ref
    from bp_gpu.cuda_host import CUDA_STEPS
    from bp_gpu.optim import hyper as H
    from bp_gpu.plan import T as T_SLOT

    D, W, Z = rng.standard_normal((33, 1)), rng.standard_normal((1, 5)), rng.random((33, 5))
    G, db, G0, db0 = np.empty((33, 5)), np.empty(5), np.empty((33, 5)), np.empty(5)
    launch = CUDA_STEPS.bind("outer_sigmoid_delta_backward", D, W, Z, G, db)
    launch(None, None)
    ref.outer_sigmoid_delta_backward(D, W, Z, G0, db0)
    np.testing.assert_allclose(G, G0, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(db, db0, rtol=1e-12, atol=1e-15)
    # The optimizer, prepared once, advances the step count on the device at each call.
    p, g, h = rng.standard_normal(7), rng.standard_normal(7), np.zeros(H.N_HYPER)
    h[H.LR] = 0.5
    want, hw = p.copy(), h.copy()
    step = CUDA_STEPS.bind("optimizer_update", H.SGD, p, g, np.zeros((1, 1)), h, 4)
    for _ in range(2):
        step(None, None)
        ref.optimizer_update(H.SGD, want, g, np.zeros((1, 1)), hw, 4)
    np.testing.assert_allclose(p, want, rtol=1e-15)
    assert h[H.STEP] == 2
    # A step reading the batch's targets (a slot) is prepared again for each new target array.
    A, b = rng.standard_normal((9, 2)), rng.standard_normal(2)
    Dl, dbl, loss = np.empty((9, 2)), np.empty(2), np.zeros(2)
    out = CUDA_STEPS.bind("output_loss_delta", A, b, T_SLOT, 1, 1 / 9, Dl, dbl, loss)
    for _ in range(2):
        for T in ((rng.random((9, 2)) < 0.5).astype(float), np.ones((9, 2))):
            out(None, T)
            D0, db_0, l0 = np.empty((9, 2)), np.empty(2), np.zeros(2)
            ref.output_loss_delta(A, b, T, 1, 1 / 9, D0, db_0, l0)
            np.testing.assert_allclose(Dl, D0, rtol=1e-12)
            assert loss[0] == pytest.approx(l0[0], rel=1e-12)
    with pytest.raises(ValueError, match="CudaSteps.bind: no step named 'sigmoid'"):
        CUDA_STEPS.bind("sigmoid", G, Z)
