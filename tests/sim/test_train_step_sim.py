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
@pytest.mark.parametrize("name", list(MAKE))
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
@pytest.mark.parametrize("name", list(MAKE))
def test_compiled_step_replays_train_step(name, rng):
    sched = optim.warmup_cosine(0.05, warmup_steps=2, total_steps=5, final=0.001)
    a, b = (MLP(SIZES, backend="cuda", dtype="float64", seed=2) for _ in range(2))
    oa, ob = MAKE[name](a, sched), MAKE[name](b, sched)
    step = b.compile_step(ob, 9)
    for X, t in _batches(rng, 4):
        assert float(a.train_step(X, t, oa)) == float(step(X, t))
    np.testing.assert_array_equal(_flat(a), _flat(b))
