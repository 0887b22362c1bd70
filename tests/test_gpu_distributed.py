"""The data-parallel GPU path on a real device: a one-process NCCL communicator (NCCL runs a
one-rank communicator on one GPU; two ranks may not share a GPU) through the whole data-parallel
fit, against plain training and against the MPI-on-pinned-copies fallback. Skipped without a
device, mpi4py or NCCL; bench/device_check.py runs it and times the path."""

import importlib.util

import numpy as np
import pytest

import bp_gpu
from bp_gpu.backends import cuda_status, simulator_enabled

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        simulator_enabled() or not cuda_status()[0],
        reason=f"needs a CUDA device: {cuda_status()[1] if not simulator_enabled() else 'simulator on'}",
    ),
    pytest.mark.skipif(importlib.util.find_spec("mpi4py") is None,
                       reason="needs mpi4py (pip install 'bp_gpu[mpi]')"),
]


@pytest.fixture
def cp():
    import cupy

    return cupy


@pytest.fixture
def group():
    from mpi4py import MPI

    from bp_gpu.distributed import ProcessGroup

    return ProcessGroup(MPI.COMM_SELF)


@pytest.fixture
def nccl(cp):
    from cupy.cuda import nccl

    if not nccl.available:
        pytest.skip("CuPy has no NCCL here (install the nvidia-nccl wheel for your CUDA)")
    return nccl


def _data(rng, n=3001, d=28):
    X = rng.standard_normal((n, d)).astype(np.float32)
    y = (X[:, :3].sum(axis=1) > 0).astype(np.int64)
    return X, y


PARAMS = dict(hidden_layer_sizes=(64, 64), batch_size=256, epochs=3, backend="cuda", random_state=0, learning_rate=0.01)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("optimizer", ["momentum", "adam", "lamb"])
def test_nccl_one_rank_fit_equals_plain_fit_bit_for_bit(nccl, group, rng, dtype, optimizer, monkeypatch):
    """A one-rank ncclAllReduce in place leaves the gradient as it is: the data-parallel fit (NCCL
    reducer, early stopping's global score, the per-epoch checksum) gives plain training's bits."""
    from bp_gpu import distributed as D

    X, y = _data(rng)
    params = dict(PARAMS, dtype=dtype, optimizer=optimizer, early_stopping=True, n_iter_no_change=2)
    plain = bp_gpu.MLPClassifier(**params).fit(X, y)
    monkeypatch.setattr(D, "world_group", lambda: group)  # a one-rank group in place of MPI.COMM_WORLD's
    dp = bp_gpu.MLPClassifier(**params, distributed=True).fit(X, y)
    assert group._nccl is not None  # the NCCL path ran
    assert plain.loss_curve_ == dp.loss_curve_ and plain.validation_scores_ == dp.validation_scores_
    for (W0, b0), (W1, b1) in zip(plain.net_.get_weights(), dp.net_.get_weights()):
        np.testing.assert_array_equal(W0, W1)
        np.testing.assert_array_equal(b0, b1)


def _train_with(kind, group, rng_seed, epochs=2):
    from bp_gpu import MLP
    from bp_gpu import distributed as D
    from bp_gpu.optim import Adam
    from bp_gpu.train import ArraySource, TrainState, train

    rng = np.random.default_rng(rng_seed)
    X, y = _data(rng)
    net = MLP([28, 64, 64, 1], backend="cuda", dtype="float32", seed=1)
    opt = Adam(net, 0.01)
    T = y[:, None].astype(np.float32)
    reducer = D.make_reducer(group, net._engine, kind)
    source = D.ShardedSource(group, ArraySource(net._engine, X, T, 200), reducer)
    state = TrainState(rng=np.random.default_rng(5))
    train(net, opt, state, source, epochs=epochs)
    return net, state, reducer


def test_nccl_and_staged_mpi_reducers_agree_bit_for_bit(nccl, group):
    a, sa, ra = _train_with("nccl", group, 3)
    b, sb, rb = _train_with("mpi-staged", group, 3)
    assert (ra.kind, rb.kind) == ("nccl", "mpi-staged") and ra.calls == rb.calls == 2 * 16
    assert sa.loss_curve == sb.loss_curve
    np.testing.assert_array_equal(a._engine.params.get(), b._engine.params.get())


def test_nccl_step_allocates_nothing(nccl, group, cp):
    from cupy.cuda import memory_hook

    from bp_gpu import MLP
    from bp_gpu import distributed as D
    from bp_gpu.optim import SGD

    class Count(memory_hook.MemoryHook):
        name = "count"

        def __init__(self):
            self.n = 0

        def malloc_preprocess(self, **kwargs):
            self.n += 1

    net = MLP([256, 1024, 1024, 1], backend="cuda", seed=0)
    opt = SGD(net, 0.1)
    reduce = D.make_reducer(group, net._engine, "nccl")
    X = cp.asarray(np.random.default_rng(0).standard_normal((512, 256)), cp.float32)
    T = cp.zeros((512, 1), cp.float32)
    net._step(X, T, opt, 1 / 512, reduce_grads=reduce)  # warm-up: plans, NCCL buffers
    cp.cuda.get_current_stream().synchronize()
    hook = Count()
    with hook:
        for _ in range(5):
            net._step(X, T, opt, 1 / 512, reduce_grads=reduce)
    reduce.finish()
    assert hook.n == 0
