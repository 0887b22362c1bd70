"""bp_gpu.torch.SigmoidMLP on the CPU: against its nn.Sequential twin (to_torch), in float64 and float32.

Forward and gradients, gradcheck, training with torch.optim, several forwards before their backwards,
state_dict and from_torch round trips, bad input, torch.compile, and DistributedDataParallel over
gloo (two processes). The CUDA path: tests/sim/test_torch_module_sim.py (the simulator) and
tests/test_gpu.py (a device).
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import bp_gpu  # noqa: E402
from bp_gpu.torch import SigmoidMLP  # noqa: E402

F = torch.nn.functional
ARCHS = [[3, 1], [5, 7, 1], [4, 9, 3, 2], [6, 5, 4, 3]]  # depth 1-3; single and several outputs
TOL = {torch.float64: dict(rtol=1e-12, atol=1e-12), torch.float32: dict(rtol=1e-5, atol=1e-5)}


def _pair(sizes, dtype=torch.float64, seed=0):
    m = SigmoidMLP(sizes, dtype=dtype, seed=seed)
    return m, m.to_torch()


def _data(sizes, n, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, sizes[0], generator=g, dtype=dtype)
    t = (torch.rand(n, sizes[-1], generator=g) < 0.5).to(dtype)
    return x, t


def _grads(model):
    return [p.grad.clone() for p in model.parameters()]


def _assert_close(got, want, dtype):
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, **TOL[dtype])


@pytest.mark.parametrize("sizes", ARCHS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_forward_and_gradients_equal_nn_sequential(sizes, dtype):
    """Logits, parameter gradients (in nn.Linear's order) and the input gradient, on 37 rows."""
    m, seq = _pair(sizes, dtype)
    x, t = _data(sizes, 37, dtype)
    xm, xs = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_m, out_s = m(xm), seq(xs)
    torch.testing.assert_close(out_m, out_s, **TOL[dtype])
    F.binary_cross_entropy_with_logits(out_m, t).backward()
    F.binary_cross_entropy_with_logits(out_s, t).backward()
    _assert_close(_grads(m), _grads(seq), dtype)
    torch.testing.assert_close(xm.grad, xs.grad, **TOL[dtype])
    assert [n for n, _ in m.named_parameters()] == [f"{k}_{l}" for l in range(1, len(sizes)) for k in "Wb"]
    assert [p.shape for p in m.parameters()] == [p.shape for p in seq.parameters()]


def test_leading_dimensions_like_nn_linear():
    m, seq = _pair([4, 6, 2])
    x = torch.randn(3, 5, 4, dtype=torch.float64)
    assert m(x).shape == (3, 5, 2)
    torch.testing.assert_close(m(x), seq(x), **TOL[torch.float64])
    assert m(x[0, 0]).shape == (2,)


@pytest.mark.parametrize("sizes", [[3, 1], [4, 5, 1], [3, 4, 2, 3]])
def test_gradcheck_parameters_and_input(sizes):
    m = SigmoidMLP(sizes, dtype=torch.float64, seed=1)
    names = [n for n, _ in m.named_parameters()]
    x = torch.randn(6, sizes[0], dtype=torch.float64, requires_grad=True)
    params = tuple(p.detach().clone().requires_grad_() for p in m.parameters())

    def f(x, *p):
        return torch.func.functional_call(m, dict(zip(names, p)), (x,))

    assert torch.autograd.gradcheck(f, (x, *params))


def test_thirty_adamw_steps_with_a_cosine_schedule_equal_nn_sequential():
    sizes = [5, 8, 6, 1]
    m, seq = _pair(sizes)
    x, t = _data(sizes, 64)
    trained = []
    for model in (m, seq):
        opt = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=30)
        for step in range(30):
            rows = slice(step % 4 * 16, step % 4 * 16 + 16)
            opt.zero_grad()
            F.binary_cross_entropy_with_logits(model(x[rows]), t[rows]).backward()
            opt.step()
            sched.step()
        trained.append([p.detach() for p in model.parameters()])
    _assert_close(trained[0], trained[1], torch.float64)
    assert not torch.equal(trained[0][0], SigmoidMLP(sizes, dtype=torch.float64, seed=0).W_1)


def test_forwards_outstanding_before_their_backwards():
    """Two calls in one graph, then gradient accumulation over two backward calls, all on batches of
    one shape: each call's activations are its own (activations kept in buffers reused per shape
    would be the last call's), so the gradients are those of nn.Sequential doing the same."""
    sizes = [4, 7, 5, 1]
    m, seq = _pair(sizes)
    x1, t1 = _data(sizes, 9, seed=1)
    x2, t2 = _data(sizes, 9, seed=2)
    for model in (m, seq):
        a, b = model(x1), model(x2)  # both forwards before either backward
        (F.binary_cross_entropy_with_logits(a, t1) + (b**2).mean()).backward()
        c, d = model(x2), model(x1)
        F.binary_cross_entropy_with_logits(c, t2).backward()  # accumulates into .grad
        d.sum().backward()
    _assert_close(_grads(m), _grads(seq), torch.float64)


def test_frozen_parameters_and_input_only_gradients():
    sizes = [4, 6, 3]
    m, seq = _pair(sizes)
    x, t = _data(sizes, 11)
    for model in (m, seq):
        list(model.parameters())[0].requires_grad_(False)  # W_1 frozen
        F.binary_cross_entropy_with_logits(model(x), t).backward()
    assert m.W_1.grad is None
    _assert_close([p.grad for p in list(m.parameters())[1:]], [p.grad for p in list(seq.parameters())[1:]],
                  torch.float64)
    for p in m.parameters():
        p.requires_grad_(False)
    xg = x.clone().requires_grad_()
    m(xg).sum().backward()
    xs = x.clone().requires_grad_()
    seq(xs).sum().backward()
    torch.testing.assert_close(xg.grad, xs.grad, **TOL[torch.float64])


def test_a_batch_of_no_rows():
    m = SigmoidMLP([3, 4, 2], dtype=torch.float64, seed=0)
    out = m(torch.empty(0, 3, dtype=torch.float64))
    assert out.shape == (0, 2)
    out.sum().backward()
    assert all(torch.count_nonzero(p.grad) == 0 for p in m.parameters())


def test_initial_weights_are_those_of_bp_gpu_mlp():
    sizes = [6, 5, 4, 2]
    for dtype, np_dtype in ((torch.float32, "float32"), (torch.float64, "float64")):
        m = SigmoidMLP(sizes, dtype=dtype, seed=3)
        want = bp_gpu.MLP(sizes, dtype=np_dtype, backend="cpu", seed=3).get_weights()
        for l, (W, b) in enumerate(want, start=1):
            assert np.array_equal(getattr(m, f"W_{l}").detach().numpy(), W)
            assert np.array_equal(getattr(m, f"b_{l}").detach().numpy(), b)
    torch.manual_seed(5)
    a = SigmoidMLP(sizes)
    torch.manual_seed(5)
    b = SigmoidMLP(sizes)
    assert torch.equal(a.W_1, b.W_1) and not torch.equal(a.W_1, SigmoidMLP(sizes).W_1)


def test_state_dict_round_trip():
    sizes = [4, 6, 2]
    m = SigmoidMLP(sizes, dtype=torch.float64, seed=0)
    other = SigmoidMLP(sizes, dtype=torch.float64, seed=1)
    x = torch.randn(5, 4, dtype=torch.float64)
    assert not torch.equal(other(x), m(x))
    other.load_state_dict(m.state_dict())
    assert list(m.state_dict()) == ["W_1", "b_1", "W_2", "b_2"]
    assert torch.equal(other(x), m(x))


def test_dtype_conversions_like_nn_linear():
    m = SigmoidMLP([4, 6, 2], seed=0)  # float32
    x = torch.randn(5, 4, dtype=torch.float64)
    m.double()  # the parameters are replaced by float64 copies; the module follows them
    torch.testing.assert_close(m(x), m.to_torch()(x), **TOL[torch.float64])
    assert m.to_torch()[0].weight.dtype == torch.float64


def test_from_torch_round_trip():
    m = SigmoidMLP([5, 4, 3, 2], dtype=torch.float64, seed=2)
    back = SigmoidMLP.from_torch(m.to_torch())
    assert back.layer_sizes == m.layer_sizes
    assert all(torch.equal(a, b) for a, b in zip(back.parameters(), m.parameters()))
    seq = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Sigmoid(), torch.nn.Linear(4, 1))
    x = torch.randn(7, 3)
    torch.testing.assert_close(SigmoidMLP.from_torch(seq)(x), seq(x), **TOL[torch.float32])


_L, _S = torch.nn.Linear, torch.nn.Sigmoid


@pytest.mark.parametrize("seq, match", [
    (torch.nn.Sequential(_L(3, 4), torch.nn.ReLU(), _L(4, 1)), r"layer 1 is ReLU, expected Sigmoid"),
    (torch.nn.Sequential(_L(3, 4), _S(), _L(4, 1), _S()), r"the last layer \(3\) is Sigmoid; it must be Linear"),
    (torch.nn.Sequential(_L(3, 4), _L(4, 1)), r"layer 1 is Linear, expected Sigmoid"),
    (torch.nn.Sequential(_L(3, 4), _S(), _L(5, 1)), r"layer 2 \(Linear\) takes 5 inputs but the Linear before it"),
    (torch.nn.Sequential(_L(3, 4, bias=False), _S(), _L(4, 1)), r"layer 0 \(Linear\) has no bias"),
    (torch.nn.Sequential(), r"empty"),
    (_L(3, 1), r"needs an nn.Sequential"),
    (torch.nn.Sequential(_L(3, 4).half(), _S(), _L(4, 1).half()), r"torch.float16"),
    (torch.nn.Sequential(_L(3, 4), _S(), _L(4, 1).double()), r"layer 2's parameters are torch.float64"),
])
def test_from_torch_refuses_other_models(seq, match):
    with pytest.raises(ValueError, match=match):
        SigmoidMLP.from_torch(seq)


def test_bad_input_names_both_sides():
    m = SigmoidMLP([4, 3, 1], seed=0)
    with pytest.raises(ValueError, match=r"x has 5 features .* SigmoidMLP expects 4 \(layer_sizes\[0\]\)"):
        m(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"x is torch.float64 but SigmoidMLP's parameters are torch.float32"):
        m(torch.randn(2, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"x is on meta but SigmoidMLP's parameters are on cpu"):
        m(torch.empty(2, 4, device="meta"))
    with pytest.raises(ValueError, match=r"0-d tensor"):
        m(torch.tensor(1.0))
    with pytest.raises(TypeError, match=r"must be a torch.Tensor; got ndarray"):
        m(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"x is torch.bfloat16 .*torch.autocast does not cast"):
        m(torch.randn(2, 4, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match=r"parameter W_1 is torch.float16"):
        SigmoidMLP([4, 1], seed=0).half()(torch.randn(2, 4).half())
    with pytest.raises(ValueError, match=r"parameters are on meta"):
        SigmoidMLP([4, 1], seed=0).to("meta")(torch.empty(2, 4, device="meta"))


def test_cuda_tensors_without_a_usable_cuda_backend_say_why():
    from bp_gpu.backends import cuda_status
    from bp_gpu.torch.function import backend_for

    if cuda_status()[0]:
        pytest.skip("the CUDA backend is usable here")
    with pytest.raises(bp_gpu.BackendUnavailableError, match=r"SigmoidMLP on CUDA tensors needs bp_gpu's CUDA"):
        backend_for(torch.device("cuda", 0))


def test_without_torch_the_import_says_how_to_install_it(monkeypatch):
    for name in [m for m in sys.modules if m == "bp_gpu.torch" or m.startswith("bp_gpu.torch.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    with pytest.raises(ImportError, match=r"bp_gpu.torch needs PyTorch.*pip install 'bp_gpu\[torch\]'"):
        import bp_gpu.torch  # noqa: F401


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match=r"dtype must be torch.float32 or torch.float64"):
        SigmoidMLP([3, 1], dtype=torch.float16)
    with pytest.raises(ValueError, match=r"layer_sizes\[1\] must be >= 1"):
        SigmoidMLP([3, 0])
    with pytest.raises(ValueError, match=r"precision must be one of 'highest', 'tf32', 'bf16'"):
        SigmoidMLP([3, 1], precision="fp16")
    with pytest.raises(ValueError, match=r"precision='bf16' needs dtype='float32'.*got dtype='float64'"):
        SigmoidMLP([3, 1], dtype=torch.float64, precision="bf16")


def _contract(m, x, t, precision):
    """The rounding contract (docs/math.md) in float64 on bp_gpu.precision's rounding: GEMM operands
    rounded, everything else the float32 values; returns (logits, [dW_1, db_1, ...], dX) of the
    mean BCE-with-logits loss."""
    from bp_gpu.precision import round_bf16, round_tf32

    r = {"bf16": round_bf16, "tf32": round_tf32}[precision]

    def mm(a, b):  # float32 products of rounded operands, summed (here in float64)
        return r(np.asarray(a, np.float32)).astype(np.float64) @ r(np.asarray(b, np.float32)).astype(np.float64)

    Ws = [p.detach().numpy() for p in m.parameters()][0::2]
    bs = [p.detach().numpy() for p in m.parameters()][1::2]
    z, Zs = x.numpy(), []
    for W, b in zip(Ws[:-1], bs[:-1]):
        z = (1 / (1 + np.exp(-(mm(z, W.T) + b)))).astype(np.float32)
        Zs.append(z)
    a = (mm(z, Ws[-1].T) + bs[-1]).astype(np.float32)
    D = ((1 / (1 + np.exp(-a.astype(np.float64))) - t.numpy()) / t.numel()).astype(np.float32)
    grads = []
    for l in range(len(Ws) - 1, -1, -1):
        below = Zs[l - 1] if l else x.numpy()
        grads[:0] = [mm(D.T, below), D.sum(axis=0, dtype=np.float64)]
        G = mm(D, Ws[l])
        D = (G * below * (1 - below)).astype(np.float32) if l else G
    return a, grads, D


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
@pytest.mark.parametrize("sizes", [[5, 7, 1], [6, 9, 4, 3]])  # below a single unit; several outputs
def test_mixed_precision_follows_the_rounding_contract(sizes, precision):
    """tf32/bf16: the logits and gradients (the input's too) are those of the rounding contract
    computed in float64 (to ~1e-6: the order of the sums), and differ from precision="highest" by the
    format's precision; the weights stay float32."""
    m = SigmoidMLP(sizes, dtype=torch.float32, seed=2, precision=precision)
    x, t = _data(sizes, 23, torch.float32, seed=3)
    xm = x.clone().requires_grad_()
    a = m(xm)
    F.binary_cross_entropy_with_logits(a, t).backward()
    want_a, want_grads, want_dx = _contract(m, x, t, precision)
    np.testing.assert_allclose(a.detach().numpy(), want_a, rtol=1e-5, atol=1e-6)
    for got, want in zip(_grads(m), want_grads, strict=True):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=2e-7)
    np.testing.assert_allclose(xm.grad.numpy(), want_dx, rtol=1e-4, atol=2e-7)
    highest = SigmoidMLP(sizes, dtype=torch.float32, seed=2)
    F.binary_cross_entropy_with_logits(highest(x), t).backward()
    differ = max(float((p.grad - q.grad).abs().max() / q.grad.abs().max()) for p, q in zip(m.parameters(),
                                                                                        highest.parameters()))
    assert 1e-6 < differ < 5e-2, differ
    assert all(p.dtype == torch.float32 for p in m.parameters())


def test_torch_compile_equals_eager():
    """torch.compile(m) (default backend), and a model mixing it with other layers compiled with
    Dynamo and AOTAutograd (aot_eager: the same graphs and graph break, without Inductor's C++
    build): forward and gradients equal eager."""
    sizes = [4, 6, 1]
    m = SigmoidMLP(sizes, dtype=torch.float64, seed=0)
    x, t = _data(sizes, 10)
    torch.testing.assert_close(torch.compile(m)(x), m(x), rtol=0, atol=0)

    def mixed():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(4, 4, dtype=torch.float64), torch.nn.Tanh(),
                                   SigmoidMLP(sizes, dtype=torch.float64, seed=0), torch.nn.Softplus())

    eager, compiled = mixed(), mixed()
    run = torch.compile(compiled, backend="aot_eager")
    eager(x).mean().backward()
    run(x).mean().backward()
    torch.testing.assert_close(run(x), eager(x), rtol=0, atol=1e-15)
    _assert_close(_grads(compiled), _grads(eager), torch.float64)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_distributed_data_parallel_on_gloo_equals_one_process_on_the_union(tmp_path):
    """Two processes, each DDP(SigmoidMLP) on every other row, AdamW: both end with the parameters of
    one process trained on all rows (DDP averages the gradients; the mean loss of the union is the
    mean of the two halves' means)."""
    sizes, steps = [5, 6, 1], 4
    x, t = _data(sizes, 40)
    torch.save({"x": x, "t": t, "sizes": sizes, "steps": steps}, tmp_path / "data.pt")
    worker = Path(__file__).parent / "torch_jobs" / "ddp_train.py"
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, str(worker), str(r), "2", str(port), str(tmp_path / "data.pt"),
                               str(tmp_path / f"rank{r}.pt")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, start_new_session=True) for r in range(2)]
    deadline = time.monotonic() + 150  # a hang's bound; the two processes take a few seconds
    hung = False
    try:
        results = [p.communicate(timeout=max(1.0, deadline - time.monotonic())) for p in procs]
    except subprocess.TimeoutExpired:
        hung = True
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    if hung:
        results = [p.communicate() for p in procs]
    for r, (p, (_, err)) in enumerate(zip(procs, results)):
        assert not hung and p.returncode == 0, f"rank {r} exited with {p.returncode} (hung: {hung}):\n{err[-3000:]}"

    m = SigmoidMLP(sizes, dtype=torch.float64, seed=0)
    opt = torch.optim.AdamW(m.parameters(), lr=0.05, weight_decay=0.01)
    for _ in range(steps):
        opt.zero_grad()
        F.binary_cross_entropy_with_logits(m(x), t).backward()
        opt.step()
    for r in range(2):
        got = torch.load(tmp_path / f"rank{r}.pt")
        for name, p in m.named_parameters():
            torch.testing.assert_close(got[name], p.detach(), rtol=1e-10, atol=1e-12)


def test_bench_peers_train_the_same_steps():
    """bench/torch_module.py's three peers (SigmoidMLP, its nn.Sequential twin, bp_gpu's train_step)
    on the tiny workload: the same losses (no timing is asserted); its device part says why it
    cannot run without CUDA."""
    from bp_gpu.bench import torch_module as bench

    rows = [bench.measure_cpu(p, "quick", threads=1, target_s=0.02) for p in bench.PEERS]
    losses = {r["peer"]: r["loss"] for r in rows}
    for p in bench.PEERS:
        assert losses[p] == pytest.approx(losses["torch-eager"], rel=1e-5), losses
    summary = bench.summarize(rows)
    assert {r["peer"]: r["x_ref"] for r in summary}["torch-eager"] == 1.0
    assert "sigmoidmlp" in bench.format_rows(summary)
    assert "sigmoidmlp" in bench.format_phases(bench.phases(["quick"], rounds=1, threads=1))
    if not torch.cuda.is_available():
        res = bench.device_part(5)
        assert not res["ok"] and "no CUDA" in res["error"]
