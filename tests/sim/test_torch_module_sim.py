"""bp_gpu.torch.SigmoidMLP's CUDA path in the simulator: CPU tensors stand in for CUDA ones.

Under NUMBA_ENABLE_CUDASIM=1 the module runs the CUDA backend's host code (``CudaSteps.bind``, the
kernels' prepared launches, per-call buffers) with the kernels simulated, on NumPy views of the
tensors, against the module's nn.Sequential twin computed by PyTorch. What the simulator cannot
show (DLPack into CuPy, PyTorch's stream as CuPy's, cuBLAS on PyTorch's memory, no host sync) is
left to tests/test_gpu.py and the device check (bench/torch_module.py).
"""

import pytest

torch = pytest.importorskip("torch")

from bp_gpu.torch import SigmoidMLP  # noqa: E402

F = torch.nn.functional
TOL = {torch.float64: dict(rtol=1e-12, atol=1e-13), torch.float32: dict(rtol=2e-5, atol=1e-6)}


def _data(sizes, n, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, sizes[0], generator=g, dtype=dtype), (torch.rand(n, sizes[-1], generator=g) < 0.5).to(dtype)


@pytest.mark.sim
def test_cpu_tensors_take_the_cuda_backend():
    from bp_gpu.cuda_host import CUDA_STEPS
    from bp_gpu.torch.function import backend_for

    assert backend_for(torch.device("cpu")).run.steps is CUDA_STEPS


@pytest.mark.sim
@pytest.mark.parametrize("sizes", [[5, 7, 1], [4, 9, 3, 2]])  # the fused outer step; GEMM + sigmoid-delta step
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_two_forwards_then_backwards_equal_nn_sequential(sizes, dtype):
    """Logits, then the gradients of two forwards of one shape taken before either backward, the
    input's included."""
    m = SigmoidMLP(sizes, dtype=dtype, seed=0)
    seq = m.to_torch()
    (x1, t1), (x2, _) = _data(sizes, 11, dtype, 1), _data(sizes, 11, dtype, 2)
    grads = []
    for model in (m, seq):
        xa = x1.clone().requires_grad_()
        a, b = model(xa), model(x2)
        (F.binary_cross_entropy_with_logits(a, t1) + b.pow(2).mean()).backward()
        grads.append([p.grad for p in model.parameters()] + [xa.grad])
    torch.testing.assert_close(m(x1), seq(x1), **TOL[dtype])
    for got, want in zip(*grads, strict=True):
        torch.testing.assert_close(got, want, **TOL[dtype])


@pytest.mark.sim
def test_adamw_steps_equal_nn_sequential():
    sizes = [4, 6, 1]
    m = SigmoidMLP(sizes, dtype=torch.float64, seed=3)
    seq = m.to_torch()
    x, t = _data(sizes, 9, torch.float64, 4)
    for model in (m, seq):
        opt = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.01)
        for _ in range(3):
            opt.zero_grad()
            F.binary_cross_entropy_with_logits(model(x), t).backward()
            opt.step()
    for got, want in zip(m.parameters(), seq.parameters(), strict=True):
        torch.testing.assert_close(got, want, **TOL[torch.float64])


@pytest.mark.sim
def test_a_strided_parameter_is_made_contiguous_where_autograd_sees_it():
    """The kernels and cuBLAS take C-contiguous weights: a strided one (here the output layer's, read
    by the fused outer step) is copied by the module, and its gradient still reaches it."""
    sizes = [4, 6, 1]
    m = SigmoidMLP(sizes, dtype=torch.float64, seed=0)
    seq = m.to_torch()
    with torch.no_grad():
        buf = torch.zeros(1, 12, dtype=torch.float64)
        buf[:, ::2] = m.W_2
        m.W_2.data = buf[:, ::2]
    assert not m.W_2.is_contiguous()
    x, t = _data(sizes, 7, torch.float64, 5)
    for model in (m, seq):
        F.binary_cross_entropy_with_logits(model(x), t).backward()
    for got, want in zip(m.parameters(), seq.parameters(), strict=True):
        torch.testing.assert_close(got.grad, want.grad, **TOL[torch.float64])


@pytest.mark.sim
@pytest.mark.parametrize("precision", ["tf32", "bf16"])
@pytest.mark.parametrize("sizes", [[5, 7, 1], [4, 9, 3, 2]])
def test_mixed_precision_on_the_cuda_path_equals_the_engines(sizes, precision):
    """tf32/bf16 through the CUDA backend's rounding kernels and GEMMs (the simulator's): the gradient
    of the summed BCE loss equals bp_gpu.MLP's in the same precision with the same weights (to the
    float32 rounding of the output delta, which PyTorch computes here and the engine's kernel there)."""
    import numpy as np

    import bp_gpu

    m = SigmoidMLP(sizes, dtype=torch.float32, seed=4, precision=precision)
    x, t = _data(sizes, 19, torch.float32, seed=5)
    F.binary_cross_entropy_with_logits(m(x), t, reduction="sum").backward()
    net = bp_gpu.MLP(sizes, backend="cuda", seed=4, precision=precision)  # the same initial weights
    _, want = net.loss_and_grad(x.numpy(), t.numpy(), reduction="sum")
    got = [p.grad.numpy() for p in m.parameters()]
    for g, w in zip(got, [a for pair in want for a in pair], strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-7)
