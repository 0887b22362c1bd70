"""precision="tf32"/"bf16" on a real device: the CUDA backend against the CPU's emulation of the
rounding contract at device-sized shapes, a compiled (CUDA graph) step against train_step bit for
bit, and cuBLAS on the tensor-core path (a bf16 GEMM several times faster than float32). Skipped
when no device is usable (bench/precision_check.py measures the rest)."""

import numpy as np
import pytest

from bp_gpu import MLP, optim
from bp_gpu.backends import cuda_status, simulator_enabled

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        simulator_enabled() or not cuda_status()[0],
        reason=f"needs a CUDA device: {cuda_status()[1] if not simulator_enabled() else 'simulator on'}",
    ),
]


def _flat(grads):
    return np.concatenate([np.concatenate([dW.ravel(), db.ravel()]) for dW, db in grads])


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
@pytest.mark.parametrize("sizes", [[37, 257, 129, 1], [256, 1024, 1024, 3]])
def test_cuda_matches_the_cpu_emulation(precision, sizes):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((1027, sizes[0])).astype(np.float32)
    t = (rng.random((1027, sizes[-1])) < 0.5).astype(np.float32)
    gpu, cpu = (MLP(sizes, precision=precision, backend=b, seed=1) for b in ("cuda", "cpu"))
    (lg, gg), (lc, gc) = gpu.loss_and_grad(X, t), cpu.loss_and_grad(X, t)
    assert lg == pytest.approx(lc, rel=1e-5)
    # The summation order differs; for tf32 also cuBLAS's own operand rounding (docs/math.md).
    tol = 1e-5 if precision == "bf16" else 1e-3
    assert np.linalg.norm(_flat(gg) - _flat(gc)) <= tol * np.linalg.norm(_flat(gc))


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_compiled_step_replays_train_step_bit_for_bit(precision):
    import cupy

    rng = np.random.default_rng(1)
    X = cupy.asarray(rng.standard_normal((512, 64)).astype(np.float32))
    t = cupy.asarray((rng.random((512, 1)) < 0.5).astype(np.float32))
    a, b = (MLP([64, 128, 128, 1], precision=precision, backend="cuda", seed=2) for _ in range(2))
    oa, ob = optim.Adam(a, 1e-2), optim.Adam(b, 1e-2)
    step = b.compile_step(ob, 512)
    for _ in range(3):
        a.train_step(X, t, oa)
        step(X, t)
    np.testing.assert_array_equal(cupy.asnumpy(a._engine.params), cupy.asnumpy(b._engine.params))
    if precision == "bf16":
        np.testing.assert_array_equal(cupy.asnumpy(a._engine.weight_copy), cupy.asnumpy(b._engine.weight_copy))


def test_bf16_gemms_take_the_tensor_core_path():
    from bp_gpu.bench.precision_check import gemm_throughput

    r = gemm_throughput((1024, 1024, 1024, 1024), 4096, repeats=10)
    assert r["tensor_cores"]["float32_over_bf16"] > 3, r
