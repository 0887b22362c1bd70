"""The CUDA backend on a real device: kernels vs the NumPy reference at device-sized shapes,
cuda vs cpu on random problems, determinism. Skipped when no device is usable."""

import numpy as np
import pytest

import bp_gpu
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

    D = rng.standard_normal((shape[0], 1)).astype(dtype)
    W = rng.standard_normal((1, shape[1])).astype(dtype)
    Go0, dbo0 = np.empty(shape, dtype), np.empty(shape[1], dtype)
    ref.outer_sigmoid_delta_backward(D, W, Z, Go0, dbo0)
    Go1, dbo1 = cp.empty(shape, dtype), cp.empty(shape[1], dtype)
    K.outer_sigmoid_delta_backward(cp.asarray(D), cp.asarray(W), cp.asarray(Z), Go1, dbo1)
    np.testing.assert_allclose(Go1.get(), Go0, **TOL[dtype])
    _assert_column_sums(dbo1.get(), Go1.get(), dtype)


def _hyper():
    from bp_gpu.optim import hyper as H

    h = np.zeros(H.N_HYPER)
    h[[H.SCHEDULE, H.LR, H.WARMUP, H.TOTAL, H.FINAL]] = H.WARMUP_COSINE, 0.01, 1, 5, 0.0
    h[[H.BETA1, H.BETA2, H.EPS, H.WEIGHT_DECAY]] = 0.9, 0.999, 1e-8, 1e-3
    return h


@pytest.mark.parametrize("rule", [0, 1, 2, 3])  # SGD, MOMENTUM, ADAM, ADAMW
def test_optimizer_update_matches_reference(cp, rule, rng):
    from bp_gpu.cuda_host import CUDA_STEPS as K

    n, n_w = 1_000_003, 999_000
    rows = (0, 1, 2, 2)[rule]
    p, g = rng.standard_normal(n), rng.standard_normal(n)
    st = rng.random((rows, n)) * 0.1 if rows else np.zeros((1, 1))
    host = [p.copy(), st.copy(), _hyper()]
    dev = [cp.asarray(x) for x in host]
    for _ in range(3):  # the step count and the scheduled rate advance on the device
        ref.optimizer_update(rule, host[0], g, host[1], host[2], n_w)
        K.optimizer_update(rule, dev[0], cp.asarray(g), dev[1], dev[2], n_w)
    for x, y in zip(dev, host):
        np.testing.assert_allclose(x.get(), y, rtol=1e-12, atol=1e-15)


def test_lamb_update_matches_reference(cp, rng):
    from bp_gpu.cuda_host import CUDA_STEPS as K

    segments = np.array([0, 700_000, 999_000, 999_700, 1_000_003], dtype=np.int64)
    n = int(segments[-1])
    p, g = rng.standard_normal(n), rng.standard_normal(n)
    host = [p.copy(), np.zeros((2, n)), _hyper()]
    dev = [cp.asarray(x) for x in host]
    for _ in range(3):
        ref.lamb_update(host[0], g, host[1], host[2], 999_000, segments)
        K.lamb_update(dev[0], cp.asarray(g), dev[1], dev[2], 999_000, segments)
    for x, y in zip(dev, host):
        np.testing.assert_allclose(x.get(), y, rtol=1e-10, atol=1e-13)


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
    from bp_gpu.optim import Adam
    from bp_gpu.train import ArraySource, ResidentBatches, StreamedBatches, TrainState, make_batches, train

    X = rng.standard_normal((1001, 7))  # batches of 96: a ragged last one
    T = (rng.random((1001, 2)) < 0.5).astype(float)
    runs = []
    for backend, where in (("cpu", "device"), ("cuda", placement)):
        net = MLP([7, 16, 2], backend=backend, dtype="float64", seed=5)
        opt = Adam(net, 0.01, weight_decay=1e-3)
        state = TrainState(rng=np.random.default_rng(9))
        if backend == "cuda":
            want = StreamedBatches if placement == "stream" else ResidentBatches
            assert type(make_batches(net._engine, X, T, 96, placement)) is want
        interrupted = train(net, opt, state, ArraySource(net._engine, X, T, 96, where), epochs=3)
        assert not interrupted
        runs.append((net.get_weights(), state.loss_curve, opt.state_arrays()))
    (w_gpu, curve_gpu, mv_gpu), (w_cpu, curve_cpu, mv_cpu) = runs[1], runs[0]
    np.testing.assert_allclose(curve_gpu, curve_cpu, rtol=1e-10)
    for (W1, b1), (W0, b0) in zip(w_gpu, w_cpu):
        np.testing.assert_allclose(W1, W0, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(b1, b0, rtol=1e-9, atol=1e-12)
    for a, b in zip(mv_gpu, mv_cpu):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-15)


def test_streamed_epoch_equals_resident_bit_for_bit_with_the_device_lagging(cp, rng):
    """StreamedBatches copies each batch on its copy stream into one of two device buffers, ordered
    by events. Here the compute stream is held by a sleeping kernel after every step, so the host
    and the copy stream run ahead of the steps as far as the events let them: a copy that
    overwrote a device buffer before the step reading it had run would change the result, which
    must equal the device-resident epoch's (same batches, same kernels) bit for bit."""
    import warnings

    from bp_gpu.kernels import _launch
    from numba import cuda
    from numba.cuda.core.errors import NumbaPerformanceWarning

    from bp_gpu.train import ArraySource, StreamedBatches, run_epoch

    @cuda.jit
    def sleep(n):
        for _ in range(n):
            cuda.nanosleep(1000)

    def hold_device(n_rows):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NumbaPerformanceWarning)
            sleep[1, 1, _launch.stream()](500)

    X = rng.standard_normal((2000, 9)).astype(np.float32)
    T = (rng.random((2000, 1)) < 0.5).astype(np.float32)
    order = rng.permutation(2000)
    runs = []
    for placement in ("device", "stream"):
        net = MLP([9, 17, 1], backend="cuda", dtype="float32", seed=3)
        opt = bp_gpu.optim.Adam(net, 0.01)
        source = ArraySource(net._engine, X, T, 128, placement)
        assert isinstance(source.batches, StreamedBatches) == (placement == "stream")
        losses = [run_epoch(net, opt, source, None, on_batch=hold_device, order=order) for _ in range(2)]
        runs.append((losses, net._engine.params.get()))
    assert runs[0][0] == runs[1][0]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


def test_classifier_early_stopping_matches_cpu(cp, rng):
    """MLPClassifier end to end on the device: validation scoring on device arrays, the best
    epoch's snapshot restored, prediction in chunks, CuPy input accepted."""
    from bp_gpu import MLPClassifier

    X = rng.standard_normal((600, 5))
    y = X[:, :3].argmax(axis=1)
    kw = dict(hidden_layer_sizes=(12,), batch_size=64, epochs=8, learning_rate=0.01, random_state=2,
              dtype="float64", early_stopping=True, n_iter_no_change=3)
    gpu = MLPClassifier(backend="cuda", **kw).fit(X, y)
    cpu = MLPClassifier(backend="cpu", **kw).fit(X, y)
    assert gpu.n_iter_ == cpu.n_iter_
    np.testing.assert_allclose(gpu.loss_curve_, cpu.loss_curve_, rtol=1e-10)
    assert gpu.validation_scores_ == cpu.validation_scores_
    np.testing.assert_allclose(gpu.predict_proba(X), cpu.predict_proba(X), rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(gpu.predict_proba(cp.asarray(X)), cpu.predict_proba(X), rtol=1e-9,
                               atol=1e-14)


def test_training_from_a_data_set_matches_cpu(cp, rng, tmp_path):
    """DatasetSource's CuPy path: the reader's host batches copied through DeviceStaging's pinned
    buffers on the copy stream (events, two slots), with standardisation and early stopping on
    held-out chunks; the same batches as the CPU backend, so float64 agrees to rounding."""
    import bp_gpu.data as bd
    from bp_gpu import MLPClassifier

    X = rng.standard_normal((3001, 6)) * 5 + 3
    y = np.array(["a", "b", "c"])[X[:, :3].argmax(axis=1)]
    np.save(tmp_path / "d.npy", np.column_stack([X, X[:, :3].argmax(axis=1)]))
    kw = dict(hidden_layer_sizes=(16,), batch_size=96, epochs=4, learning_rate=0.01, random_state=2, dtype="float64",
              early_stopping=True, n_iter_no_change=3, standardize=True)
    for ds in (bd.from_arrays(X, y, chunk_rows=250), bd.open(tmp_path / "d.npy", target=6, chunk_rows=250)):
        gpu = MLPClassifier(backend="cuda", **kw).fit(ds)
        cpu = MLPClassifier(backend="cpu", **kw).fit(ds)
        assert gpu.n_iter_ == cpu.n_iter_ and gpu.validation_scores_ == cpu.validation_scores_
        np.testing.assert_allclose(gpu.loss_curve_, cpu.loss_curve_, rtol=1e-10)
        np.testing.assert_allclose(gpu.predict_proba(ds), cpu.predict_proba(ds), rtol=1e-9, atol=1e-14)
        np.testing.assert_allclose(gpu.predict_proba(cp.asarray(X)), cpu.predict_proba(X), rtol=1e-9, atol=1e-14)


# -- the step API on the device ----------------------------------------------------------------------
STEP_OPTIMIZERS = {
    "sgd": lambda n, lr: bp_gpu.optim.SGD(n, lr, weight_decay=0.01),
    "momentum": lambda n, lr: bp_gpu.optim.SGD(n, lr, momentum=0.9),
    "adam": lambda n, lr: bp_gpu.optim.Adam(n, lr, weight_decay=0.01),
    "adamw": lambda n, lr: bp_gpu.optim.AdamW(n, lr, weight_decay=0.05),
    "lamb": lambda n, lr: bp_gpu.optim.LAMB(n, lr, weight_decay=0.01),
}


@pytest.mark.parametrize("B,K,O", [(1, 1, 1), (7, 33, 5), (257, 129, 10), (1, 5, 1), (3, 1, 4), (1024, 784, 512)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_prepared_gemm_matches_cupy_matmul(cp, B, K, O, dtype, rng):
    """cublasGemmEx through ctypes (bp_gpu.cublas_gemm) against cupy.matmul, for the three GEMMs of
    the engine; with X as a slot too. Bitwise equality is not assumed (different workspaces)."""
    from bp_gpu.cublas_gemm import PreparedGemm
    from bp_gpu.plan import X as X_SLOT

    X = cp.asarray(rng.standard_normal((B, K)), dtype)
    W = cp.asarray(rng.standard_normal((O, K)), dtype)
    D = cp.asarray(rng.standard_normal((B, O)), dtype)
    tol = dict(rtol=1e-5, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    for a, b in ((X, W.T), (D.T, X), (D, W)):
        out = cp.empty((a.shape[0], b.shape[1]), dtype)
        PreparedGemm(a, b, out)()
        np.testing.assert_allclose(out.get(), (a @ b).get(), **tol)
    out = cp.empty((B, O), dtype)
    PreparedGemm(X_SLOT, W.T, out)(X)
    np.testing.assert_allclose(out.get(), (X @ W.T).get(), **tol)
    out = cp.empty((O, K), dtype)
    PreparedGemm(D.T, X_SLOT, out)(X)
    np.testing.assert_allclose(out.get(), (D.T @ X).get(), **tol)


@pytest.mark.parametrize("name", list(STEP_OPTIMIZERS))
def test_train_step_matches_cpu(cp, name, rng):
    sched = bp_gpu.optim.warmup_cosine(0.02, warmup_steps=3, total_steps=20)
    nets = [MLP([31, 64, 17, 3], backend=b, dtype="float64", seed=4) for b in ("cuda", "cpu")]
    opts = [STEP_OPTIMIZERS[name](n, sched) for n in nets]
    for _ in range(12):
        X = rng.standard_normal((300, 31))
        t = (rng.random((300, 3)) < 0.5).astype(float)
        loss = nets[0].train_step(cp.asarray(X), cp.asarray(t), opts[0])
        assert isinstance(loss, cp.ndarray) and loss.shape == ()
        assert float(loss) == pytest.approx(float(nets[1].train_step(X, t, opts[1])), rel=1e-10)
    for (W1, b1), (W0, b0) in zip(nets[0].get_weights(), nets[1].get_weights()):
        np.testing.assert_allclose(W1, W0, rtol=1e-8, atol=1e-11)
        np.testing.assert_allclose(b1, b0, rtol=1e-8, atol=1e-11)
    assert opts[0].step_count == 12


@pytest.mark.parametrize("name", list(STEP_OPTIMIZERS))
@pytest.mark.parametrize("sizes", [[28, 64, 64, 1], [96, 33, 5]])
def test_compiled_step_graph_replays_train_step_bit_for_bit(cp, name, sizes, rng):
    """The CUDA graph (captured once) against eager train_step: the same calls on the same handles'
    kind, so the same bits, step after step, through the warm-up and decay of a schedule."""
    sched = bp_gpu.optim.warmup_linear(0.05, warmup_steps=2, total_steps=8)
    a, b = (MLP(sizes, backend="cuda", dtype="float32", seed=6) for _ in range(2))
    oa, ob = STEP_OPTIMIZERS[name](a, sched), STEP_OPTIMIZERS[name](b, sched)
    step = b.compile_step(ob, 256)
    np.testing.assert_array_equal(a._engine.params.get(), b._engine.params.get())  # compiling changed nothing
    for _ in range(10):
        X = cp.asarray(rng.standard_normal((256, sizes[0])), cp.float32)
        t = cp.asarray(rng.random((256, sizes[-1])) < 0.5, cp.float32)
        assert float(a.train_step(X, t, oa)) == float(step(X, t))
    np.testing.assert_array_equal(a._engine.params.get(), b._engine.params.get())
    assert ob.step_count == 10 and oa.last_learning_rate == ob.last_learning_rate


def test_device_inputs_are_used_in_place(cp, rng):
    from bp_gpu import _validate as V

    X = cp.asarray(rng.standard_normal((50, 7)), cp.float32)
    assert V.check_features(X, 7, np.dtype(np.float32), cp, values=None) is X  # no copy, no sync
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch here has no CUDA")
    Xt = torch.randn(50, 7, device="cuda")
    Xc = V.check_features(Xt, 7, np.dtype(np.float32), cp, values=None)
    assert Xc.data.ptr == Xt.data_ptr()  # DLPack: the tensor's own memory
    net = MLP([7, 5, 1], backend="cuda", seed=0)
    opt = bp_gpu.optim.Adam(net, 0.01)
    t = (torch.rand(50, 1, device="cuda") < 0.5).float()
    loss = net.train_step(Xt, t, opt)
    assert isinstance(loss, cp.ndarray) and np.isfinite(float(loss))
    assert isinstance(net.predict_proba(Xt), cp.ndarray)


# -- bp_gpu.torch.SigmoidMLP on CUDA tensors (issue 19) --------------------------------------------
TORCH_MODULE_TOL = {"float64": dict(rtol=1e-11, atol=1e-12), "float32": dict(rtol=1e-4, atol=1e-5)}


@pytest.fixture
def torch_cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch here has no CUDA")
    return torch


def _torch_module_step(torch, model, x, t):
    """Logits and the gradients (parameters in nn.Linear's order, then x's) of one BCE step."""
    xa = x.clone().requires_grad_()
    out = model(xa)
    torch.nn.functional.binary_cross_entropy_with_logits(out, t).backward()
    return [out.detach()] + [p.grad.clone() for p in model.parameters()] + [xa.grad]


@pytest.mark.parametrize("sizes", [[33, 257, 129, 1], [16, 64, 3]])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("stream", ["current", "side"])
def test_torch_module_matches_nn_sequential_on_cuda(cp, torch_cuda, sizes, dtype, stream):
    """SigmoidMLP on CUDA tensors (CuPy views through DLPack, our kernels and cublasGemmEx on
    PyTorch's current stream) against its nn.Sequential twin; on a side stream too, where launching
    on any other stream would race with PyTorch's work on it."""
    torch = torch_cuda
    dt = getattr(torch, dtype)
    from bp_gpu.torch import SigmoidMLP

    m = SigmoidMLP(sizes, dtype=dt, device="cuda", seed=0)
    seq = m.to_torch()
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(4099, sizes[0], device="cuda", dtype=dt, generator=g)
    t = (torch.rand(4099, sizes[-1], device="cuda", generator=g) < 0.5).to(dt)
    s = torch.cuda.Stream() if stream == "side" else torch.cuda.current_stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        got = _torch_module_step(torch, m, x, t)
        want = _torch_module_step(torch, seq, x, t)
    torch.cuda.synchronize()
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, **TORCH_MODULE_TOL[dtype])


def test_torch_module_gradients_bit_identical_run_to_run(cp, torch_cuda):
    torch = torch_cuda
    from bp_gpu.torch import SigmoidMLP

    m = SigmoidMLP([28, 64, 64, 1], device="cuda", seed=1)
    x = torch.randn(1024, 28, device="cuda")
    t = (torch.rand(1024, 1, device="cuda") < 0.5).float()
    first = _torch_module_step(torch, m, x, t)
    m.zero_grad()
    again = _torch_module_step(torch, m, x, t)
    for a, b in zip(first[1:], again[1:], strict=True):
        assert torch.equal(a, b)


def test_torch_module_training_matches_cpu(cp, torch_cuda):
    """20 AdamW steps on CUDA tensors equal the same on CPU tensors (float64)."""
    torch = torch_cuda
    from bp_gpu.torch import SigmoidMLP

    g = torch.Generator().manual_seed(2)
    x = torch.randn(512, 12, dtype=torch.float64, generator=g)
    t = (torch.rand(512, 2, generator=g) < 0.5).double()
    trained = []
    for dev in ("cuda", "cpu"):
        m = SigmoidMLP([12, 31, 2], dtype=torch.float64, device=dev, seed=2)
        opt = torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.01)
        for k in range(20):
            rows = slice(k % 4 * 128, k % 4 * 128 + 128)
            opt.zero_grad()
            torch.nn.functional.binary_cross_entropy_with_logits(m(x[rows].to(dev)), t[rows].to(dev)).backward()
            opt.step()
        trained.append([p.detach().cpu() for p in m.parameters()])
    for a, b in zip(*trained, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
