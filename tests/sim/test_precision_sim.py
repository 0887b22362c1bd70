"""MLP(backend="cuda", precision="bf16"/"tf32") in the simulator against the CPU backend's emulation
of the same rounding contract: the kernels that write the bfloat16 copies, the GEMMs on them (the
simulator's stand-in multiplies the decoded bits, or the TF32-rounded floats as cuBLAS's
COMPUTE_32F_FAST_TF32 is asked to), the optimizer's copy of the weights, a compiled step."""

import numpy as np
import pytest

from bp_gpu import MLP, optim
from bp_gpu.plan import run
from bp_gpu.precision import bf16_bits


def _data(rng, n, sizes):
    X = rng.standard_normal((n, sizes[0])).astype(np.float32)
    t = (rng.random((n, sizes[-1])) < 0.5).astype(np.float32)
    return X, t


def _flat(grads):
    return np.concatenate([np.concatenate([dW.ravel(), db.ravel()]) for dW, db in grads])


def _copies_hold_the_weights(net):
    e = net._engine
    for (W, _), rW in zip(e.layers, e.weight_copies):
        np.testing.assert_array_equal(rW, bf16_bits(W))


@pytest.mark.sim
@pytest.mark.parametrize("sizes, precision", [([7, 5, 1], "bf16"), ([7, 5, 1], "tf32"), ([13, 9, 3, 2], "bf16")])
def test_gradients_and_a_short_training_run_match_the_cpu_emulation(sizes, precision, rng):
    X, t = _data(rng, 17, sizes)
    gpu, cpu = (MLP(sizes, precision=precision, backend=b, seed=2) for b in ("cuda", "cpu"))
    assert (gpu._engine.copy_dtype is None) == (precision == "tf32")  # cuBLAS rounds TF32 operands itself
    if precision == "bf16":
        _copies_hold_the_weights(gpu)
    (l_gpu, g_gpu), (l_cpu, g_cpu) = gpu.loss_and_grad(X, t), cpu.loss_and_grad(X, t)
    assert l_gpu == pytest.approx(l_cpu, rel=1e-6)
    assert np.linalg.norm(_flat(g_gpu) - _flat(g_cpu)) <= 1e-6 * np.linalg.norm(_flat(g_cpu))
    np.testing.assert_allclose(gpu.predict_proba(X), cpu.predict_proba(X), rtol=1e-6)
    opt_gpu, opt_cpu = optim.Adam(gpu, 0.05), optim.Adam(cpu, 0.05)
    for _ in range(2):
        gpu.train_step(X, t, opt_gpu)
        cpu.train_step(X, t, opt_cpu)
    np.testing.assert_allclose(gpu._engine.params, cpu._engine.params, rtol=1e-5, atol=1e-7)
    if precision == "bf16":
        _copies_hold_the_weights(gpu)  # written by the optimizer kernel with the update


@pytest.mark.sim
def test_a_compiled_step_and_a_staged_batch_replay_train_step_bit_for_bit(rng):
    sizes = [7, 5, 1]
    X, t = _data(rng, 9, sizes)
    a, b = (MLP(sizes, precision="bf16", backend="cuda", seed=4) for _ in range(2))
    oa, ob = optim.SGD(a, 0.5, momentum=0.9), optim.SGD(b, 0.5, momentum=0.9)
    step = b.compile_step(ob, 9)
    for _ in range(2):
        assert float(a.train_step(X, t, oa)) == float(step(X, t))
    np.testing.assert_array_equal(a._engine.params, b._engine.params)
    _copies_hold_the_weights(b)
    # A batch gathered and rounded in one pass into the engine's batch copy, then a staged plan.
    e, idx = a._engine, np.array([3, 1, 4, 1, 5], dtype=np.int64)
    _, want = b.loss_and_grad(X[idx], t[idx])
    e.bind("take_rows_round", X, idx, e.batch_copy(5), e.fmt)(None, None)
    run(e.grad_plan(5, 1 / 5, 1, staged=True), None, t[idx])
    np.testing.assert_array_equal(_flat(a.gradients()), _flat(want))


@pytest.mark.sim
def test_an_epoch_of_arrays_on_the_device_gathers_each_batch_into_its_bf16_copy(rng, monkeypatch):
    # The resident source's take_rows_round launch writes the bf16 batch the GEMMs read (no float32
    # batch, no round_rows launch) and trains as train_step on the same batches, bit for bit.
    from bp_gpu.train import ArraySource, run_epoch

    sizes = [7, 5, 1]
    X, t = _data(rng, 11, sizes)
    a, b = (MLP(sizes, precision="bf16", backend="cuda", seed=4) for _ in range(2))
    oa, ob = optim.SGD(a, 0.5, momentum=0.9), optim.SGD(b, 0.5, momentum=0.9)
    source = ArraySource(b._engine, X, t, 8, "device")
    calls = []
    bind = b._engine.bind
    monkeypatch.setattr(b._engine, "bind", lambda name, *args: calls.append(name) or bind(name, *args))
    order = rng.permutation(11)
    run_epoch(b, ob, source, np.random.default_rng(0), order=order)
    assert source.staged and calls.count("take_rows_round") == 2 and "round_rows" not in calls
    for i in (order[:8], order[8:]):
        a.train_step(X[i], t[i], oa)
    np.testing.assert_array_equal(a._engine.params, b._engine.params)
    _copies_hold_the_weights(b)
