"""bp_gpu.optim through the public API: each optimizer against PyTorch's and against its written
formula, LAMB against an independent transcription of Algorithm 2, the step API (train_step,
gradients, compile_step) and DLPack inputs."""

import numpy as np
import pytest

import bp_gpu
from bp_gpu import MLP, optim
from bp_gpu import _validate as V

SIZES = [5, 7, 3, 2]  # ragged; P = 7*5 + 3*7 + 2*3 + 7 + 3 + 2 = 74, 62 of them weights
OPTIMIZERS = {
    "sgd": lambda net, lr: optim.SGD(net, lr, weight_decay=0.01),
    "momentum": lambda net, lr: optim.SGD(net, lr, momentum=0.9, weight_decay=0.01),
    "adam": lambda net, lr: optim.Adam(net, lr, weight_decay=0.01),
    "adamw": lambda net, lr: optim.AdamW(net, lr, weight_decay=0.05),
    "lamb": lambda net, lr: optim.LAMB(net, lr, weight_decay=0.01),
}


def _net(dtype="float64", seed=0, sizes=SIZES):
    return MLP(sizes, dtype=dtype, backend="cpu", seed=seed)


def _batch(rng, n=33, sizes=SIZES):
    X = rng.standard_normal((n, sizes[0]))
    t = (rng.random((n, sizes[-1])) < 0.5).astype(float)
    return X, t


def _flat(net):
    return np.concatenate([a.ravel() for Wb in net.get_weights() for a in Wb])


# -- against PyTorch, fed the same gradients -----------------------------------------------------
@pytest.mark.parametrize("name", ["sgd", "momentum", "adam", "adamw"])
def test_matches_pytorch_optimizer(name, rng):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install -e '.[bench]')")
    net = _net()
    wd = {"sgd": 0.01, "momentum": 0.01, "adam": 0.01, "adamw": 0.05}[name]
    opt = OPTIMIZERS[name](net, 0.01)
    Ws = [torch.tensor(W, requires_grad=True) for W, _ in net.get_weights()]
    bs = [torch.tensor(b, requires_grad=True) for _, b in net.get_weights()]
    groups = [{"params": Ws, "weight_decay": wd}, {"params": bs, "weight_decay": 0.0}]  # no decay on biases
    ref = {
        "sgd": lambda: torch.optim.SGD(groups, lr=0.01),
        "momentum": lambda: torch.optim.SGD(groups, lr=0.01, momentum=0.9),
        "adam": lambda: torch.optim.Adam(groups, lr=0.01),
        "adamw": lambda: torch.optim.AdamW(groups, lr=0.01),
    }[name]()
    e = net._engine
    for _ in range(60):
        g = rng.standard_normal(e.n_params)
        e.grads[:] = g
        opt.step()
        for (dW, db), W, b in zip(e.grad_layers, Ws, bs):
            W.grad, b.grad = torch.tensor(dW), torch.tensor(db)
        ref.step()
    for (W, b), Wt, bt in zip(net.get_weights(), Ws, bs):
        np.testing.assert_allclose(W, Wt.detach().numpy(), rtol=1e-11, atol=1e-13)
        np.testing.assert_allclose(b, bt.detach().numpy(), rtol=1e-11, atol=1e-13)
    assert opt.step_count == 60


def test_training_matches_pytorch_end_to_end(rng):
    """Adam on the same start and batches: our forward/backward/step against autograd's."""
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install -e '.[bench]')")
    net = _net()
    opt = optim.Adam(net, 0.02)
    params = [torch.tensor(a, requires_grad=True) for Wb in net.get_weights() for a in Wb]
    ref = torch.optim.Adam(params, lr=0.02)
    for _ in range(40):
        X, t = _batch(rng)
        loss = float(net.train_step(X, t, opt))
        z = torch.tensor(X)
        for k in range(0, len(params), 2):
            a = z @ params[k].T + params[k + 1]
            z = torch.sigmoid(a) if k < len(params) - 2 else a
        ref_loss = torch.nn.functional.binary_cross_entropy_with_logits(z, torch.tensor(t), reduction="sum") / len(X)
        ref.zero_grad()
        ref_loss.backward()
        ref.step()
        assert loss == pytest.approx(float(ref_loss.detach()), rel=1e-11)
    np.testing.assert_allclose(_flat(net), np.concatenate([p.detach().numpy().ravel() for p in params]),
                               rtol=1e-9, atol=1e-12)


# -- against the written formulas ------------------------------------------------------------------
def _written(name, p, g, m, v, t, nw, lr=0.01):
    """The update rules as their docstrings write them, on the flat buffer (float64)."""
    wd = {"sgd": 0.01, "momentum": 0.01, "adam": 0.01, "adamw": 0.05}[name]
    decay = np.zeros_like(p)
    decay[:nw] = wd
    if name == "sgd":
        return p - lr * (g + decay * p), m, v
    if name == "momentum":
        m = 0.9 * m + (g + decay * p)
        return p - lr * m, m, v
    if name == "adamw":
        p = p * (1 - lr * decay)
    else:
        g = g + decay * p
    m = 0.9 * m + 0.1 * g
    v = 0.999 * v + 0.001 * g * g
    return p - lr / (1 - 0.9**t) * m / (np.sqrt(v) / np.sqrt(1 - 0.999**t) + 1e-8), m, v


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam", "adamw"])
def test_matches_written_formula(name, rng):
    net = _net()
    opt = OPTIMIZERS[name](net, 0.01)
    e = net._engine
    p, m, v = e.params.copy(), np.zeros(e.n_params), np.zeros(e.n_params)
    for t in range(1, 8):
        g = rng.standard_normal(e.n_params)
        e.grads[:] = g
        opt.step()
        p, m, v = _written(name, p, g, m, v, t, e.n_weights)
        np.testing.assert_allclose(e.params, p, rtol=1e-13, atol=1e-15)


def _lamb_algorithm2(layers, grads, state, t, lr, wd, b1=0.9, b2=0.999, eps=1e-6):
    """You et al. 2019, Algorithm 2, per parameter tensor (W_1..W_L, then b_1..b_L), written
    without the flat buffer: an independent transcription."""
    out = []
    for k, (x, g) in enumerate(zip(layers, grads)):
        m, v = state.setdefault(k, (np.zeros_like(x), np.zeros_like(x)))
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        state[k] = (m, v)
        r = (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        lam = wd if x.ndim == 2 else 0.0  # weights decay, biases do not
        u = r + lam * x
        wn, un = np.linalg.norm(x), np.linalg.norm(u)
        ratio = wn / un if wn > 0 and un > 0 else 1.0
        out.append(x - lr * ratio * u)
    return out


def test_lamb_matches_algorithm_2(rng):
    net = _net()
    sched = optim.warmup_linear(0.02, warmup_steps=3, total_steps=10)
    opt = optim.LAMB(net, sched, weight_decay=0.1)
    e = net._engine
    L = len(SIZES) - 1
    tensors = [W for W, _ in net.get_weights()] + [b for _, b in net.get_weights()]
    state = {}
    for t in range(1, 13):
        g = rng.standard_normal(e.n_params)
        e.grads[:] = g
        opt.step()
        grads = [dW for dW, _ in e.grad_layers] + [db for _, db in e.grad_layers]
        tensors = _lamb_algorithm2(tensors, [np.array(x) for x in grads], state, t, sched(t), 0.1)
        assert opt.last_learning_rate == pytest.approx(sched(t), rel=1e-15)
    for (W, b), Wr, br in zip(net.get_weights(), tensors[:L], tensors[L:]):
        np.testing.assert_allclose(W, Wr, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(b, br, rtol=1e-12, atol=1e-14)


# -- the optimizer objects ---------------------------------------------------------------------------
def test_schedule_drives_the_rate_of_every_step(rng):
    net = _net()
    sched = optim.warmup_cosine(0.1, warmup_steps=2, total_steps=6, final=0.01)
    opt = optim.SGD(net, sched)
    assert opt.step_count == 0 and opt.last_learning_rate == 0.0
    e = net._engine
    for t in range(1, 9):
        p0 = e.params.copy()
        e.grads[:] = 1.0
        opt.step()
        np.testing.assert_allclose(p0 - e.params, sched(t), rtol=1e-13)
        assert opt.step_count == t and opt.last_learning_rate == pytest.approx(sched(t), rel=1e-15)


def test_hyperparameters_change_between_steps(rng):
    net = _net()
    opt = optim.SGD(net, 0.1, momentum=0.5)
    e = net._engine
    e.grads[:] = 1.0
    opt.step()
    opt.learning_rate, opt.momentum, opt.weight_decay = 0.2, 0.0 + 0.25, 0.0
    p0 = e.params.copy()
    m0 = e.xp.asarray(opt.state[0]).copy()
    opt.step()
    np.testing.assert_allclose(p0 - e.params, 0.2 * (0.25 * m0 + 1.0), rtol=1e-13)
    with pytest.raises(ValueError, match="momentum cannot change between 0 and non-zero"):
        opt.momentum = 0.0
    with pytest.raises(ValueError, match="learning_rate must be a number > 0 or a schedule"):
        opt.learning_rate = -1
    with pytest.raises(ValueError, match=r"betas\[1\] must be in \[0, 1\)"):
        optim.Adam(net, 0.1, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="weight_decay must be in"):
        optim.AdamW(net, 0.1, weight_decay=-1)
    with pytest.raises(TypeError, match="needs a bp_gpu.MLP"):
        optim.SGD(object(), 0.1)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_state_round_trip_continues_exactly(name, rng):
    a, b = _net(), _net()
    oa, ob = OPTIMIZERS[name](a, 0.01), OPTIMIZERS[name](b, 0.01)
    batches = [_batch(rng) for _ in range(6)]
    for X, t in batches[:3]:
        a.train_step(X, t, oa)
    b.set_weights(a.get_weights())
    m, v = oa.state_arrays()
    ob.load_state(m, v, oa.step_count)
    for X, t in batches[3:]:
        a.train_step(X, t, oa)
        b.train_step(X, t, ob)
    np.testing.assert_array_equal(_flat(a), _flat(b))
    with pytest.raises(ValueError, match="optimizer state m has shape"):
        ob.load_state(np.zeros(3), v, 1)


# -- the step API -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_train_step_is_loss_and_grad_then_step(name, rng):
    a, b = _net(), _net()
    oa, ob = OPTIMIZERS[name](a, 0.01), OPTIMIZERS[name](b, 0.01)
    for _ in range(5):
        X, t = _batch(rng)
        loss = a.train_step(X, t, oa)
        ref_loss, _ = b.loss_and_grad(X, t)
        ob.step()
        assert isinstance(loss, np.ndarray) and loss.shape == () and float(loss) == ref_loss
        np.testing.assert_array_equal(_flat(a), _flat(b))


def test_train_step_returns_a_fresh_loss_and_gradients_are_views(rng):
    net = _net()
    opt = optim.Adam(net, 0.01)
    X, t = _batch(rng)
    first = net.train_step(X, t, opt)
    kept = float(first)
    grads = net.gradients()
    assert all(dW.base is not None for dW, _ in grads)  # views into the flat gradient buffer
    _, ref = _net().loss_and_grad(X, t)  # the same start, so the same gradients
    for (dW, _), (rW, _) in zip(grads, ref):
        np.testing.assert_array_equal(dW, rW)
    net.train_step(*_batch(rng), opt)
    assert float(first) == kept  # a copy, not the engine's buffer
    assert not np.array_equal(grads[0][0], ref[0][0])  # overwritten by the next step, as documented


def test_train_step_rejects_bad_input_and_changes_nothing(rng):
    net = _net()
    opt = optim.Adam(net, 0.01)
    X, t = _batch(rng)
    net.train_step(X, t, opt)
    before, step = _flat(net), opt.step_count
    bad = X.copy()
    bad[4, 2] = np.nan
    with pytest.raises(ValueError, match=r"X\[4, 2\] is NaN"):
        net.train_step(bad, t, opt)
    t_bad = t.copy()
    t_bad[3, 1] = 2
    with pytest.raises(ValueError, match=r"t\[3, 1\] = 2.0; labels must be 0 or 1"):
        net.train_step(X, t_bad, opt)
    with pytest.raises(ValueError, match="X has 4 features"):
        net.train_step(X[:, :4], t, opt)
    with pytest.raises(ValueError, match="reduction must be"):
        net.train_step(X, t, opt, reduction="avg")
    with pytest.raises(ValueError, match="was not created for this network"):
        net.train_step(X, t, optim.Adam(_net(), 0.01))
    np.testing.assert_array_equal(_flat(net), before)
    assert opt.step_count == step


def test_train_step_sum_reduction_and_float32(rng):
    net = _net("float32")
    opt = optim.SGD(net, 0.001)
    X, t = _batch(rng)
    loss = net.train_step(X, t, opt, reduction="sum")
    assert loss.dtype == np.float64
    assert float(loss) == pytest.approx(_net("float32").loss(X, t, "sum"), rel=1e-6)
    assert net.get_weights()[0][0].dtype == np.float32


def test_dlpack_inputs_are_used_without_a_copy(rng):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install -e '.[bench]')")
    X, t = _batch(rng)
    Xt = torch.tensor(X)
    Xc = V.check_features(Xt, SIZES[0], np.dtype(np.float64), np, values=None)
    assert np.shares_memory(Xc, Xt.numpy())  # the tensor's own memory, through DLPack
    a, b = _net(), _net()
    oa, ob = optim.Adam(a, 0.01), optim.Adam(b, 0.01)
    for _ in range(3):
        X, t = _batch(rng)
        la = a.train_step(torch.tensor(X), torch.tensor(t, dtype=torch.int64), oa)  # labels converted once
        lb = b.train_step(X, t, ob)
        assert float(la) == float(lb)
    np.testing.assert_array_equal(_flat(a), _flat(b))
    np.testing.assert_array_equal(a.predict_proba(torch.tensor(X)), a.predict_proba(X))
    f32 = torch.tensor(X, dtype=torch.float32)
    assert not np.shares_memory(V.check_features(f32, SIZES[0], np.dtype(np.float64), np, values=None), f32.numpy())


# -- compiled steps -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_compiled_step_replays_train_step_bit_for_bit(name, rng):
    sched = optim.warmup_cosine(0.05, warmup_steps=3, total_steps=12, final=0.001)
    a, b = _net(), _net()
    oa, ob = OPTIMIZERS[name](a, sched), OPTIMIZERS[name](b, sched)
    step = b.compile_step(ob, 17)
    for _ in range(15):
        X, t = _batch(rng, 17)
        la = a.train_step(X, t, oa)
        lb = step(X, t)
        assert float(la) == float(lb)
    np.testing.assert_array_equal(_flat(a), _flat(b))
    assert ob.step_count == 15 and oa.last_learning_rate == ob.last_learning_rate


def test_compiled_step_checks_its_batch(rng):
    net = _net()
    step = net.compile_step(optim.SGD(net, 0.1), 8)
    X, t = _batch(rng, 9)
    with pytest.raises(ValueError, match="takes batches of exactly 8 rows; X has 9"):
        step(X, t)
    bad = X[:8].copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match=r"X\[0, 0\] is inf"):
        step(bad, t[:8])
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        net.compile_step(optim.SGD(net, 0.1), 0)
    with pytest.raises(ValueError, match="was not created for this network"):
        net.compile_step(optim.SGD(_net(), 0.1), 8)


def test_public_names():
    assert bp_gpu.optim is optim
    for name in ("SGD", "Adam", "AdamW", "LAMB", "constant", "warmup_cosine", "warmup_linear"):
        assert hasattr(optim, name)
