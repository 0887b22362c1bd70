"""optimizer_update kernel (SGD, momentum, Adam over the flat buffer) vs its NumPy reference."""

import numpy as np
import pytest
from bp_gpu.kernels.optimizer_update import optimizer_update

from bp_gpu import steps_numpy as ref

TOL = {np.float32: dict(rtol=1e-6, atol=1e-7), np.float64: dict(rtol=1e-13, atol=1e-15)}
HYPER = dict(lr=0.05, momentum=0.9, weight_decay=0.01, beta1=0.9, beta2=0.999, eps=1e-8)


def _step(step, kind, p, g, m, v, n_weights, n_step):
    p, m, v, g_in = p.copy(), m.copy(), v.copy(), g.copy()
    bc1, bc2 = 1 - HYPER["beta1"] ** n_step, 1 - HYPER["beta2"] ** n_step
    step(kind, p, g_in, m, v, n_weights, *HYPER.values(), bc1, bc2)
    np.testing.assert_array_equal(g_in, g)  # the gradient buffer is not modified
    return p, m, v


@pytest.mark.sim
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", [ref.SGD, ref.MOMENTUM, ref.ADAM])
@pytest.mark.parametrize("n_params, n_weights", [(1, 0), (1, 1), (47, 40), (300, 257)])
def test_matches_reference(kind, dtype, n_params, n_weights, rng):
    p = rng.standard_normal(n_params).astype(dtype)
    g = rng.standard_normal(n_params).astype(dtype)
    m = rng.standard_normal(n_params).astype(dtype) * 0.1
    v = rng.random(n_params).astype(dtype) * 0.1
    want = _step(ref.optimizer_update, kind, p, g, m, v, n_weights, 3)
    got = _step(optimizer_update, kind, p, g, m, v, n_weights, 3)
    for x, y in zip(got, want):
        np.testing.assert_allclose(x, y, **TOL[dtype])


@pytest.mark.sim
def test_sgd_needs_no_state_and_momentum_no_second_moment(rng):
    p = rng.standard_normal(9)
    g = rng.standard_normal(9)
    want = p.copy()
    ref.optimizer_update(ref.SGD, want, g, None, None, 6, 0.1, 0.0, 0.5, 0.9, 0.999, 1e-8, 1.0, 1.0)
    optimizer_update(ref.SGD, p, g, None, None, 6, 0.1, 0.0, 0.5, 0.9, 0.999, 1e-8, 1.0, 1.0)
    np.testing.assert_allclose(p, want, rtol=1e-15)
    m = np.zeros(9)
    optimizer_update(ref.MOMENTUM, p, g, m, None, 6, 0.1, 0.9, 0.0, 0.9, 0.999, 1e-8, 1.0, 1.0)
    np.testing.assert_allclose(m, g, rtol=1e-15)


@pytest.mark.sim
def test_rejects_bad_arguments():
    p = np.zeros(4)
    with pytest.raises(ValueError, match="unknown optimizer code 7"):
        optimizer_update(7, p, p.copy(), None, None, 0, 0.1, 0, 0, 0.9, 0.999, 1e-8, 1, 1)
    with pytest.raises(ValueError, match="m .* is required"):
        optimizer_update(ref.ADAM, p, p.copy(), None, np.zeros(4), 0, 0.1, 0, 0, 0.9, 0.999, 1e-8, 1, 1)
    with pytest.raises(ValueError, match=r"n_weights must be in \[0, 4\]"):
        optimizer_update(ref.SGD, p, p.copy(), None, None, 5, 0.1, 0, 0, 0.9, 0.999, 1e-8, 1, 1)
