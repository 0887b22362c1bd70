"""Mixed precision on the CPU backend: the rounding spec against ml_dtypes and a hand-written
reference, the gradient of each precision against a float64 computation of the rounding contract,
the rounded copies the steps and the optimizer write, and training quality (docs/math.md)."""

import numpy as np
import pytest

from bp_gpu import MLP, optim
from bp_gpu import precision as P
from bp_gpu.engine import Engine
from bp_gpu.plan import run

ml_dtypes = pytest.importorskip("ml_dtypes", reason="ml_dtypes is part of the test extra (pip install -e '.[test]')")

FINITE_SPECIALS = np.array(
    [0.0, -0.0, 1.0, -1.0, np.finfo(np.float32).max, -np.finfo(np.float32).max, np.finfo(np.float32).tiny,
     np.finfo(np.float32).smallest_subnormal, -np.finfo(np.float32).smallest_subnormal, np.inf, -np.inf],
    dtype=np.float32,
)


def _bits(u):
    return np.asarray(u, dtype=np.uint32).view(np.float32)


def _ties(dropped):
    """Every value exactly halfway between two neighbours of the format, for every exponent (normal
    and subnormal) and every kept mantissa of up to 7 bits, both signs: the cases ties-to-even decides."""
    exps = np.arange(256, dtype=np.uint32) << np.uint32(23)
    kept = np.arange(128, dtype=np.uint32) << np.uint32(dropped)
    half = np.uint32(1 << (dropped - 1))
    u = (exps[:, None] | kept[None, :] | half).ravel()
    u = np.concatenate([u, u | np.uint32(0x80000000)])
    return _bits(u[(u & np.uint32(0x7FFFFFFF)) < np.uint32(0x7F800000)])  # no NaN, no inf


def _random_floats(rng, n=1_000_000):
    return _bits(rng.integers(0, 2**32, size=n, dtype=np.uint64).astype(np.uint32))


# -- the rounding spec ----------------------------------------------------------------------------------
def test_round_bf16_is_ml_dtypes_bfloat16_bit_for_bit(rng):
    x = np.concatenate([_random_floats(rng), _ties(16), FINITE_SPECIALS])
    nan = np.isnan(x)
    with np.errstate(invalid="ignore"):
        want = x.astype(ml_dtypes.bfloat16).astype(np.float32)
    got = P.round_bf16(x)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got.view(np.uint32)[~nan], want.view(np.uint32)[~nan])
    assert np.isnan(got[nan]).all() and nan.sum() > 1000  # about 1 in 256 random bit patterns
    np.testing.assert_array_equal(P.from_bf16_bits(P.bf16_bits(x))[~nan], got[~nan])
    assert (got.view(np.uint32) & np.uint32(0xFFFF) == 0).all()  # representable: the low half is 0


def _tf32_by_arithmetic(x):
    """TF32 rounding written without the bit trick: in float64, the nearest multiple (ties to even,
    ``np.rint``) of the TF32 quantum 2^(E - 10) of x's binade E (2^-136 below float32's normals),
    then back to float32 (exact; past the largest TF32 value, inf)."""
    x64 = x.astype(np.float64)
    _, e = np.frexp(x64)  # x = m 2^e, 0.5 <= |m| < 1: the binade is E = e - 1
    quantum = np.ldexp(1.0, np.maximum(e - 1, -126) - 10)
    with np.errstate(over="ignore"):
        return (np.rint(x64 / quantum) * quantum).astype(np.float32)


def test_round_tf32_is_nearest_even_with_ten_mantissa_bits(rng):
    x = np.concatenate([_random_floats(rng), _ties(13), FINITE_SPECIALS])
    finite = np.isfinite(x)
    got = P.round_tf32(x)
    np.testing.assert_array_equal(got[finite].view(np.uint32), _tf32_by_arithmetic(x[finite]).view(np.uint32))
    np.testing.assert_array_equal(got[np.isinf(x)], x[np.isinf(x)])
    assert np.isnan(got[np.isnan(x)]).all()
    assert (got[finite].view(np.uint32) & np.uint32(0x1FFF) == 0).all()
    # A halfway case rounds to the even neighbour: 1 + 2^-11 -> 1, 1 + 3 2^-11 -> 1 + 2^-9.
    np.testing.assert_array_equal(P.round_tf32(np.float32([1 + 2**-11, 1 + 3 * 2**-11])), [1, 1 + 2**-9])


def test_a_nan_whose_payload_is_dropped_stays_nan():
    x = _bits([0x7F800001, 0xFF800001, 0x7F801000, 0x7FC00000])  # payloads in the dropped bits only
    assert np.isnan(P.round_bf16(x)).all() and np.isnan(P.round_tf32(x)).all()
    assert np.isnan(P.from_bf16_bits(P.bf16_bits(x))).all()


# -- the public API -------------------------------------------------------------------------------------
def test_precision_names_and_their_dtype_are_checked():
    with pytest.raises(ValueError, match=r"precision must be one of 'highest', 'tf32', 'bf16'; got 'fp16'"):
        MLP([3, 1], precision="fp16", backend="cpu")
    with pytest.raises(ValueError, match=r"precision must be one of .*; got None"):
        MLP([3, 1], precision=None, backend="cpu")
    for p in ("tf32", "bf16"):
        with pytest.raises(ValueError, match=rf"precision='{p}' needs dtype='float32' .* got dtype='float64'"):
            MLP([3, 1], dtype="float64", precision=p, backend="cpu")
    net = MLP([3, 1], precision="bf16", backend="cpu")
    assert net.precision == "bf16" and "precision='bf16'" in repr(net)
    assert MLP([3, 1], dtype="float64", backend="cpu").precision == "highest"


# -- the gradient against float64 arithmetic on the contract's rounded operands ----------------------------
def _sigmoid(a):
    return 0.5 * (1 + np.tanh(a / 2))


def _contract(weights, X, t, fmt, scale):
    """(loss, [(dW, db)]) of the rounding contract in float64 (docs/math.md): every GEMM operand
    rounded, r(v) = the format's rounding of float32(v); sums, sigma and sigma' in float64."""

    def r(v):
        return P.round_to(np.asarray(v, dtype=np.float32), fmt).astype(np.float64)

    Z = [np.asarray(X, np.float64)]
    rW = [r(W) for W, _ in weights]
    for l, (_, b) in enumerate(weights):
        a = r(Z[-1]) @ rW[l].T + b
        Z.append(_sigmoid(a) if l < len(weights) - 1 else a)
    a = Z.pop()
    loss = scale * float(np.sum(np.logaddexp(0, a) - t * a))
    D = scale * (_sigmoid(a) - t)
    grads = []
    for l in range(len(weights) - 1, -1, -1):
        grads.append((r(D).T @ r(Z[l]), D.sum(axis=0)))
        if l:
            D = (r(D) @ rW[l]) * Z[l] * (1 - Z[l])
    return loss, grads[::-1]


def _flat(grads):
    return np.concatenate([np.concatenate([dW.ravel(), db.ravel()]) for dW, db in grads])


def _problem(rng, sizes, n):
    X = rng.standard_normal((n, sizes[0])).astype(np.float32)
    t = (rng.random((n, sizes[-1])) < 0.5).astype(np.float32)
    return X, t


ARCHS = [[7, 2], [7, 5, 1], [13, 9, 3, 2], [5, 16, 16, 1]]


@pytest.mark.parametrize("sizes", ARCHS)
@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_gradient_is_the_contract_up_to_the_order_of_the_sums(sizes, precision, rng):
    X, t = _problem(rng, sizes, 37)
    net = MLP(sizes, precision=precision, backend="cpu", seed=3)
    loss, grads = net.loss_and_grad(X, t)
    want_loss, want = _contract(net.get_weights(), X, t, P.FORMATS[precision], 1 / len(X))
    assert loss == pytest.approx(want_loss, rel=2e-6)
    g, w = _flat(grads), _flat(want)
    assert np.linalg.norm(g - w) <= 1e-6 * np.linalg.norm(w)
    # ... and not the gradient of "highest": rounding the operands moves it by about the format's
    # precision (bf16 2^-8, tf32 2^-11), far beyond float32's sums.
    _, exact = _contract(net.get_weights(), X, t, P.NONE, 1 / len(X))
    moved = np.linalg.norm(_flat(exact) - w) / np.linalg.norm(w)
    assert {"bf16": 3e-4, "tf32": 3e-5}[precision] < moved < {"bf16": 3e-2, "tf32": 3e-3}[precision]
    assert net.loss(X, t) == loss
    np.testing.assert_allclose(net.predict_proba(X), _sigmoid(_last_logits(net, X, precision)), rtol=1e-5)


def _last_logits(net, X, precision):
    r = lambda v: P.round_to(np.asarray(v, np.float32), P.FORMATS[precision]).astype(np.float64)  # noqa: E731
    z = X
    for l, (W, b) in enumerate(net.get_weights()):
        a = r(z) @ r(W).T + b
        z = _sigmoid(a) if l < len(net.layer_sizes) - 2 else a
    return z


def test_highest_float32_is_the_plain_float32_gradient(rng):
    # precision="highest" binds exactly the calls it always did: no rounded copies anywhere.
    net = MLP([7, 5, 1], backend="cpu", seed=3)
    assert net._engine.copy_dtype is None and net._engine.weight_copy is None
    X, t = _problem(rng, [7, 5, 1], 20)
    _, grads = net.loss_and_grad(X, t)
    _, want = _contract(net.get_weights(), X, t, P.NONE, 1 / 20)
    assert np.linalg.norm(_flat(grads) - _flat(want)) <= 2e-6 * np.linalg.norm(_flat(want))


# -- the rounded copies ------------------------------------------------------------------------------------
def _copies_are_rounded(net):
    """Every rounded copy the engine keeps of the weights is r(W) of the float32 master weights."""
    e = net._engine
    for (W, _), rW in zip(e.layers, e.weight_copies):
        np.testing.assert_array_equal(rW, P.round_to(W, e.fmt))


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam", "adamw", "lamb"])
def test_the_optimizer_writes_the_rounded_weights_with_the_update(name, rng):
    X, t = _problem(rng, [13, 9, 3, 2], 40)
    make = {"sgd": lambda n: optim.SGD(n, 0.1, weight_decay=0.01),
            "momentum": lambda n: optim.SGD(n, 0.1, momentum=0.9),
            "adam": lambda n: optim.Adam(n, 0.01, weight_decay=0.01),
            "adamw": lambda n: optim.AdamW(n, 0.01, weight_decay=0.05),
            "lamb": lambda n: optim.LAMB(n, 0.01, weight_decay=0.01)}[name]
    nets = {p: MLP([13, 9, 3, 2], precision=p, backend="cpu", seed=5) for p in ("highest", "bf16")}
    opts = {p: make(n) for p, n in nets.items()}
    for _ in range(3):
        nets["bf16"].train_step(X, t, opts["bf16"])
        _copies_are_rounded(nets["bf16"])
    # The update itself is the float32 update of the same gradients: feed bf16's to highest's.
    g = nets["bf16"]._engine.grads.copy()
    before = nets["bf16"]._engine.params.copy()
    nets["highest"]._engine.params[...] = before
    nets["highest"]._engine.grads[...] = g
    opts["highest"].load_state(*opts["bf16"].state_arrays(), opts["bf16"].step_count)
    nets["bf16"]._engine.grads[...] = g
    opts["bf16"].step()
    opts["highest"].step()
    np.testing.assert_array_equal(nets["bf16"]._engine.params, nets["highest"]._engine.params)
    _copies_are_rounded(nets["bf16"])


def test_set_weights_rounds_the_copies_again(rng):
    X, t = _problem(rng, [7, 5, 1], 16)
    net = MLP([7, 5, 1], precision="bf16", backend="cpu", seed=1)
    other = MLP([7, 5, 1], precision="bf16", backend="cpu", seed=2)
    _copies_are_rounded(net)
    net.set_weights(other.get_weights())
    _copies_are_rounded(net)
    assert net.loss_and_grad(X, t)[0] == other.loss_and_grad(X, t)[0]


def test_a_staged_batch_is_the_batch_rounded_by_the_plan(rng):
    # What a batch source does with a rounded batch (gather and round in one pass into batch_copy,
    # then a plan that does not round X) gives the bits of the plan that rounds X itself.
    Xall, tall = _problem(rng, [13, 9, 3, 2], 50)
    idx = rng.permutation(50)[:21]
    net = MLP([13, 9, 3, 2], precision="bf16", backend="cpu", seed=4)
    e = net._engine
    _, want = net.loss_and_grad(Xall[idx], tall[idx])
    e.bind("take_rows_round", Xall, idx, e.batch_copy(21), e.fmt)(None, None)
    run(e.grad_plan(21, 1 / 21, 1, staged=True), None, tall[idx])
    np.testing.assert_array_equal(_flat(want), _flat(net.gradients()))


@pytest.mark.parametrize("precision", ["bf16", "tf32"])
def test_an_epoch_of_arrays_gathers_and_rounds_each_batch_in_one_pass(precision, rng, monkeypatch):
    # The resident batch source gathers the rows of X straight into the rounded batch copy (no
    # float32 batch, no rounding call in the plan) and trains as train_step on the same batches.
    from bp_gpu.train import ArraySource, run_epoch

    sizes = [13, 9, 3, 2]
    X, t = _problem(rng, sizes, 50)
    a, b = (MLP(sizes, precision=precision, backend="cpu", seed=4) for _ in range(2))
    oa, ob = optim.Adam(a, 0.01), optim.Adam(b, 0.01)
    source = ArraySource(b._engine, X, t, 16, "device")
    assert source.staged and source.batches.Xb is None
    calls = []
    bind = b._engine.bind
    monkeypatch.setattr(b._engine, "bind", lambda name, *args: calls.append(name) or bind(name, *args))
    order = rng.permutation(50)
    loss = run_epoch(b, ob, source, np.random.default_rng(0), order=order)
    assert calls.count("take_rows_round") == 2 and "round_rows" not in calls  # two batch sizes: 16, 2
    batches = [order[k : k + 16] for k in range(0, 50, 16)]
    losses = [float(a.train_step(X[i], t[i], oa)) * len(i) for i in batches]
    np.testing.assert_array_equal(a._engine.params, b._engine.params)
    assert loss == pytest.approx(sum(losses) / 50, rel=1e-12)


def test_compiled_step_replays_train_step_bit_for_bit_in_bf16(rng):
    X, t = _problem(rng, [7, 5, 1], 24)
    a = MLP([7, 5, 1], precision="bf16", backend="cpu", seed=6)
    b = MLP([7, 5, 1], precision="bf16", backend="cpu", seed=6)
    oa, ob = optim.Adam(a, 0.01), optim.Adam(b, 0.01)
    step = b.compile_step(ob, 24)
    for _ in range(4):
        la, lb = a.train_step(X, t, oa), step(X, t)
        assert float(la) == float(lb)
    np.testing.assert_array_equal(a._engine.params, b._engine.params)
    _copies_are_rounded(b)


def test_engine_pads_copies_to_the_backends_alignment():
    # A backend that pads copies (CUDA: 16 bytes of bfloat16 = 8 elements): every row of every copy
    # starts aligned, and the engine's views are the unpadded operands.
    from bp_gpu.cpu_backend import CpuSteps

    class Padded(CpuSteps):
        def operand_copies(self, precision):
            return (np.dtype(np.float32), 8)

    e = Engine(np, Padded(), (13, 9, 3, 2), np.float32, "cpu", "bf16")
    e.ensure_capacity(5)
    assert [v.shape for v in e.weight_copies] == [(9, 13), (3, 9), (2, 3)]
    assert [v.strides[0] // 4 for v in e.weight_copies] == [16, 16, 8]
    offsets = [(v.__array_interface__["data"][0] - e.weight_copy.ctypes.data) // 4 for v in e.weight_copies]
    assert all(o % 8 == 0 for o in offsets)
    assert e.batch_copy(5).shape == (5, 16) and [z.shape[1] for z in e._rZ] == [16, 8]
    np.testing.assert_array_equal(e.weight_map[:, 3], offsets)


# -- training quality ---------------------------------------------------------------------------------------
def _standardised(X_train, X_test):
    mu, sd = X_train.mean(0), X_train.std(0) + 1e-8
    return ((X_train - mu) / sd).astype(np.float32), ((X_test - mu) / sd).astype(np.float32)


def _accuracy(net, X, y):
    p = net.predict_proba(X)
    pred = (p[:, 0] > 0.5).astype(int) if p.shape[1] == 1 else p.argmax(1)
    return float((pred == y).mean())


@pytest.mark.parametrize("dataset", ["breast_cancer", "digits"])
def test_bf16_trains_as_well_as_highest(dataset):
    datasets = pytest.importorskip("sklearn.datasets")
    from sklearn.model_selection import train_test_split

    X, y = getattr(datasets, f"load_{dataset}")(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    X_tr, X_te = _standardised(X_tr, X_te)
    n_out = 1 if dataset == "breast_cancer" else 10
    T = (y_tr[:, None] == (np.arange(n_out) if n_out > 1 else 1)).astype(np.float32)
    sizes = [X.shape[1], 32, n_out]
    acc = {}
    for precision in ("highest", "bf16"):
        net = MLP(sizes, precision=precision, backend="cpu", seed=0)
        opt = optim.Adam(net, 0.01)
        rng = np.random.default_rng(0)
        for _ in range(30):
            order = rng.permutation(len(X_tr))
            for s in range(0, len(order), 64):
                i = order[s : s + 64]
                net.train_step(X_tr[i], T[i], opt)
        acc[precision] = _accuracy(net, X_te, y_te)
    assert acc["highest"] > {"breast_cancer": 0.93, "digits": 0.93}[dataset]
    assert abs(acc["bf16"] - acc["highest"]) <= 0.02, acc


def test_a_snapshot_of_the_training_state_keeps_the_rounded_weights(rng):
    # The training loop's snapshots (Ctrl-C, best epoch) and a compiled step's warm-up restore what
    # optimizer.device_buffers() lists: with a copy of the weights, the copy too.
    from bp_gpu.train import Snapshot, TrainState

    X, t = _problem(rng, [7, 5, 1], 16)
    net = MLP([7, 5, 1], precision="bf16", backend="cpu", seed=1)
    opt = optim.Adam(net, 0.05)
    assert net._engine.weight_copy is opt.device_buffers()[-1]
    snap = Snapshot(net._engine, opt)
    state = TrainState(rng=np.random.default_rng(0))
    snap.capture(state)
    before = net._engine.weight_copy.copy()
    net.train_step(X, t, opt)
    assert not np.array_equal(net._engine.weight_copy, before)
    snap.restore(state)
    np.testing.assert_array_equal(net._engine.weight_copy, before)
    _copies_are_rounded(net)


def test_the_all_reduce_hook_sees_the_float32_gradient(rng):
    # Data-parallel training reduces engine.grads between the backward pass and the update
    # (MLP._step's reduce_grads): in bf16 it is still the flat float32 gradient, and what the hook
    # leaves there is what the optimizer applies.
    X, t = _problem(rng, [7, 5, 1], 16)
    a, b = (MLP([7, 5, 1], precision="bf16", backend="cpu", seed=1) for _ in range(2))
    oa, ob = optim.SGD(a, 0.1), optim.SGD(b, 0.05)
    seen = []

    def halve():
        g = a._engine.grads
        seen.append((g.dtype, g.shape, g.copy()))
        g *= 0.5

    a._step(X, t, oa, 1 / 16, reduce_grads=halve)
    b.train_step(X, t, ob)  # the whole gradient at half the rate: the same update
    dtype, shape, g = seen[0]
    assert dtype == np.float32 and shape == (a.n_params,)
    np.testing.assert_array_equal(g, b._engine.grads)
    np.testing.assert_allclose(a._engine.params, b._engine.params, rtol=1e-6)
    _copies_are_rounded(a)


def test_the_emulation_cost_bench_runs(capsys):
    from bp_gpu.bench.precision_cpu import main

    assert main(["--workloads", "quick", "--rounds", "1", "--steps", "1"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert [r[1] for r in rows] == ["highest", "tf32", "bf16"] and float(rows[0][3]) == 1.0
