"""bp_gpu.MLP on the CPU backend: against the reference, its numerics, and its input checks."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bp_gpu
from bp_gpu import reference as R

SHAPES = [([1, 1], 1), ([3, 1], 7), ([5, 4, 1], 33), ([7, 33, 5], 257), ([4, 6, 5, 3, 2], 64)]


def problem(sizes, n, seed=0, dtype="float64", positive_class=1):
    rng = np.random.default_rng(seed)
    net = bp_gpu.MLP(sizes, dtype=dtype, backend="cpu", seed=seed, positive_class=positive_class)
    X = rng.normal(size=(n, sizes[0]))
    t = (rng.random((n, sizes[-1])) < 0.5).astype(np.float64)
    return net, X, t


@pytest.mark.parametrize("sizes,n", SHAPES)
@pytest.mark.parametrize("positive_class", [0, 1])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cpu_backend_matches_reference(sizes, n, positive_class, reduction):
    net, X, t = problem(sizes, n, positive_class=positive_class)
    loss, grads = net.loss_and_grad(X, t, reduction)
    ref_loss, ref_grads = R.loss_and_grad(net.get_weights(), X, t, positive_class, reduction)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    assert net.loss(X, t, reduction) == pytest.approx(ref_loss, rel=1e-12)
    for (dW, db), (rW, rb) in zip(grads, ref_grads):
        np.testing.assert_allclose(dW, rW, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(db, rb, rtol=1e-10, atol=1e-14)
    _, Z = R.forward(net.get_weights(), X)
    np.testing.assert_allclose(net.predict_proba(X), Z[-1], rtol=1e-12)


def test_loss_does_not_touch_gradients_and_repeats_exactly():
    net, X, t = problem([5, 4, 2], 9)
    _, g1 = net.loss_and_grad(X, t)
    net.loss(X[:3], t[:3])
    net.predict_proba(X[:2])
    _, g2 = net.loss_and_grad(X, t)
    for a, b in zip(g1, g2):
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_positive_class_conventions_mirror_each_other():
    """The same seed gives mirror images: positive_class=0's output layer is the negation of
    positive_class=1's, so on the same labels the loss is the same, the output layer's gradient is
    negated and every hidden layer's is the same (docs/math.md)."""
    net0, X, t = problem([3, 4, 2], 11, positive_class=0)
    net1 = bp_gpu.MLP([3, 4, 2], dtype="float64", backend="cpu", seed=0, positive_class=1)
    np.testing.assert_array_equal(net0.get_weights()[-1][0], -net1.get_weights()[-1][0])
    np.testing.assert_array_equal(net0.get_weights()[0][0], net1.get_weights()[0][0])
    np.testing.assert_allclose(net0.predict_proba(X), 1 - net1.predict_proba(X), rtol=1e-12)
    l0, g0 = net0.loss_and_grad(X, t)
    l1, g1 = net1.loss_and_grad(X, t)
    assert l0 == pytest.approx(l1, rel=1e-12)
    np.testing.assert_allclose(g0[0][0], g1[0][0], rtol=1e-12)
    np.testing.assert_allclose(g0[-1][0], -g1[-1][0], rtol=1e-12)
    np.testing.assert_allclose(g0[-1][1], -g1[-1][1], rtol=1e-12)


def test_targets_accept_1d_for_one_output_and_bool_labels():
    net, X, t = problem([3, 2, 1], 6)
    assert net.loss(X, t[:, 0]) == net.loss(X, t)
    assert net.loss(X, t.astype(bool)) == net.loss(X, t)


def test_seed_gives_identical_weights_and_float32_agrees_with_float64():
    a = bp_gpu.MLP([6, 8, 3], seed=3, dtype="float32", backend="cpu")
    b = bp_gpu.MLP([6, 8, 3], seed=3, dtype="float64", backend="cpu")
    assert all(np.array_equal(wa, wb.astype(np.float32)) for (wa, _), (wb, _) in zip(a.get_weights(), b.get_weights()))
    assert a.get_weights()[0][0].dtype == np.float32
    rng = np.random.default_rng(1)
    X = rng.normal(size=(50, 6))
    t = (rng.random((50, 3)) < 0.5).astype(float)
    b.set_weights(a.get_weights())  # the same float32 numbers, computed in float64
    la, ga = a.loss_and_grad(X, t)
    lb, gb = b.loss_and_grad(X, t)
    assert la == pytest.approx(lb, rel=1e-5)
    for (dWa, dba), (dWb, dbb) in zip(ga, gb):
        assert dWa.dtype == np.float32
        np.testing.assert_allclose(dWa, dWb, rtol=1e-3, atol=1e-5)
        np.testing.assert_allclose(dba, dbb, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_huge_logits_give_finite_loss_and_gradients(dtype):
    net = bp_gpu.MLP([2, 3, 1], dtype=dtype, backend="cpu", seed=0)
    (W1, b1), (W2, b2) = net.get_weights()
    net.set_weights([(W1 * 1e5, b1), (np.full_like(W2, 1e5), np.full_like(b2, -2e4))])
    X = np.array([[1.0, -1.0], [30.0, 30.0], [-30.0, -30.0]])
    for t in (np.zeros((3, 1)), np.ones((3, 1))):
        loss, grads = net.loss_and_grad(X, t)
        assert np.isfinite(loss) and loss >= 0
        assert all(np.all(np.isfinite(g)) for pair in grads for g in pair)
        p = net.predict_proba(X)
        assert np.all((p >= 0) & (p <= 1))


def test_get_weights_returns_copies_and_set_weights_round_trips():
    net = bp_gpu.MLP([3, 4, 2], seed=0, backend="cpu")
    w = net.get_weights()
    w[0][0][...] = 0
    assert not np.all(net.get_weights()[0][0] == 0)
    new = [(np.ones((4, 3)), np.arange(4.0)), (np.full((2, 4), 2.0), np.zeros(2))]
    net.set_weights(new)
    for (W, b), (nW, nb) in zip(net.get_weights(), new):
        assert np.array_equal(W, nW.astype(np.float32)) and np.array_equal(b, nb.astype(np.float32))


# -- bad input: clear errors, nothing changed -----------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(layer_sizes=[3]), "at least 2"),
        (dict(layer_sizes=[3, 0, 1]), r"layer_sizes\[1\] must be >= 1"),
        (dict(layer_sizes=[3, 2.5]), r"layer_sizes\[1\] must be an int"),
        (dict(layer_sizes="3,1"), "sequence of ints"),
        (dict(layer_sizes=[3, 1], positive_class=2), "positive_class must be 0 or 1"),
        (dict(layer_sizes=[3, 1], dtype="float16"), "dtype must be"),
        (dict(layer_sizes=[3, 1], backend="tpu"), "backend must be one of"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        bp_gpu.MLP(**kwargs)


def test_cuda_backend_says_why_it_cannot_run():
    if "cuda" in bp_gpu.available_backends():
        pytest.skip("CUDA is usable here")
    with pytest.raises(bp_gpu.BackendUnavailableError, match="backend='cuda' is not usable: .*backend='cpu'"):
        bp_gpu.MLP([2, 1], backend="cuda")
    assert bp_gpu.MLP([2, 1], backend="auto").backend == "cpu"
    assert bp_gpu.available_backends() == ["cpu"]


@pytest.mark.parametrize(
    "X,t,match",
    [
        (np.array([[1.0, np.nan, 0], [0, 0, 0]]), [0, 1], r"X\[0, 1\] is NaN"),
        (np.array([[1.0, 2, 0], [0, 0, -np.inf]]), [0, 1], r"X\[1, 2\] is -inf"),
        (np.zeros((2, 4)), [0, 1], "X has 4 features .* expects 3"),
        (np.zeros((0, 3)), [], "X is empty"),
        (np.zeros(3), [0], r"must be 2-D .* X.reshape\(-1, 1\)"),
        (np.zeros((2, 3, 1)), [0, 1], "must be 2-D"),
        (np.array([["a", "b", "c"], ["d", "e", "f"]]), [0, 1], "X must be numeric"),
        (np.zeros((2, 3)), [0, 2], r"t\[1\] = 2; labels must be 0 or 1"),
        (np.zeros((2, 3)), [0, np.nan], r"t\[1\] is NaN"),
        (np.zeros((2, 3)), [0, 1, 1], "t has 3 rows but X has 2"),
        (np.zeros((2, 3)), np.zeros((2, 2)), r"t must have shape \(n,\) or \(n, 1\)"),
    ],
)
def test_bad_inputs_are_rejected_with_where(X, t, match):
    net = bp_gpu.MLP([3, 2, 1], seed=0, backend="cpu")
    before = net.get_weights()
    with pytest.raises((ValueError, TypeError), match=match):
        net.loss_and_grad(X, t)
    for (a, b), (c, d) in zip(before, net.get_weights()):
        assert np.array_equal(a, c) and np.array_equal(b, d)


def test_bad_reduction_and_bad_weights_change_nothing():
    net = bp_gpu.MLP([3, 2, 1], seed=0, backend="cpu")
    before = net.get_weights()
    with pytest.raises(ValueError, match="reduction must be"):
        net.loss(np.zeros((1, 3)), [1], reduction="avg")
    good = [(np.ones((2, 3)), np.ones(2)), (np.ones((1, 2)), np.ones(1))]
    for bad, match in [
        (good[:1], "list of 2"),
        ([good[0], (np.ones((2, 2)), np.ones(1))], r"weights\[1\]\[0\] \(W\) must have shape \(1, 2\)"),
        ([good[0], (np.ones((1, 2)), np.array([np.nan]))], r"weights\[1\]\[1\]\[0\] is NaN"),
    ]:
        with pytest.raises(ValueError, match=match):
            net.set_weights(bad)
        for (a, b), (c, d) in zip(before, net.get_weights()):
            assert np.array_equal(a, c) and np.array_equal(b, d)


# -- properties -------------------------------------------------------------------------------------

sizes_st = st.lists(st.integers(1, 9), min_size=2, max_size=5)


@settings(max_examples=40, deadline=None)
@given(sizes=sizes_st, n=st.integers(1, 40), dtype=st.sampled_from(["float32", "float64"]), pc=st.integers(0, 1))
def test_shapes_and_ranges_for_any_architecture(sizes, n, dtype, pc):
    net = bp_gpu.MLP(sizes, dtype=dtype, backend="cpu", seed=n, positive_class=pc)
    rng = np.random.default_rng(n)
    X = rng.normal(size=(n, sizes[0]))
    t = rng.integers(0, 2, size=(n, sizes[-1]))
    p = net.predict_proba(X)
    assert p.shape == (n, sizes[-1]) and p.dtype == np.dtype(dtype)
    assert np.all((p >= 0) & (p <= 1))
    loss, grads = net.loss_and_grad(X, t, "sum")
    assert loss >= 0 and np.isfinite(loss)
    assert [(g[0].shape, g[1].shape) for g in grads] == [((o, i), (o,)) for i, o in zip(sizes[:-1], sizes[1:])]
    assert net.loss(X, t, "mean") == pytest.approx(loss / n, rel=1e-4 if dtype == "float32" else 1e-12)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 20),
    d=st.integers(1, 6),
    data=st.data(),
)
def test_any_nonfinite_entry_is_named(n, d, data):
    r = data.draw(st.integers(0, n - 1))
    c = data.draw(st.integers(0, d - 1))
    bad = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    X = np.zeros((n, d))
    X[r, c] = bad
    X[r:, :] = np.where(np.arange(X[r:].size).reshape(X[r:].shape) > c, np.nan, X[r:])  # later cells bad too
    X[:r] = 0.0
    X[r, :c] = 0.0
    net = bp_gpu.MLP([d, 1], backend="cpu", seed=0)
    with pytest.raises(ValueError, match=rf"X\[{r}, {c}\] is "):
        net.predict_proba(X)


@settings(max_examples=30, deadline=None)
@given(label=st.one_of(st.integers(-5, 5).filter(lambda v: v not in (0, 1)), st.floats(0.01, 0.99)))
def test_any_label_outside_0_1_is_rejected(label):
    net = bp_gpu.MLP([2, 1], backend="cpu", seed=0)
    with pytest.raises(ValueError, match=r"t\[2\] = .*labels must be 0 or 1"):
        net.loss(np.zeros((4, 2)), [0, 1, label, 0])


def test_to_numpy_and_repr():
    x = np.arange(3.0)
    assert bp_gpu.to_numpy(x) is x
    expected = "MLP([2, 3, 1], positive_class=1, dtype='float32', backend='cpu')"
    assert repr(bp_gpu.MLP([2, 3, 1], backend="cpu")) == expected


@pytest.mark.parametrize("sizes,n,pc,reduction", [([3, 4, 2], 5, 0, "mean"), ([2, 3, 3, 1], 8, 1, "sum")])
def test_public_gradient_matches_central_differences_of_public_loss(sizes, n, pc, reduction):
    net, X, t = problem(sizes, n, positive_class=pc)
    _, grads = net.loss_and_grad(X, t, reduction)
    weights = net.get_weights()
    h = 1e-6
    for l, (W, b) in enumerate(weights):
        for k, P in enumerate((W, b)):
            for idx in np.ndindex(P.shape):
                old = P[idx]
                P[idx] = old + h
                net.set_weights(weights)
                up = net.loss(X, t, reduction)
                P[idx] = old - h
                net.set_weights(weights)
                down = net.loss(X, t, reduction)
                P[idx] = old
                assert grads[l][k][idx] == pytest.approx((up - down) / (2 * h), rel=1e-6, abs=1e-9)


def test_predict_runs_in_chunks_without_growing_the_buffers(monkeypatch):
    import bp_gpu.engine

    monkeypatch.setattr(bp_gpu.engine, "PREDICT_CHUNK", 7)
    net, X, t = problem([5, 6, 3], 45)
    net.loss(X[:4], t[:4])  # capacity 4 < the chunk of 7: chunks of 7, the last one ragged (3)
    _, Z = R.forward(net.get_weights(), X)
    np.testing.assert_allclose(net.predict_proba(X), Z[-1], rtol=1e-12)
    assert net._engine.capacity == 7


def test_host_features_too_large_for_float32_are_named_not_turned_into_inf():
    net = bp_gpu.MLP([2, 1], dtype="float32", backend="cpu", seed=0)
    X = np.ones((4, 2))
    X[2, 1] = -4e38
    with pytest.raises(ValueError, match=r"X\[2, 1\] = -4e\+38 does not fit in float32; use dtype='float64'"):
        net.predict_proba(X)
    with pytest.raises(ValueError, match="does not fit in float32"):
        net.train_step(X, np.ones(4), bp_gpu.optim.SGD(net, 0.1))
    assert np.isfinite(bp_gpu.MLP([2, 1], dtype="float64", backend="cpu", seed=0).predict_proba(X)).all()
