"""The step API with the CUDA backend in the simulator: train_step against the CPU backend for every
optimizer, and compiled steps replaying train_step bit for bit (in the simulator a compiled step
replays its recorded calls; the CUDA-graph capture itself needs a GPU: tests/test_gpu.py)."""

import numpy as np
import pytest

from bp_gpu import MLP, optim

SIZES = [4, 6, 1]
MAKE = {
    "sgd": lambda n, lr: optim.SGD(n, lr, weight_decay=0.01),
    "momentum": lambda n, lr: optim.SGD(n, lr, momentum=0.9),
    "adam": lambda n, lr: optim.Adam(n, lr, weight_decay=0.01),
    "adamw": lambda n, lr: optim.AdamW(n, lr, weight_decay=0.05),
    "lamb": lambda n, lr: optim.LAMB(n, lr, weight_decay=0.01),
}


def _batches(rng, k, B=9):
    return [(rng.standard_normal((B, SIZES[0])), (rng.random((B, 1)) < 0.5).astype(float)) for _ in range(k)]


def _flat(net):
    return np.concatenate([a.ravel() for Wb in net.get_weights() for a in Wb])


@pytest.mark.sim
@pytest.mark.parametrize("name", ["sgd", "adamw", "lamb"])  # each update kernel; every rule: test_optimizer_update
def test_train_step_matches_cpu(name, rng):
    sched = optim.warmup_linear(0.05, warmup_steps=2, total_steps=5)
    nets = [MLP(SIZES, backend=b, dtype="float64", seed=1) for b in ("cuda", "cpu")]
    opts = [MAKE[name](n, sched) for n in nets]
    for X, t in _batches(rng, 4):
        losses = [float(n.train_step(X, t, o)) for n, o in zip(nets, opts)]
        assert losses[0] == pytest.approx(losses[1], rel=1e-12)
    np.testing.assert_allclose(_flat(nets[0]), _flat(nets[1]), rtol=1e-10, atol=1e-13)
    assert opts[0].step_count == 4 and opts[0].last_learning_rate == pytest.approx(sched(4), rel=1e-15)


@pytest.mark.sim
@pytest.mark.parametrize("name", ["adam", "lamb"])  # both update kernels; every optimizer on the CPU: test_optim
def test_compiled_step_replays_train_step(name, rng):
    sched = optim.warmup_cosine(0.05, warmup_steps=2, total_steps=5, final=0.001)
    a, b = (MLP(SIZES, backend="cuda", dtype="float64", seed=2) for _ in range(2))
    oa, ob = MAKE[name](a, sched), MAKE[name](b, sched)
    step = b.compile_step(ob, 9)
    for X, t in _batches(rng, 4):
        assert float(a.train_step(X, t, oa)) == float(step(X, t))
    np.testing.assert_array_equal(_flat(a), _flat(b))


@pytest.mark.sim
def test_a_new_batch_array_each_step_is_rebound_not_prepared_again(monkeypatch, rng):
    # A user's loop passes a fresh array every step; the output step reads t, so its prepared launch
    # is pointed at each new array (rebind) instead of being prepared again.
    from bp_gpu.kernels import output_loss_delta as mod

    prepared = []
    real = mod.prepare_output_loss_delta
    monkeypatch.setattr(mod, "prepare_output_loss_delta", lambda *a: prepared.append(a) or real(*a))
    nets = [MLP(SIZES, backend=b, dtype="float64", seed=1) for b in ("cuda", "cpu")]
    opts = [optim.Adam(n, 0.05) for n in nets]
    for X, t in _batches(rng, 4):
        losses = [float(n.train_step(X, t.copy(), o)) for n, o in zip(nets, opts)]
        assert losses[0] == pytest.approx(losses[1], rel=1e-12)
    assert len(prepared) == 1
    np.testing.assert_allclose(_flat(nets[0]), _flat(nets[1]), rtol=1e-10, atol=1e-13)


@pytest.mark.sim
def test_a_launch_that_cannot_rebind_is_prepared_again():
    from bp_gpu.cuda_host import _PreparedPerInput
    from bp_gpu.plan import T as T_SLOT

    made, ran = [], []

    def prepare(a, t):
        def launch():
            ran.append((a, t))

        launch.rebind = lambda old, new: old.shape == new.shape
        made.append(t)
        return launch

    op = _PreparedPerInput(prepare, ("A", T_SLOT))
    t1, t2, t3 = np.zeros((3, 1)), np.zeros((3, 1)), np.zeros((5, 1))
    for t in (t1, t1, t2, t3):
        op(None, t)
    assert made == [t1, t3]  # t1 prepared; t2 rebound; t3 (another shape) prepared again
    assert len(ran) == 4 and op.T is t3
