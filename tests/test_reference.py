"""The NumPy reference against float64 central differences, and the notes' formulas written literally."""

import math

import numpy as np
import pytest

from bp_gpu import reference as R


def random_problem(rng, sizes, n, positive_class=1):
    layers = [(rng.normal(0, 0.8, (o, i)), rng.normal(0, 0.3, o)) for i, o in zip(sizes[:-1], sizes[1:])]
    X = rng.normal(0, 1.0, (n, sizes[0]))
    t = (rng.random((n, sizes[-1])) < 0.5).astype(np.float64)
    return layers, X, t


def numeric_grad(layers, X, t, positive_class, reduction, h=1e-6):
    """Central differences of the reference loss, one parameter at a time."""

    def f():
        return R.loss_and_grad(layers, X, t, positive_class, reduction)[0]

    grads = []
    for W, b in layers:
        gs = []
        for P in (W, b):
            g = np.zeros_like(P)
            for idx in np.ndindex(P.shape):
                old = P[idx]
                P[idx] = old + h
                up = f()
                P[idx] = old - h
                down = f()
                P[idx] = old
                g[idx] = (up - down) / (2 * h)
            gs.append(g)
        grads.append(tuple(gs))
    return grads


@pytest.mark.parametrize("case", range(12))
def test_gradient_matches_central_differences(case):
    rng = np.random.default_rng(case)
    depth = 1 + case % 4
    sizes = [int(rng.integers(1, 7)) for _ in range(depth + 1)]
    n = int(rng.choice([1, 2, 7, 33, 100]))
    positive_class = case % 2
    reduction = ("mean", "sum")[(case // 2) % 2]
    layers, X, t = random_problem(rng, sizes, n)
    _, grads = R.loss_and_grad(layers, X, t, positive_class, reduction)
    num = numeric_grad(layers, X, t, positive_class, reduction)
    for (dW, db), (nW, nb) in zip(grads, num):
        np.testing.assert_allclose(dW, nW, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(db, nb, rtol=1e-6, atol=1e-8)


def sig(a):
    return 1.0 / (1.0 + math.exp(-a))


def test_notes_formulas_literally_on_a_hand_sized_network():
    """[2, 3, 2, 1], one sample, positive_class=0 (the notes), reduction="sum", every index by hand."""
    rng = np.random.default_rng(7)
    sizes = [2, 3, 2, 1]
    layers, X, t = random_problem(rng, sizes, 1)
    x, tk = X[0], float(t[0, 0])

    # Step 1: forward, a_i = sum_j w_ij z_j + w_i0 and z_i = sigma(a_i).
    z = {0: list(x)}
    a = {}
    for l in (1, 2, 3):
        W, b = layers[l - 1]
        a[l] = [sum(W[i, j] * z[l - 1][j] for j in range(sizes[l - 1])) + b[i] for i in range(sizes[l])]
        z[l] = [sig(v) for v in a[l]]
    # Step 2: delta_out = sigma(a_out) - (1 - t).
    delta = {3: [sig(a[3][0]) - (1 - tk)]}
    # Step 3: delta_i^(l-1) = sum_j delta_j^(l) w_ji^(l) sigma'(a_i^(l-1)), sigma' = sigma (1 - sigma).
    for l in (3, 2):
        W = layers[l - 1][0]
        delta[l - 1] = [
            sum(delta[l][j] * W[j, i] for j in range(sizes[l])) * sig(a[l - 1][i]) * (1 - sig(a[l - 1][i]))
            for i in range(sizes[l - 1])
        ]
    # The loss L = -(1 - t) log y - t log(1 - y) with y = sigma(a_out) = p(t=0|x).
    y = sig(a[3][0])
    expected_loss = -(1 - tk) * math.log(y) - tk * math.log(1 - y)

    loss, grads = R.loss_and_grad(layers, X, t, positive_class=0, reduction="sum")
    assert loss == pytest.approx(expected_loss, rel=1e-12)
    for l in (1, 2, 3):
        dW, db = grads[l - 1]
        for i in range(sizes[l]):
            # Step 4: dL/dw_ij = delta_i z_j and dL/dw_i0 = delta_i.
            assert db[i] == pytest.approx(delta[l][i], rel=1e-12, abs=1e-15)
            for j in range(sizes[l - 1]):
                assert dW[i, j] == pytest.approx(delta[l][i] * z[l - 1][j], rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("positive_class", [0, 1])
def test_output_delta_convention(positive_class):
    a = np.array([[-3.0], [0.0], [2.5]])
    t = np.array([[1.0], [0.0], [1.0]])
    s = R.target_of_y(t, positive_class)
    expected = R.sigmoid(a) - ((1 - t) if positive_class == 0 else t)
    np.testing.assert_allclose(R.output_delta(a, s), expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_loss_is_finite_for_huge_logits(dtype):
    a = np.array([[1e4], [-1e4], [3e38 if dtype == np.float32 else 1e300]], dtype=dtype)
    for s in (np.zeros_like(a), np.ones_like(a)):
        loss = R.per_sample_loss(a, s)
        assert np.all(np.isfinite(loss))
        assert np.all(np.isfinite(R.output_delta(a, s)))
    # softplus(a) - s a: the confidently wrong answer costs |a|, the right one ~0.
    np.testing.assert_allclose(R.per_sample_loss(a[:2], np.zeros_like(a[:2])).ravel(), [1e4, 0.0], atol=1e-3)
